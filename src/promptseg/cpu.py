"""Process-level settings that make CPU inference faster."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
from pathlib import Path

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator() -> bool:
    """Keep freed tensor memory in the heap instead of returning it to the OS at once.

    With glibc's defaults every large tensor is a fresh mmap and its pages fault in on first
    touch, which costs as much as the arithmetic in the mask decoder. Raising the mmap and trim
    thresholds lets the allocator reuse them. Set PROMPTSEG_NO_MALLOC_TUNING=1 to opt out.
    Returns whether the setting was applied.
    """
    global _done
    if _done:
        return True
    if os.environ.get("PROMPTSEG_NO_MALLOC_TUNING") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        return False
    _done = bool(ok)
    return _done


SPIN_ENV = "GOMP_SPINCOUNT"
SPIN_COUNT = 10_000


def tune_openmp() -> bool:
    """Have torch's idle OpenMP threads go to sleep sooner: GOMP_SPINCOUNT 10,000 (libgomp's
    default is 300,000 spins, about a millisecond).

    After each parallel region torch's worker threads spin waiting for the next one. Between the
    mask decoder's regions, and while OpenCV brings masks to full size, a spinning thread holds
    a CPU that other work needs: on two CPUs one click took 31 ms in some processes and 23 ms in
    others, its full-size masks 7.5 or 3.5 ms. With 10,000 spins the six processes measured all ran the
    fast way (22 ms; masks 2.4 ms), the image encoder unchanged.

    libgomp reads the variable once, when torch loads it, so this acts only if torch is not
    imported yet (promptseg calls it on import); a value already set is kept, as is
    OMP_WAIT_POLICY. PROMPTSEG_NO_SPIN_TUNING=1 opts out. Returns whether it was set."""
    if "torch" in sys.modules or os.environ.get("PROMPTSEG_NO_SPIN_TUNING"):
        return False
    if SPIN_ENV in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ[SPIN_ENV] = str(SPIN_COUNT)
    return True


THREADS_ENV = "PROMPTSEG_THREADS"
_chosen: int | None = None


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup quota allows this process (cgroup v2 `cpu.max`, or v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`), the tightest along its cgroup path; None when
    unlimited or unknown."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        v2 = controllers == ""
        if not v2 and "cpu" not in controllers.split(","):
            continue
        base = root if v2 else root / next((d for d in ("cpu,cpuacct", "cpu") if (root / d).is_dir()), "cpu")
        here = base / rel.lstrip("/")
        while True:  # the quota of a parent cgroup binds its children too
            limits.append(_read_quota(here, v2))
            if here == base or base not in here.parents:
                break
            here = here.parent
    limits = [q for q in limits if q is not None]
    return min(limits) if limits else None


def _read_quota(folder: Path, v2: bool) -> float | None:
    try:
        if v2:
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100000)
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError, ZeroDivisionError):
        return None


def usable_cpus() -> int:
    """CPUs this process may really use: those its affinity allows, no more than its cgroup's
    CPU quota (rounded down, at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def choose_threads(threads: int | None = None) -> int:
    """The compute thread count: `threads` when given, else $PROMPTSEG_THREADS, else
    `usable_cpus()`. ValueError for a count below 1 or a malformed variable."""
    if threads is None:
        text = os.environ.get(THREADS_ENV, "").strip()
        if text:
            if not text.isdigit():
                raise ValueError(f"{THREADS_ENV}={text!r}: give a whole number of threads (1 or more)")
            threads = int(text)
    if threads is None:
        return usable_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number, 1 or more; got {threads!r}")
    return threads


def set_threads(threads: int | None = None) -> int:
    """Use `choose_threads(threads)` compute threads in torch, OpenCV and ONNX Runtime sessions
    made afterwards, so a shared or quota-limited machine is not oversubscribed (on a 2-core
    machine with another busy process, everything mode ran 7x faster on one thread than on
    two). Returns the count."""
    global _chosen
    n = choose_threads(threads)
    _chosen = n
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:
        pass
    return n


def thread_count() -> int:
    """The count `set_threads` chose; `choose_threads()` when it has not run."""
    return _chosen if _chosen is not None else choose_threads()


def fit_threads() -> None:
    """Lower torch's thread count to `thread_count()` when it is above it (torch counts the
    machine's cores, not the quota or affinity this process has); a lower count, set by the
    caller, is kept."""
    import torch

    n = thread_count()
    if torch.get_num_threads() > n:
        torch.set_num_threads(n)
