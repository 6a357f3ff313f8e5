// GPT2Config: the shape of a GPT-2 family model, as in Hugging Face's config.json.
#pragma once

namespace kvcache {

struct GPT2Config {
  int n_vocab = 50257;  // V: vocabulary size ("vocab_size")
  int n_ctx = 1024;     // maximum positions ("n_positions")
  int n_embd = 768;     // C: channels
  int n_head = 12;      // NH: attention heads; head size HS = C / NH
  int n_layer = 12;     // L: transformer blocks
  float eps = 1e-5f;    // layer_norm_epsilon
  // A cross-attention block in every layer, over an encoder's states ("add_cross_attention"; the decoders of
  // VisionEncoderDecoder): cross_cache.h.
  bool add_cross_attention = false;

  int head_dim() const { return n_embd / n_head; }

  // Throws std::invalid_argument naming the offending field.
  void validate() const;
};

}  // namespace kvcache
