// LlamaWeights: every parameter of a LLaMA-family model, with its shape in a comment.
//
// Built from float32 host tensors named as Hugging Face's LlamaForCausalLM names them (model.layers.{i}.self_attn.
// q_proj.weight, ...): the loaders (safetensors directories, GGUF files, python/kvcache/llama_loading.py) hand them
// over dequantized and in transformers' layout, and every name and shape is checked here. The linear layers are
// nn.Linear, stored (out, in). q, k and v are stacked into one matrix, as are gate and up, so that each pair of
// products reads its input once.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <xtensor/xtensor.hpp>

#include "llama_config.h"
#include "matrix_store.h"

namespace kvcache {

// A float32 tensor the caller owns for the duration of a load, row-major.
struct HostTensor {
  const float* data;
  std::vector<int64_t> shape;
};
using TensorMap = std::map<std::string, HostTensor>;

struct LlamaLayerWeights {
  const float* attn_norm = nullptr;  // (C)        input_layernorm
  const float* qkv_b = nullptr;      // ((NH + 2 NKV) HS)  q, k, v biases (attention_bias), else null
  const float* o_b = nullptr;        // (C)        (attention_bias), else null
  const float* mlp_norm = nullptr;   // (C)        post_attention_layernorm
  const float* gate_up_b = nullptr;  // (2F)       (mlp_bias), else null
  const float* down_b = nullptr;     // (C)        (mlp_bias), else null
  Matrix qkv;      // ((NH + 2 NKV) HS, C)  q_proj, k_proj, v_proj stacked
  Matrix o_proj;   // (C, NH HS)
  Matrix gate_up;  // (2F, C)               gate_proj, up_proj stacked
  Matrix down;     // (C, F)
};

class LlamaWeights {
 private:
  LlamaConfig config_;  // first: the other members are sized from it

 public:
  const float* embed = nullptr;         // (V, C) model.embed_tokens
  std::vector<LlamaLayerWeights> layers;  // (L)
  const float* norm = nullptr;          // (C) model.norm
  Matrix lm_head;                       // (V, C) lm_head, or the embedding when tied

  // Every tensor the config calls for must be present with its shape, and nothing else: a checkpoint with a
  // tensor we would not use is one we would compute differently. Throws std::invalid_argument naming the tensor.
  static std::unique_ptr<LlamaWeights> from_tensors(const LlamaConfig& config, const TensorMap& tensors,
                                                    WeightType type = WeightType::F32);
  // The names and shapes from_tensors expects, in checkpoint order.
  static std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const LlamaConfig& config);

  const LlamaConfig& config() const { return config_; }
  WeightType weight_type() const { return matrices_.type(); }
  std::size_t compute_nbytes() const;  // bytes a decode step reads: matrices in their storage type, the rest f32

 private:
  explicit LlamaWeights(const LlamaConfig& config);

  xt::xtensor<float, 1> arena_;  // embedding, norms and biases, copied from the host tensors
  std::size_t small_floats_ = 0;  // of which norms and biases
  MatrixStore matrices_;
};

}  // namespace kvcache
