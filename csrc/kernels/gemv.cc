#include "gemv.h"

#include <omp.h>

#include <cstddef>
#include <cstdint>

#include "gemv_avx2.h"
#include "gemv_rows.h"
#include "multiversion.h"

namespace kvcache::kernels {

namespace {

// One compiled (and multiversioned) entry per storage type.
#define KVCACHE_DOT_ROWS(NAME, T)                                                                               \
  KVCACHE_MULTIVERSION void NAME(float* out, const float* inp, const T* w, const float* scales, const float* bias, \
                                 int N, int K, int OC, int o0, int o1, bool accumulate) {                        \
    dot_rows(out, inp, w, scales, bias, N, K, OC, o0, o1, accumulate);                                           \
  }
KVCACHE_DOT_ROWS(dot_rows_f32, float)
KVCACHE_DOT_ROWS(dot_rows_bf16, uint16_t)
KVCACHE_DOT_ROWS(dot_rows_i8, int8_t)
#undef KVCACHE_DOT_ROWS

}  // namespace

void gemv_rows(float* out, const float* inp, const Matrix& weight, const float* bias, int N, int K, int OC,
               bool accumulate, bool int8_avx2) {
  const bool use_avx2 = int8_avx2 && avx2_fma_available();
#pragma omp parallel
  {
    // equal contiguous shares of the output rows, so each thread streams one region of the matrix
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int o0 = static_cast<int>(static_cast<long>(OC) * t / threads);
    const int o1 = static_cast<int>(static_cast<long>(OC) * (t + 1) / threads);
    const float* s = weight.scales;
    switch (weight.type) {
      case WeightType::F32:
        dot_rows_f32(out, inp, static_cast<const float*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
      case WeightType::BF16:
        dot_rows_bf16(out, inp, static_cast<const uint16_t*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
      case WeightType::I8:
        if (use_avx2) {  // the multiversioned clone converts int8 four times slower (gemv_avx2.h)
          dot_rows_i8_avx2(out, inp, static_cast<const int8_t*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
          break;
        }
        dot_rows_i8(out, inp, static_cast<const int8_t*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
    }
  }
}

}  // namespace kvcache::kernels
