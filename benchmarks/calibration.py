"""The machine's condition at the time of a benchmark, printed beside every figure so that figures
from different days compare and a busy run shows itself.

A condition is a 2048^2 fp32 matmul in torch (GFLOP/s, median of 7), a 256 MB memory copy (GB/s,
median of 5) and the share of the CPUs that other work used over one idle second just before.
Benchmarks take one before and one after their timings; a run whose matmul or copy rate moved by
more than 10 % between the two is flagged VARIED, and one that started while other work used more
than a tenth of the CPUs BUSY.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass

DRIFT = 0.10  # relative change of a rate between before and after that flags a run
BUSY = 0.10  # share of the CPUs used by others that flags a run


def others_cpu_share(seconds: float = 1.0) -> float:
    """Share of all CPUs busy while this process sleeps (Linux /proc/stat; 0 elsewhere)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    spent = total1 - total0
    return 0.0 if spent <= 0 else 1.0 - (idle1 - idle0) / spent


def median_seconds(work, repeat: int) -> float:
    """Median time of `work()` over `repeat` runs, after one warm-up run."""
    work()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict, repeat: int) -> dict[str, float]:
    """Median seconds of each function, runs taken in turn so drift hits all alike."""
    times = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def cpu_text() -> str:
    """The CPU's model name and its widest vector instructions (Linux /proc/cpuinfo): hosts of
    one name can differ, and their matmul rates with them."""
    name, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return f"{name}, {widest}" if widest else name


def matmul_gflops(n: int = 2048, repeat: int = 7) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeat) / 1e9


def linear_gflops(rows: int, k: int, n: int, repeat: int = 7) -> float:
    """Rate of one fp32 linear layer, (rows, k) inputs to n outputs (F.linear, bias included):
    a model's own product shape, which may run well below the square matmul's rate."""
    import torch
    import torch.nn.functional as F

    x, w, b = torch.randn(rows, k), torch.randn(n, k), torch.randn(n)
    return 2 * rows * k * n / median_seconds(lambda: F.linear(x, w, b), repeat) / 1e9


def copy_gbps(megabytes: int = 256, repeat: int = 5) -> float:
    """Memory bandwidth of a tensor copy (bytes read plus bytes written per second)."""
    import torch

    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)  # its pages are touched by the warm-up run
    return 2 * src.numel() * 4 / median_seconds(lambda: dst.copy_(src), repeat) / 1e9


@dataclass
class Condition:
    matmul_gflops: float
    copy_gbps: float
    others: float  # share of the CPUs other work used just before

    @staticmethod
    def measure() -> Condition:
        others = others_cpu_share()
        return Condition(matmul_gflops(), copy_gbps(), others)

    def text(self) -> str:
        return (f"matmul {self.matmul_gflops:.0f} GFLOP/s, copy {self.copy_gbps:.1f} GB/s, "
                f"others using {100 * self.others:.0f} % of the CPUs")


class Machine:
    """The condition before and after a run: `Machine.start()`, time, then `.stop()`."""

    def __init__(self, before: Condition) -> None:
        self.before = before
        self.after: Condition | None = None

    @staticmethod
    def start() -> Machine:
        machine = Machine(Condition.measure())
        print(f"machine: {cpu_text()}, {os.cpu_count()} CPUs", flush=True)
        print(f"machine before: {machine.before.text()}{'  BUSY' if machine.busy else ''}", flush=True)
        return machine

    @property
    def busy(self) -> bool:
        return self.before.others > BUSY

    @property
    def varied(self) -> bool:
        if self.after is None:
            return False
        pairs = ((self.before.matmul_gflops, self.after.matmul_gflops), (self.before.copy_gbps, self.after.copy_gbps))
        return any(abs(b - a) > DRIFT * max(a, b) for a, b in pairs)

    @property
    def flags(self) -> list[str]:
        return [name for name, on in (("VARIED", self.varied), ("BUSY", self.busy)) if on]

    def stop(self) -> dict:
        self.after = Condition.measure()
        print(f"machine after:  {self.after.text()}  {' '.join(self.flags) or 'steady'}", flush=True)
        return self.summary()

    def summary(self) -> dict:
        return {
            "cpu": cpu_text(),
            "before": asdict(self.before),
            "after": asdict(self.after) if self.after else None,
            "varied": self.varied,
            "busy": self.busy,
        }

    def line(self) -> str:
        """One line for a table's caption."""
        text = f"machine: {cpu_text()}; {self.before.text()} before"
        if self.after:
            text += f"; {self.after.text()} after"
        from promptseg.cpu import SPIN_ENV

        spin = os.environ.get(SPIN_ENV, "libgomp's default")
        return text + f" [{' '.join(self.flags) or 'steady'}]; OpenMP spin count {spin}"


def spread(values: list[float]) -> str:
    """median (min-max) of a list of timings, as text."""
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


if __name__ == "__main__":
    print(f"machine: {cpu_text()}; {Condition.measure().text()}")
