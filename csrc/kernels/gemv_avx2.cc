// Built with -mavx2 -mfma -mf16c where CMake adds this file (x86-64, GCC); elsewhere nothing calls it. See gemv_avx2.h.
#include "gemv_avx2.h"

#if defined(KVCACHE_AVX2_KERNELS) && !defined(__AVX2__)
#error "gemv_avx2.cc must be compiled with -mavx2 -mfma"
#endif
#if defined(KVCACHE_AVX2_KERNELS) && !defined(__F16C__)
#error "gemv_avx2.cc must be compiled with -mf16c"
#endif

#include "gemv_rows.h"

namespace kvcache::kernels {

void dot_rows_i8_avx2(float* out, const float* inp, const int8_t* weight, const float* scales, const float* bias, int N,
                      int K, int OC, int o0, int o1, bool accumulate) {
  dot_rows(out, inp, weight, scales, bias, N, K, OC, o0, o1, accumulate);
}

void dot_rows_f16_avx2(float* out, const float* inp, const Half* weight, const float* scales, const float* bias, int N,
                       int K, int OC, int o0, int o1, bool accumulate) {
  dot_rows(out, inp, weight, scales, bias, N, K, OC, o0, o1, accumulate);
}

}  // namespace kvcache::kernels
