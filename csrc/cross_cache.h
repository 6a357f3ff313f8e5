// CrossCache: the cross-attention keys and values of an encoder-decoder call (transformers' EncoderDecoderCache's
// cross_attention_cache): every layer's crossattention.c_attn of the encoder states, computed once by the model
// (GPT2Model::set_encoder_states) and read by every decoder step after, from its KVCache's cross() slot.
//
// Layout, row-major:  (L, 2, B, NH, S, HS)   [layer][K=0 / V=1][batch row][head][encoder position][channel]
// so the keys of one (layer, row, head) are a dense (S, HS) matrix, as in the KVCache. Unlike the self-attention
// cache it never grows: S is the encoder's, and every decoder position attends over all S (no mask). float32 only.
//   nbytes = 2 x L x B x NH x S x HS x 4
#pragma once

#include <cstddef>
#include <xtensor/xtensor.hpp>

#include "kv_cache.h"

namespace kvcache {

class CrossCache {
 public:
  // shape: the model's (n_kv_head heads of head_dim per layer; n_ctx unused); owner: the model that fills it.
  // Throws std::invalid_argument unless batch_size >= 1 and seq_len >= 1.
  CrossCache(const CacheShape& shape, int batch_size, int seq_len, const void* owner);

  int n_layer() const { return n_layer_; }
  int n_head() const { return n_head_; }
  int head_dim() const { return head_dim_; }
  int batch_size() const { return batch_size_; }
  int seq_len() const { return seq_len_; }  // S, the encoder positions
  const void* owner() const { return owner_; }
  std::size_t nbytes() const { return data_.size() * sizeof(float); }

  // (S, HS) blocks of keys / values for one layer, batch row and head.
  float* keys(int layer, int row, int head) { return block(layer, 0, row, head); }
  float* values(int layer, int row, int head) { return block(layer, 1, row, head); }
  const float* keys(int layer, int row, int head) const {
    return const_cast<CrossCache*>(this)->keys(layer, row, head);
  }
  const float* values(int layer, int row, int head) const {
    return const_cast<CrossCache*>(this)->values(layer, row, head);
  }

 private:
  float* block(int layer, int kv, int row, int head) {
    return &data_(static_cast<std::size_t>(layer), static_cast<std::size_t>(kv), static_cast<std::size_t>(row),
                  static_cast<std::size_t>(head), 0, 0);
  }

  int n_layer_, n_head_, head_dim_, batch_size_, seq_len_;
  const void* owner_;
  xt::xtensor<float, 6> data_;
};

}  // namespace kvcache
