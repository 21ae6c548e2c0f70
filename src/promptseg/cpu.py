"""Process-level settings that make CPU inference faster."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

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
