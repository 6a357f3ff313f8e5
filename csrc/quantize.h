// Reduced-precision copies of the weight matrices, made once at load from the float32 parameters.
//   bfloat16: round to nearest even (the float32 exponent range, 8 bits of mantissa).
//   float16: IEEE half, round to nearest even (11 significant bits, finite values up to 65504); a value beyond that
//            range is not clamped: quantize_f16 says where it is and the store refuses the checkpoint.
//   int8: symmetric, one scale per row (per output channel of an output-major matrix):
//         scale = max |w| / 127 over the row, q = round(w / scale).
#pragma once

#include <cstdint>

#include "kernels/half.h"

namespace kvcache {

uint16_t float_to_bf16(float value);
void quantize_bf16(uint16_t* out, const float* in, long n);
// The index of the first value beyond +-65504 (infinities included; NaN stays NaN), converting nothing, or -1 once
// all n are converted.
constexpr float kFloat16Max = 65504.0f;
long quantize_f16(Half* out, const float* in, long n);
// (rows, cols) -> int8 and scales (rows)
void quantize_int8(int8_t* out, float* scales, const float* in, long rows, long cols);

}  // namespace kvcache
