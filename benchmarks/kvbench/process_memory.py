"""This process's memory, as the benchmarks measure it: resident bytes now (RSS), the growth of the peak over a
block, and the allocator reset that makes both repeatable. Linux only; elsewhere the numbers are None."""

from __future__ import annotations

import ctypes
import functools
import re
from typing import Optional


@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> None:
    """Make RSS growth measure what an allocation really needs. glibc keeps freed memory, resident, for reuse,
    and raises its mmap threshold after large frees, so a new buffer may land on pages already counted and the
    RSS would not grow at all. Pinning the threshold (M_MMAP_THRESHOLD, at its default 128 KiB) and giving the
    free pages back (malloc_trim) before each measurement makes it repeatable."""
    libc = _glibc()
    if libc is not None:  # elsewhere RSS numbers are as the allocator gives them
        libc.mallopt(-3, 128 * 1024)
        libc.malloc_trim(0)


def _proc_status_bytes(key: str) -> Optional[int]:
    """A `key: N kB` line of /proc/self/status in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def rss_bytes() -> Optional[int]:
    """Resident memory of this process (Linux), None where /proc is missing."""
    return _proc_status_bytes("VmRSS")


class PeakRSS:
    """Growth of the peak RSS over a block: Linux lets a process reset its high-water mark (clear_refs "5").

        with PeakRSS() as memory:
            ...
        memory.delta  # bytes, or None where it cannot be measured
    """

    def __enter__(self) -> "PeakRSS":
        release_free_memory()
        self.start = rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.start = None
        self.delta: Optional[int] = None
        return self

    def __exit__(self, *exc) -> None:
        peak = _proc_status_bytes("VmHWM")
        if self.start is not None and peak is not None:
            self.delta = max(0, peak - self.start)
