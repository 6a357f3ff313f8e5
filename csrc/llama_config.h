// LlamaConfig: the shape of a LLaMA-family model (LlamaForCausalLM's config.json; llama.* keys of a GGUF file).
#pragma once

#include <vector>

namespace kvcache {

// rope_scaling of config.json: none, or Llama 3.x's ("rope_type": "llama3"), which slows the low frequencies.
struct RopeScaling {
  enum class Kind { None, Llama3 };
  Kind kind = Kind::None;
  float factor = 8.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  int n_vocab = 32000;   // V ("vocab_size")
  int n_ctx = 2048;      // maximum positions ("max_position_embeddings")
  int n_embd = 4096;     // C ("hidden_size")
  int n_head = 32;       // NH query heads ("num_attention_heads")
  int n_kv_head = 32;    // NKV key/value heads ("num_key_value_heads"); divides n_head, 1 = multi-query
  int n_layer = 32;      // L ("num_hidden_layers")
  int head_dim = 128;    // HS, explicit or n_embd / n_head
  int n_ff = 11008;      // F: SwiGLU hidden size ("intermediate_size")
  float eps = 1e-6f;     // "rms_norm_eps"
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool attention_bias = false;  // biases on q, k, v and o projections
  bool mlp_bias = false;        // biases on gate, up and down projections
  bool tie_word_embeddings = false;

  // Throws std::invalid_argument naming the offending field.
  void validate() const;
  // RoPE's inverse frequencies (head_dim / 2), float32 as transformers computes them (rope_scaling applied).
  std::vector<float> rope_inv_freq() const;
};

}  // namespace kvcache
