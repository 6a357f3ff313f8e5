// Matrix: a weight matrix as the kernels read it. Always output-major, (outputs, inputs) row-major, as
// nn.Linear stores it: each output is one contiguous row, so a decode step is a stream of dot products, the
// access pattern that reads memory fastest (benchmarks/speed.py). Hugging Face's Conv1D weights, (inputs, outputs),
// are transposed into this layout at load. The storage type is chosen at load too: decode is memory-bound, so
// bfloat16 and int8 read half or a quarter of the bytes; values are widened to float32 in registers.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvcache {

enum class WeightType { F32, BF16, I8 };

struct Matrix {
  WeightType type = WeightType::F32;
  const void* data = nullptr;     // (rows = outputs, cols = inputs) row-major, of `type`
  const float* scales = nullptr;  // I8 only: one scale per row (per output channel)
};

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

}  // namespace kernels
}  // namespace kvcache
