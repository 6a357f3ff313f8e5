#include "gelu.h"

#include <algorithm>
#include <cmath>

#include "multiversion.h"
#include "vec.h"

namespace kvcache::kernels {

namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

__attribute__((always_inline)) inline v8f gelu8(v8f x) {
  const v8f u = kSqrt2OverPi * (x + kCubic * x * x * x);
  return x / (1.0f + exp8(-2.0f * u));
}

KVCACHE_MULTIVERSION
void gelu_span(float* x, long n) {
  long i = 0;
  for (; i + 8 <= n; i += 8) store8(x + i, gelu8(load8(x + i)));
  if (i < n) store_partial(x + i, gelu8(load_partial(x + i, static_cast<int>(n - i))), static_cast<int>(n - i));
}

}  // namespace

void gelu(float* x, long n) {
  // Blocks dealt evenly to the threads from two decode rows of GPT-2 124M up (2 x 3072 values); one row's values
  // stay on one core, where waking the others would cost about what they save. Blocks of 16384 left a batch-8
  // step's 24576 values split 2:1 and a batch-6 step's 18432 nearly all on one core.
  const long block = 1024, parallel_from = 6144;
#pragma omp parallel for schedule(static) if (n >= parallel_from)
  for (long begin = 0; begin < n; begin += block) gelu_span(x + begin, std::min(block, n - begin));
}

void gelu_naive(float* x, long n) {
  for (long i = 0; i < n; ++i) {
    const double v = x[i];
    x[i] = static_cast<float>(0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))));
  }
}

}  // namespace kvcache::kernels
