#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/float16.h"

namespace kvcache {

uint16_t float_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // keep it a (quiet) NaN
  bits += 0x7fff + ((bits >> 16) & 1);                                        // round to nearest, ties to even
  return static_cast<uint16_t>(bits >> 16);
}

void quantize_bf16(uint16_t* out, const float* in, long n) {
  for (long i = 0; i < n; ++i) out[i] = float_to_bf16(in[i]);
}

long quantize_f16(Half* out, const float* in, long n) {
  for (long i = 0; i < n; ++i) {
    if (std::fabs(in[i]) > kFloat16Max) return i;  // false for NaN
  }
  // the cache's conversion (float16.h): round to nearest even; its clamp at 65504 is never reached here
  constexpr long kPiece = 1L << 20;  // store_row takes an int count
  for (long i = 0; i < n; i += kPiece) kernels::store_row(out + i, in + i, static_cast<int>(std::min(kPiece, n - i)));
  return -1;
}

void quantize_int8(int8_t* out, float* scales, const float* in, long rows, long cols) {
  for (long r = 0; r < rows; ++r) {
    const float* row = in + r * cols;
    float max_abs = 0.0f;
    for (long c = 0; c < cols; ++c) max_abs = std::max(max_abs, std::fabs(row[c]));
    scales[r] = max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
    for (long c = 0; c < cols; ++c) {
      out[r * cols + c] = static_cast<int8_t>(std::clamp(std::nearbyint(row[c] / scales[r]), -127.0f, 127.0f));
    }
  }
}

}  // namespace kvcache
