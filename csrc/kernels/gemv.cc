#include "gemv.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "gemv_avx2.h"
#include "gemv_rows.h"
#include "multiversion.h"
#include "stream_split.h"

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
KVCACHE_DOT_ROWS(dot_rows_f16, Half)
KVCACHE_DOT_ROWS(dot_rows_i8, int8_t)
#undef KVCACHE_DOT_ROWS

}  // namespace

void gemv_rows(float* out, const float* inp, const Matrix& weight, const float* bias, int N, int K, int OC,
               bool accumulate, Isa max_isa) {
  const bool use_avx2 = usable_isa(max_isa) >= Isa::kAvx2;
  // The threads share whole tiles of kOutputTile outputs (stream_split.h), so that which outputs form a block of
  // three (dot_rows) never depends on the thread count or on which thread ran which tile.
  const long tile_bytes = static_cast<long>(kOutputTile) * K * element_bytes(weight.type);
  const int tiles = (OC + kOutputTile - 1) / kOutputTile;
  parallel_stream(tiles, static_cast<int>(kStreamChunkBytes / tile_bytes), [&](int t0, int t1) {
    const int o0 = t0 * kOutputTile, o1 = std::min(OC, t1 * kOutputTile);
    const float* s = weight.scales;
    switch (weight.type) {
      case WeightType::F32:
        dot_rows_f32(out, inp, static_cast<const float*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
      case WeightType::BF16:
        dot_rows_bf16(out, inp, static_cast<const uint16_t*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
      case WeightType::F16:
        if (use_avx2) {  // one vcvtph2ps per 8 weights (F16C); the clones widen them with integer arithmetic
          dot_rows_f16_avx2(out, inp, static_cast<const Half*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
          break;
        }
        dot_rows_f16(out, inp, static_cast<const Half*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
      case WeightType::I8:
        if (use_avx2) {  // the multiversioned clone converts int8 four times slower (gemv_avx2.h)
          dot_rows_i8_avx2(out, inp, static_cast<const int8_t*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
          break;
        }
        dot_rows_i8(out, inp, static_cast<const int8_t*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
    }
  });
}

}  // namespace kvcache::kernels
