// LlamaModel: the LLaMA family on the CausalLM seam (causal_lm.h), as transformers' LlamaForCausalLM computes it:
// RMSNorm, q/k/v projections, rotary position embeddings, grouped-query attention over a cache of n_kv_head heads,
// o projection, residual; RMSNorm, SwiGLU MLP, residual; final norm, tied or separate head.
#pragma once

#include <memory>
#include <vector>

#include "causal_lm.h"
#include "layers.h"
#include "llama_weights.h"

namespace kvcache {

class LlamaModel final : public CausalLM {
 public:
  explicit LlamaModel(std::unique_ptr<LlamaWeights> weights);

  const LlamaConfig& config() const { return weights_->config(); }
  const LlamaWeights& weights() const { return *weights_; }

  int n_vocab() const override { return config().n_vocab; }
  int n_ctx() const override { return config().n_ctx; }
  CacheShape cache_shape() const override {
    return {config().n_layer, config().n_kv_head, config().head_dim, config().n_ctx};
  }
  void reserve(Workspace& ws, int n_tokens, int n_logits, int max_seq_len) const override;
  std::size_t weights_nbytes() const override { return weights_->compute_nbytes(); }
  std::vector<float> rotary_table(int n) const override;

 protected:
  void compute(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
               bool all_logits) const override;

 private:
  std::unique_ptr<LlamaWeights> weights_;
  AttentionShape heads_;
  std::vector<float> inv_freq_;  // (HS / 2) RoPE's inverse frequencies
};

}  // namespace kvcache
