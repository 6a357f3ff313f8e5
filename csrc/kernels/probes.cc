#include "probes.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "multiversion.h"

namespace kvcache::kernels {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// 8-float vectors (GCC vector extension; the baseline clones split each into SSE halves).
typedef float Vec8 __attribute__((vector_size(32)));

// Four independent vector sums: with one (an `omp simd` reduction), the adds' latency capped a core at 32 bytes
// per 3-4 cycles, and a decode step's weight stream read up to 17% faster than the probe on a good minute.
KVCACHE_MULTIVERSION
float sum_range(const float* data, std::size_t begin, std::size_t end) {
  Vec8 s0 = {}, s1 = {}, s2 = {}, s3 = {};
  std::size_t i = begin;
  for (; i + 32 <= end; i += 32) {
    Vec8 v0, v1, v2, v3;
    std::memcpy(&v0, data + i, sizeof v0);
    std::memcpy(&v1, data + i + 8, sizeof v1);
    std::memcpy(&v2, data + i + 16, sizeof v2);
    std::memcpy(&v3, data + i + 24, sizeof v3);
    s0 += v0;
    s1 += v1;
    s2 += v2;
    s3 += v3;
  }
  const Vec8 total = (s0 + s1) + (s2 + s3);
  float sum = 0.0f;
  for (int j = 0; j < 8; ++j) sum += total[j];
  for (; i < end; ++i) sum += data[i];
  return sum;
}

// 12 independent chains of 8-float vectors held in registers: enough in flight to cover the FMA latency on two
// ports.

KVCACHE_MULTIVERSION
float fma_chains(long iterations) {
  // distinct starting values, or the compiler merges identical chains into one
  const Vec8 one = {1, 1, 1, 1, 1, 1, 1, 1};
  Vec8 a0 = one * 0.1f, a1 = one * 0.2f, a2 = one * 0.3f, a3 = one * 0.4f, a4 = one * 0.5f, a5 = one * 0.6f;
  Vec8 a6 = one * 0.7f, a7 = one * 0.8f, a8 = one * 0.9f, a9 = one * 1.1f, a10 = one * 1.2f, a11 = one * 1.3f;
  const Vec8 m = {0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f};
  const Vec8 c = {1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f, 1e-7f};
  for (long it = 0; it < iterations; ++it) {
    a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c; a4 = a4 * m + c; a5 = a5 * m + c;
    a6 = a6 * m + c; a7 = a7 * m + c; a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
  }
  const Vec8 total = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
  float sum = 0.0f;
  for (int i = 0; i < 8; ++i) sum += total[i];
  return sum;
}

}  // namespace

double probe_read_bandwidth(const float* data, std::size_t floats, int repeats) {
  double best = 0.0;
  volatile float sink = 0.0f;
  for (int r = 0; r < repeats; ++r) {
    const double start = now();
    float total = 0.0f;
#pragma omp parallel reduction(+ : total)
    {
      const std::size_t threads = omp_get_num_threads(), t = omp_get_thread_num();
      total += sum_range(data, floats * t / threads, floats * (t + 1) / threads);
    }
    const double seconds = now() - start;
    sink = sink + total;
    best = std::max(best, floats * sizeof(float) / seconds);
  }
  return best;
}

double probe_fma_peak(double seconds) {
  constexpr long kIterations = 1 << 20;  // 12 vectors x 8 lanes x 2 FLOP per iteration
  double best = 0.0;
  volatile float sink = 0.0f;
  const double deadline = now() + seconds;
  while (now() < deadline) {
    const double start = now();
    float total = 0.0f;
#pragma omp parallel reduction(+ : total)
    total += fma_chains(kIterations);
    const double elapsed = now() - start;
    sink = sink + total;
    best = std::max(best, static_cast<double>(kIterations) * 12 * 8 * 2 * omp_get_max_threads() / elapsed);
  }
  return best;
}

}  // namespace kvcache::kernels
