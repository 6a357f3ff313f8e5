// Built with -mavx2 -mfma -mf16c where CMake adds those flags (x86-64, GCC); elsewhere nothing calls it.
// See attention_passes.h.
#include "attention_avx2.h"

#if defined(KVCACHE_AVX2_KERNELS) && !(defined(__AVX2__) && defined(__F16C__))
#error "attention_avx2.cc must be compiled with -mavx2 -mfma -mf16c"
#endif

#include "attention_passes.h"

namespace kvcache::kernels {

void attend_avx2(float* out, const float* q, const float* keys, const float* values, int len, int HS, float scale,
                 float* scores) {
  attend_passes(out, q, keys, values, len, HS, scale, scores);
}
void attend_avx2(float* out, const float* q, const Half* keys, const Half* values, int len, int HS, float scale,
                 float* scores) {
  attend_passes(out, q, keys, values, len, HS, scale, scores);
}
void attend_avx2(float* out, const float* q, const uint16_t* keys, const uint16_t* values, int len, int HS,
                 float scale, float* scores) {
  attend_passes(out, q, keys, values, len, HS, scale, scores);
}

void attend_partial_avx2(float* out, float* max, float* sum, const float* q, const float* keys, const float* values,
                         int len, int HS, float scale, float* scores) {
  attend_partial_passes(out, max, sum, q, keys, values, len, HS, scale, scores);
}
void attend_partial_avx2(float* out, float* max, float* sum, const float* q, const Half* keys, const Half* values,
                         int len, int HS, float scale, float* scores) {
  attend_partial_passes(out, max, sum, q, keys, values, len, HS, scale, scores);
}
void attend_partial_avx2(float* out, float* max, float* sum, const float* q, const uint16_t* keys,
                         const uint16_t* values, int len, int HS, float scale, float* scores) {
  attend_partial_passes(out, max, sum, q, keys, values, len, HS, scale, scores);
}

}  // namespace kvcache::kernels
