// Built with -mavx2 -mfma where CMake adds this file (x86-64, GCC); elsewhere nothing calls it. See gemv_avx2.h.
#include "gemv_avx2.h"

#if defined(KVCACHE_AVX2_KERNELS) && !defined(__AVX2__)
#error "gemv_avx2.cc must be compiled with -mavx2 -mfma"
#endif

#include "gemv_rows.h"

namespace kvcache::kernels {

bool avx2_fma_available() {
#if defined(KVCACHE_AVX2_KERNELS)
  // F16C too, for attention_avx2.cc: every CPU with AVX2 has it, but it is a separate feature bit
  static const bool available =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return available;
#else
  return false;
#endif
}

void dot_rows_i8_avx2(float* out, const float* inp, const int8_t* weight, const float* scales, const float* bias, int N,
                      int K, int OC, int o0, int o1, bool accumulate) {
  dot_rows(out, inp, weight, scales, bias, N, K, OC, o0, o1, accumulate);
}

}  // namespace kvcache::kernels
