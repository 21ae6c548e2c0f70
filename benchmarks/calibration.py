"""The machine's speed at the time of a benchmark: a 2048^2 fp32 matmul in torch, in GFLOP/s
(median of 7), printed beside every figure so that figures from different days compare."""

from __future__ import annotations

import statistics
import time


def matmul_gflops(n: int = 2048, repeat: int = 7) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


if __name__ == "__main__":
    print(f"calibration: 2048^2 fp32 matmul {matmul_gflops():.0f} GFLOP/s")
