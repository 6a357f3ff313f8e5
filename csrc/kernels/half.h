// Half: one IEEE binary16 value (5 exponent bits, 10 mantissa bits), as the 16-bit KV cache stores it. A distinct
// type, because elsewhere a uint16_t holds a bfloat16 (matrix.h). Its conversions are in float16.h.
#pragma once

#include <cstdint>

namespace kvcache {

struct Half {
  uint16_t bits;
};

}  // namespace kvcache
