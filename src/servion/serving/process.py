"""What this process costs: resident memory and CPU time, read the cheap way."""

from __future__ import annotations

import os
import resource
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """Resident set size now (Linux ``/proc``; elsewhere the peak, which is what is known)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far."""
    times = os.times()
    return times.user + times.system


def trim_heap() -> None:
    """Give the allocator's free memory back to the system (glibc's ``malloc_trim``): after
    an unload, so that it is freed for real; before a load, so that the resident memory the
    load adds is its own and not pages freed earlier and used again. Elsewhere: nothing."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None
