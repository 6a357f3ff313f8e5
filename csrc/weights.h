// GPT2Weights: every parameter of a GPT-2 model as a float32 pointer, with its shape in a comment.
//
// Names follow Hugging Face (`h.{i}.attn.c_attn.weight`, ...) so loading is a key-for-key copy. The linear layers
// are Conv1D, stored (in, out): y = x @ W + b. float32 tensors of a safetensors file are used in place from the
// memory map; float16/bfloat16 ones are converted once into an owned float32 arena. The matrices the kernels
// read (Matrix: float32 panels, or output-major in 16/8 bits; kernels/matrix.h) are built from these once, at load.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <xtensor/xtensor.hpp>

#include "config.h"
#include "kernels/matrix.h"
#include "matrix_store.h"

namespace kvcache {

class SafeTensorsFile;

struct LayerWeights {
  const float* ln_1_w = nullptr;       // (C)
  const float* ln_1_b = nullptr;       // (C)
  const float* c_attn_w = nullptr;     // (C, 3C)   q, k, v side by side
  const float* c_attn_b = nullptr;     // (3C)
  const float* attn_proj_w = nullptr;  // (C, C)
  const float* attn_proj_b = nullptr;  // (C)
  const float* ln_2_w = nullptr;       // (C)
  const float* ln_2_b = nullptr;       // (C)
  const float* c_fc_w = nullptr;       // (C, 4C)
  const float* c_fc_b = nullptr;       // (4C)
  const float* mlp_proj_w = nullptr;   // (4C, C)
  const float* mlp_proj_b = nullptr;   // (C)
  // add_cross_attention only (else null): ln_cross_attn and crossattention, between attn and mlp
  const float* ln_cross_w = nullptr;    // (C)
  const float* ln_cross_b = nullptr;    // (C)
  const float* cross_kv_w = nullptr;    // (C, 2C)   crossattention.c_attn: k, v of the encoder states side by side
  const float* cross_kv_b = nullptr;    // (2C)
  const float* cross_q_w = nullptr;     // (C, C)    crossattention.q_attn
  const float* cross_q_b = nullptr;     // (C)
  const float* cross_proj_w = nullptr;  // (C, C)    crossattention.c_proj
  const float* cross_proj_b = nullptr;  // (C)

  // The matrices as the kernels read them (copies of the tensors above), shapes as (out, in).
  Matrix c_attn;      // (3C, C)
  Matrix attn_proj;   // (C, C)
  Matrix c_fc;        // (4C, C)
  Matrix mlp_proj;    // (C, 4C)
  Matrix cross_kv;    // (2C, C)  add_cross_attention only
  Matrix cross_q;     // (C, C)
  Matrix cross_proj;  // (C, C)
};

// One named parameter: where its pointer lives, its shape and how GPT-2 initialises it.
struct ParamSlot {
  enum class Init { Normal, ResidualNormal, Ones, Zeros };
  std::string name;  // Hugging Face name without the "transformer." prefix
  std::vector<int64_t> shape;
  const float** ptr;
  Init init;
  int64_t numel() const;
};

class GPT2Weights {
 private:
  GPT2Config config_;  // first: the other members are sized from it

 public:
  const float* wte = nullptr;      // (V, C) token embeddings
  const float* wpe = nullptr;      // (n_ctx, C) position embeddings
  std::vector<LayerWeights> h;     // (L)
  const float* ln_f_w = nullptr;   // (C)
  const float* ln_f_b = nullptr;   // (C)
  const float* lm_head = nullptr;  // (V, C): == wte when tied (GPT-2's default)
  Matrix lm_head_matrix;           // (V, C) lm_head as the kernels read it

  // Loads a Hugging Face GPT-2 safetensors file, or the shards of one checkpoint (each tensor in exactly one),
  // checking every tensor's presence, shape and dtype. Cross-attention tensors are loaded when
  // config.add_cross_attention, and refused when it is false.
  static std::unique_ptr<GPT2Weights> load(const std::vector<std::string>& paths, const GPT2Config& config,
                                           WeightType type = WeightType::F32);
  static std::unique_ptr<GPT2Weights> load(const std::string& path, const GPT2Config& config,
                                           WeightType type = WeightType::F32) {
    return load(std::vector<std::string>{path}, config, type);
  }
  // GPT-2's initialisation: normal(0, 0.02), residual projections (crossattention.c_proj too) scaled by 1/sqrt(2 L),
  // LayerNorm 1/0.
  static std::unique_ptr<GPT2Weights> random(const GPT2Config& config, uint64_t seed,
                                             WeightType type = WeightType::F32);

  const GPT2Config& config() const { return config_; }
  bool tied() const { return lm_head == wte; }
  WeightType weight_type() const { return weight_type_; }
  // Every parameter (lm_head only when untied), in checkpoint order.
  std::vector<ParamSlot> slots();
  std::size_t nbytes() const;          // bytes of all parameters as float32
  std::size_t compute_nbytes() const;  // bytes the forward pass reads: matrices in their storage type, the rest f32

 private:
  explicit GPT2Weights(const GPT2Config& config);
  // Builds the Matrix of every linear layer and of the lm_head, as `type`, from the float32 parameters (which
  // stay, for embeddings, state_dict and saving).
  void build_matrices(WeightType type);

  std::vector<std::shared_ptr<SafeTensorsFile>> files_;  // keep the maps alive for in-place float32 tensors
  xt::xtensor<float, 1> arena_;           // converted or randomly initialised parameters
  WeightType weight_type_ = WeightType::F32;
  MatrixStore matrices_;                  // the copies the kernels read
};

}  // namespace kvcache
