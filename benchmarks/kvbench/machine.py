"""The machine a benchmark ran on: what it is, and how fast its memory and arithmetic are, measured in the same run.

Decoding one token reads every weight once, so on a CPU its speed is bounded by memory bandwidth; a prefill (or a
run without a cache) multiplies matrices, so it is bounded by FLOP/s. These two probes give the limits that the
benchmark's achieved numbers are compared with. They are small on purpose: the same numbers serve other
benchmarks (import them from here).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import time
from importlib import metadata
from typing import Callable, Iterator, Optional

import numpy as np

from kvcache import get_num_threads, set_num_threads
from kvcache.arguments import check_int

_PACKAGES = ("kvcache", "numpy", "torch", "transformers", "matplotlib")


def kernel_probes():
    """The C++ probes (probe_read_bandwidth, probe_fma_peak): the kvcache_kernels test module, which a plain
    `pip install .` leaves out (they are not the engine); `pip install . -Ccmake.define.KVCACHE_KERNEL_TESTS=ON`
    builds it (.ci/setup.sh does)."""
    try:
        import kvcache_kernels
    except ModuleNotFoundError as e:
        if e.name != "kvcache_kernels":
            raise
        raise ModuleNotFoundError(
            "the machine probes live in the kvcache_kernels test module, which this install lacks: reinstall with "
            "`pip install . -Ccmake.define.KVCACHE_KERNEL_TESTS=ON` (what .ci/setup.sh runs)",
            name="kvcache_kernels") from None
    return kvcache_kernels


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` calls: on a shared machine the minimum is the run least disturbed by others."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _threads(threads: Optional[int]) -> int:
    return get_num_threads() if threads is None else threads


@contextlib.contextmanager
def _engine_threads(threads: Optional[int]) -> Iterator[None]:
    """The engine runs on `threads` threads inside the block, on its own count again after (None: unchanged)."""
    if threads is None:
        yield
        return
    before = get_num_threads()
    set_num_threads(threads)
    try:
        yield
    finally:
        set_num_threads(before)


def read_bandwidth_probe(nbytes: int = 1 << 30) -> Callable[..., float]:
    """A probe of RAM read bandwidth: a float32 buffer of `nbytes`, allocated and paged in once, and a function
    probe(repeats=1) that reads all of it on the engine's threads (kvcache_kernels' probe_read_bandwidth: each
    thread sums its share, reading every byte once with too little arithmetic to be the limit) and returns the
    bytes/s of the fastest of `repeats` passes. Keep nbytes far larger than any cache, so this is DRAM bandwidth:
    the ceiling for a decode step. Build it once and call it many times to probe in between other measurements."""
    kernels = kernel_probes()
    data = np.ones(check_int("nbytes", nbytes, 1 << 20, None) // 4, dtype=np.float32)  # at least 1 MiB

    def probe(repeats: int = 1) -> float:
        return kernels.probe_read_bandwidth(data, check_int("repeats", repeats, 1))

    return probe


def measure_read_bandwidth(nbytes: int = 1 << 30, threads: Optional[int] = None, repeats: int = 5) -> float:
    """Bytes/s that `threads` threads (default: the engine's) read from RAM: the best of `repeats` passes of
    read_bandwidth_probe over a buffer of `nbytes`."""
    check_int("repeats", repeats, 1)
    probe = read_bandwidth_probe(nbytes)
    with _engine_threads(threads):
        return probe(repeats)


def measure_matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a float32 (n x n) @ (n x n) matmul in NumPy's BLAS: the ceiling for a prefill or an uncached
    step, which are matrix products too. (BLAS uses its own thread count, by default every core.)"""
    check_int("n", n, 1, None), check_int("repeats", repeats, 1)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: BLAS starts its threads
    return 2.0 * n ** 3 / best_seconds(lambda: a @ b, repeats)


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
