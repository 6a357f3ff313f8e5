#include "llama_weights.h"

#include <algorithm>
#include <cstring>

#include "errors.h"
#include "huge_pages.h"

namespace kvcache {

namespace {

std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }

}  // namespace

LlamaWeights::LlamaWeights(const LlamaConfig& config) : config_(config), layers(config.n_layer) { config_.validate(); }

std::vector<std::pair<std::string, std::vector<int64_t>>> LlamaWeights::expected_tensors(const LlamaConfig& c) {
  const int64_t V = c.n_vocab, C = c.n_embd, Q = int64_t{c.n_head} * c.head_dim,
                KV = int64_t{c.n_kv_head} * c.head_dim, F = c.n_ff;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {V, C}});
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = layer_prefix(l);
    out.push_back({p + "input_layernorm.weight", {C}});
    out.push_back({p + "self_attn.q_proj.weight", {Q, C}});
    out.push_back({p + "self_attn.k_proj.weight", {KV, C}});
    out.push_back({p + "self_attn.v_proj.weight", {KV, C}});
    out.push_back({p + "self_attn.o_proj.weight", {C, Q}});
    if (c.attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {Q}});
      out.push_back({p + "self_attn.k_proj.bias", {KV}});
      out.push_back({p + "self_attn.v_proj.bias", {KV}});
      out.push_back({p + "self_attn.o_proj.bias", {C}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {C}});
    out.push_back({p + "mlp.gate_proj.weight", {F, C}});
    out.push_back({p + "mlp.up_proj.weight", {F, C}});
    out.push_back({p + "mlp.down_proj.weight", {C, F}});
    if (c.mlp_bias) {
      out.push_back({p + "mlp.gate_proj.bias", {F}});
      out.push_back({p + "mlp.up_proj.bias", {F}});
      out.push_back({p + "mlp.down_proj.bias", {C}});
    }
  }
  out.push_back({"model.norm.weight", {C}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {V, C}});
  return out;
}

std::unique_ptr<LlamaWeights> LlamaWeights::from_tensors(const LlamaConfig& config, const TensorMap& tensors,
                                                         WeightType type) {
  std::unique_ptr<LlamaWeights> w(new LlamaWeights(config));
  const auto expected = expected_tensors(config);
  // Every claim checked before anything is copied: present, shaped as the config says, nothing left over.
  for (const auto& [name, shape] : expected) {
    const auto it = tensors.find(name);
    if (it == tensors.end()) fail("missing tensor '" + name + "' (expected shape " + shape_text(shape) + ")");
    if (it->second.shape != shape) {
      fail("tensor '" + name + "' has shape " + shape_text(it->second.shape) + ", expected " + shape_text(shape) +
           " from the config");
    }
  }
  if (tensors.size() != expected.size()) {
    for (const auto& [name, tensor] : tensors) {
      const bool known = std::any_of(expected.begin(), expected.end(), [&](const auto& e) { return e.first == name; });
      if (!known) {
        fail("unexpected tensor '" + name + "' " + shape_text(tensor.shape) +
             ": the config does not use it, so this checkpoint would compute something else");
      }
    }
  }
  auto data = [&](const std::string& name) { return tensors.at(name).data; };

  const long V = config.n_vocab, C = config.n_embd, HS = config.head_dim, Q = config.n_head * HS,
             KV = config.n_kv_head * HS, F = config.n_ff, L = config.n_layer;
  const long qkv_rows = Q + 2 * KV;
  // The arena: embedding, then per layer two norms and the biases, then the final norm.
  const long per_layer = 2 * C + (config.attention_bias ? qkv_rows + C : 0) + (config.mlp_bias ? 2 * F + C : 0);
  w->small_floats_ = static_cast<std::size_t>(L * per_layer + C);
  w->arena_ = xt::xtensor<float, 1>::from_shape({static_cast<std::size_t>(V * C) + w->small_floats_});
  advise_huge_pages(w->arena_.data(), w->arena_.size() * sizeof(float));
  float* next = w->arena_.data();
  auto copy = [&](const std::string& name, long n) {
    std::memcpy(next, data(name), n * sizeof(float));
    next += n;
    return next - n;
  };
  w->embed = copy("model.embed_tokens.weight", V * C);

  // Stacked sources of the fused products, staged for the build and freed after it.
  std::vector<float> staging(static_cast<std::size_t>(L) * (qkv_rows + 2 * F) * C);
  float* stage = staging.data();
  auto stack = [&](std::initializer_list<std::pair<std::string, long>> parts) {
    float* start = stage;
    for (const auto& [name, rows] : parts) {
      std::memcpy(stage, data(name), rows * C * sizeof(float));
      stage += rows * C;
    }
    return start;
  };
  std::vector<MatrixJob> jobs;
  for (int l = 0; l < L; ++l) {
    LlamaLayerWeights& lw = w->layers[l];
    const std::string p = layer_prefix(l), a = p + "self_attn.", m = p + "mlp.";
    lw.attn_norm = copy(p + "input_layernorm.weight", C);
    lw.mlp_norm = copy(p + "post_attention_layernorm.weight", C);
    if (config.attention_bias) {
      lw.qkv_b = copy(a + "q_proj.bias", Q);
      copy(a + "k_proj.bias", KV);
      copy(a + "v_proj.bias", KV);
      lw.o_b = copy(a + "o_proj.bias", C);
    }
    if (config.mlp_bias) {
      lw.gate_up_b = copy(m + "gate_proj.bias", F);
      copy(m + "up_proj.bias", F);
      lw.down_b = copy(m + "down_proj.bias", C);
    }
    const float* qkv = stack({{a + "q_proj.weight", Q}, {a + "k_proj.weight", KV}, {a + "v_proj.weight", KV}});
    const float* gate_up = stack({{m + "gate_proj.weight", F}, {m + "up_proj.weight", F}});
    jobs.push_back({&lw.qkv, qkv, qkv_rows, C, false,
                    {{a + "q_proj.weight", Q}, {a + "k_proj.weight", KV}, {a + "v_proj.weight", KV}}});
    jobs.push_back({&lw.o_proj, data(a + "o_proj.weight"), C, Q, false, {{a + "o_proj.weight", C}}});
    jobs.push_back({&lw.gate_up, gate_up, 2 * F, C, false, {{m + "gate_proj.weight", F}, {m + "up_proj.weight", F}}});
    jobs.push_back({&lw.down, data(m + "down_proj.weight"), C, F, false, {{m + "down_proj.weight", C}}});
  }
  w->norm = copy("model.norm.weight", C);
  const float* head = config.tie_word_embeddings ? w->embed : data("lm_head.weight");
  const char* head_name = config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  jobs.push_back({&w->lm_head, head, V, C, false, {{head_name, V}}});
  w->matrices_.build(jobs, type);
  return w;
}

std::size_t LlamaWeights::compute_nbytes() const {
  // the embedding is not counted: a step reads one of its rows per token
  return matrices_.nbytes() + small_floats_ * sizeof(float);
}

}  // namespace kvcache
