// The int8 and float16 row kernels compiled for AVX2 + FMA + F16C (gemv_avx2.cc, built with -mavx2 -mfma -mf16c on
// x86-64 with GCC).
// Why a file of its own: widening int8 to float32 is one instruction (vpmovsxbd) with AVX2, but GCC 12 can only
// reach it through an intrinsic, and an AVX2 intrinsic cannot be inlined into the target_clones kernels of
// gemv.cc, which also compile for baseline x86-64. There, GCC's generic vector conversion took ten instructions
// per eight weights, and int8 decode ran slower than float32. Likewise float16 -> float32 is one vcvtph2ps with F16C,
// against about ten integer and float instructions (float16.h) in the clones.
#pragma once

#include <cstdint>

#include "half.h"

namespace kvcache::kernels {

// Rows [o0, o1) of out (N, OC) (+)= inp (N, K) @ (weight * scales)^T + bias; only call when
// isa_available(Isa::kAvx2) (isa.h).
void dot_rows_i8_avx2(float* out, const float* inp, const int8_t* weight, const float* scales, const float* bias, int N,
                      int K, int OC, int o0, int o1, bool accumulate);
// The same for float16 weights (scales null).
void dot_rows_f16_avx2(float* out, const float* inp, const Half* weight, const float* scales, const float* bias, int N,
                       int K, int OC, int o0, int o1, bool accumulate);

}  // namespace kvcache::kernels
