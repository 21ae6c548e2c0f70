"""The benchmarks' machine condition (benchmarks/calibration.py): what every figure is printed with."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from calibration import Condition, Machine, cpu_text, interleaved, linear_gflops  # noqa: E402


def test_cpu_text_names_the_cpu_and_its_vector_width():
    text = cpu_text()
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    assert text and text != "unknown CPU"
    if widest:
        assert text.endswith(", " + widest)


def test_linear_rate_is_a_plausible_rate():
    rate = linear_gflops(64, 32, 48, repeat=3)
    assert 0.01 < rate < 10_000


def test_a_run_whose_rates_moved_is_flagged():
    machine = Machine(Condition(200.0, 30.0, 0.0))
    machine.after = Condition(205.0, 29.0, 0.0)
    assert machine.flags == []
    machine.after = Condition(150.0, 30.0, 0.0)  # matmul 25 % slower after
    assert machine.flags == ["VARIED"]
    busy = Machine(Condition(200.0, 30.0, 0.5))
    assert "BUSY" in busy.flags
    summary = machine.summary()
    assert summary["varied"] and summary["cpu"] == cpu_text()
    assert "VARIED" in machine.line() and cpu_text() in machine.line()


def test_interleaved_runs_each_function_in_turn():
    order = []
    medians = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeat=3)
    assert order == ["a", "b"] * 4  # a warm-up round, then three
    assert set(medians) == {"a", "b"} and all(t >= 0 for t in medians.values())
