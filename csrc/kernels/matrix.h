// Matrix: a weight matrix as the kernels read it, in one of two layouts.
//  - Panels (float32 linear layers): strips of 16 outputs, input-major (panel_gemm.h). One register-tiled kernel
//    streams them for a decode step and multiplies them at near the FMA peak for a prefill, at any row count.
//  - OutputMajor, (outputs, inputs) row-major as nn.Linear stores it: each output one contiguous row, read as dot
//    products (gemv.h). The 16-bit and 8-bit matrices, and the float32 lm_head, whose rows the token embedding
//    shares when tied.
// The storage type is chosen at load: decode is memory-bound, so bfloat16 / float16 and int8 read half or a quarter
// of the bytes; values are widened to float32 in registers.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvcache {

enum class WeightType { F32, BF16, F16, I8 };  // F16: IEEE half (kernels/half.h)
enum class Layout { OutputMajor, Panels };

struct Matrix {
  WeightType type = WeightType::F32;
  const void* data = nullptr;     // OutputMajor: (rows = outputs, cols = inputs) row-major, of `type`
                                  // (float, uint16_t bfloat16 bits, Half or int8_t)
  const float* scales = nullptr;  // I8 only: one scale per row (per output channel)
  Layout layout = Layout::OutputMajor;  // Panels: float32 only, packed by pack_panels
};

inline long element_bytes(WeightType type) {
  return type == WeightType::F32 ? 4 : type == WeightType::BF16 || type == WeightType::F16 ? 2 : 1;
}

namespace kernels {

// Element j of a row as float32. Small enough to inline into every clone of the kernels that use it.
inline float widen(const float* row, long j) { return row[j]; }
inline float widen(const uint16_t* row, long j) {  // bfloat16: the high half of a float32
  const uint32_t bits = static_cast<uint32_t>(row[j]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float widen(const int8_t* row, long j) { return static_cast<float>(row[j]); }
// float16 (Half, half.h) elements widen through float16.h's widen(), beside its vector conversions.

}  // namespace kernels
}  // namespace kvcache
