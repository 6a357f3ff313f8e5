// Machine probes for the speed benchmark: what this machine's memory and FMA units can do with our threads, so
// the engine's figures can be reported as fractions of them (measured in the same run, on the same cores).
#pragma once

#include <cstddef>

namespace kvcache::kernels {

// Sums a buffer of `floats` floats `repeats` times with every thread streaming its own share; returns bytes/s of
// the best repeat. The buffer should be far larger than the last-level cache.
double probe_read_bandwidth(const float* data, std::size_t floats, int repeats);

// Runs independent FMA chains on every thread for about `seconds`; returns float32 FLOP/s (an FMA counts 2).
double probe_fma_peak(double seconds);

}  // namespace kvcache::kernels
