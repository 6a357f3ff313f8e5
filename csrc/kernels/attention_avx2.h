// A decode step's attention passes compiled for AVX2 + FMA + F16C (attention_avx2.cc, built with -mavx2 -mfma
// -mf16c on x86-64 with GCC): attention_passes.h says why.
#pragma once

#include <cstdint>

#include "half.h"

namespace kvcache::kernels {

// attend() for HS a multiple of 8; only call when isa_available(Isa::kAvx2) (isa.h).
void attend_avx2(float* out, const float* q, const float* keys, const float* values, int len, int HS, float scale,
                 float* scores);
void attend_avx2(float* out, const float* q, const Half* keys, const Half* values, int len, int HS, float scale,
                 float* scores);
void attend_avx2(float* out, const float* q, const uint16_t* keys, const uint16_t* values, int len, int HS,
                 float scale, float* scores);

// attend_partial() for HS a multiple of 8, likewise.
void attend_partial_avx2(float* out, float* max, float* sum, const float* q, const float* keys, const float* values,
                         int len, int HS, float scale, float* scores);
void attend_partial_avx2(float* out, float* max, float* sum, const float* q, const Half* keys, const Half* values,
                         int len, int HS, float scale, float* scores);
void attend_partial_avx2(float* out, float* max, float* sum, const float* q, const uint16_t* keys,
                         const uint16_t* values, int len, int HS, float scale, float* scores);

}  // namespace kvcache::kernels
