// MatrixStore: owns the copies of a model's weight matrices that the kernels read (kernels/matrix.h), built once at
// load from float32 sources in the storage type asked for: float32 panels, bfloat16, float16, or int8 with a scale
// per output channel. Every model family builds its matrices here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>
#include <xtensor/xtensor.hpp>

#include "kernels/matrix.h"

namespace kvcache {

// One matrix to build: where it goes, its float32 source, the source's shape, and whether the source is stored
// (in, out) (GPT-2's Conv1D: transposed) or (out, in) (nn.Linear, the lm_head).
struct MatrixJob {
  Matrix* matrix;
  const float* source;
  long rows, cols;
  bool transpose;
  // The checkpoint tensors the source holds, for messages: one, or (stacked fused products) each with its outputs.
  std::vector<std::pair<std::string, long>> tensors;
  long outputs() const { return transpose ? cols : rows; }
  long inputs() const { return transpose ? rows : cols; }
};

class MatrixStore {
 public:
  // Builds every job's Matrix as `type`. done(source, bytes) is called once a source has been copied (a model
  // whose sources are mapped file pages releases them there). float16: a value beyond its range is refused
  // (std::invalid_argument naming the tensor and the element), never saturated: the model would compute something
  // else than the checkpoint says.
  void build(const std::vector<MatrixJob>& jobs, WeightType type,
             const std::function<void(const float*, std::size_t)>& done = {});

  WeightType type() const { return type_; }
  // Bytes the kernels read: every matrix in its storage type, plus int8's scales.
  std::size_t nbytes() const {
    return f32_.size() * 4 + bf16_.size() * 2 + f16_.size() * 2 + int8_.size() + scales_.size() * 4;
  }

 private:
  WeightType type_ = WeightType::F32;
  xt::xtensor<float, 1> f32_;      // float32 weights: every matrix in panels
  xt::xtensor<uint16_t, 1> bf16_;  // bf16 copies of the matrices
  xt::xtensor<uint16_t, 1> f16_;   // float16 copies of the matrices: Half values stored as their bits, as KVCache
  xt::xtensor<int8_t, 1> int8_;    // int8 copies of the matrices
  xt::xtensor<float, 1> scales_;   // their per-channel scales
};

}  // namespace kvcache
