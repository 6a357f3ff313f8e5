"""The machine a benchmark ran on: what it is, and how fast its memory and arithmetic are, measured in the same run.

Decoding one token reads every weight once, so on a CPU its speed is bounded by memory bandwidth; a prefill (or a
run without a cache) multiplies matrices, so it is bounded by FLOP/s. These two probes give the limits that the
benchmark's achieved numbers are compared with. They are small on purpose: the same numbers serve other
benchmarks (import them from here).
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Callable, Optional

import numpy as np

_PACKAGES = ("kvcache", "numpy", "torch", "transformers", "matplotlib")


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` calls: on a shared machine the minimum is the run least disturbed by others."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _threads(threads: Optional[int]) -> int:
    if threads is not None:
        return threads
    from . import get_num_threads
    return get_num_threads()


def measure_read_bandwidth(nbytes: int = 1 << 30, threads: Optional[int] = None, repeats: int = 5) -> float:
    """Bytes/s that `threads` threads (default: the engine's) read from RAM: each dots its share of a float32
    array with itself, which reads every byte once and does too little arithmetic to be the limit. The array is
    far larger than any cache, so this is DRAM bandwidth: the ceiling for a decode step."""
    threads = _threads(threads)
    data = np.ones(nbytes // 4, dtype=np.float32)
    chunks = np.array_split(data, threads)
    with ThreadPoolExecutor(threads) as pool:
        seconds = _best_seconds(lambda: list(pool.map(lambda c: np.dot(c, c), chunks)), repeats)
    return data.nbytes / seconds


def measure_matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a float32 (n x n) @ (n x n) matmul in NumPy's BLAS: the ceiling for a prefill or an uncached
    step, which are matrix products too. (BLAS uses its own thread count, by default every core.)"""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: BLAS starts its threads
    return 2.0 * n ** 3 / _best_seconds(lambda: a @ b, repeats)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(threads: Optional[int] = None) -> dict:
    """CPU, cores, memory, threads the engine uses and package versions: what a reader needs to judge numbers
    taken on a machine that is not theirs. JSON-ready."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "threads": _threads(threads),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in _PACKAGES},
        # Runnable processes, 1/5/15-minute averages: above the thread count, others compete for the cores.
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
