"""kvcache's fast kernels and their naive reference twins, so tests can compare them on the same inputs, and the
machine probes of the benchmarks (read bandwidth, FMA peak).

Not part of the engine: a separate extension (kvcache_kernels._kernels, with its own copy of the C++ core), built and
installed only when the package is built with the CMake option KVCACHE_KERNEL_TESTS:

    pip install . -Ccmake.define.KVCACHE_KERNEL_TESTS=ON     # what .ci/setup.sh runs

Threaded calls run on kvcache's thread count (kvcache.set_num_threads).
"""

from ._kernels import (attend, attend_block, available_isas, gelu, linear, probe_fma_peak, probe_read_bandwidth,
                       stored_kv, stored_values, stream_split)

__all__ = ["attend", "attend_block", "available_isas", "gelu", "linear", "probe_fma_peak", "probe_read_bandwidth",
           "stored_kv", "stored_values", "stream_split"]
