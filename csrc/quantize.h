// Reduced-precision copies of the weight matrices, made once at load from the float32 parameters.
//   bfloat16: round to nearest even (the float32 exponent range, 8 bits of mantissa).
//   int8: symmetric, one scale per row (per output channel of an output-major matrix):
//         scale = max |w| / 127 over the row, q = round(w / scale).
#pragma once

#include <cstdint>

namespace kvcache {

uint16_t float_to_bf16(float value);
void quantize_bf16(uint16_t* out, const float* in, long n);
// (rows, cols) -> int8 and scales (rows)
void quantize_int8(int8_t* out, float* scales, const float* in, long rows, long cols);

}  // namespace kvcache
