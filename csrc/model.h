// GPT2Model: the GPT-2 family on the CausalLM seam (causal_lm.h): LayerNorm, fused qkv, multi-head attention,
// GELU MLP, learned positions, tied head.
#pragma once

#include <memory>

#include "causal_lm.h"
#include "config.h"
#include "weights.h"

namespace kvcache {

class GPT2Model final : public CausalLM {
 public:
  explicit GPT2Model(std::unique_ptr<GPT2Weights> weights);

  const GPT2Config& config() const { return config_; }
  GPT2Weights& weights() { return *weights_; }
  const GPT2Weights& weights() const { return *weights_; }

  int n_vocab() const override { return config_.n_vocab; }
  int n_ctx() const override { return config_.n_ctx; }
  CacheShape cache_shape() const override {
    return {config_.n_layer, config_.n_head, config_.head_dim(), config_.n_ctx};
  }
  void reserve(Workspace& ws, int n_tokens, int n_logits, int max_seq_len) const override;
  std::size_t weights_nbytes() const override { return weights_->compute_nbytes(); }
  // Refused: GPT-2's positions are learned embeddings added to the input, so no rotation moves a key (model.cc).
  std::vector<float> rotary_table(int n) const override;

  // A model with cross-attention (config().add_cross_attention): computes every layer's cross keys and values of
  // the encoder states (B, S, C), float32 row-major, once, into a new CrossCache attached to cache (replacing any
  // there); every forward over the cache then attends over them. Throws std::invalid_argument naming the values
  // unless this model made the cache, has cross-attention, B == cache.batch_size(), C == n_embd, S >= 1 and every
  // value is finite.
  void set_encoder_states(KVCache& cache, const float* states, int B, int S, int C) const;

 protected:
  void compute(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
               bool all_logits) const override;

 private:
  std::unique_ptr<GPT2Weights> weights_;
  GPT2Config config_;
};

}  // namespace kvcache
