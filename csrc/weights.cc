#include "weights.h"

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "errors.h"
#include "huge_pages.h"
#include "safetensors.h"

namespace kvcache {

namespace {

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf or nan
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: renormalise
    exponent = 113;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void convert_to_f32(float* out, const std::byte* in, int64_t n, DType dtype) {
  const auto* src = reinterpret_cast<const unsigned char*>(in);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t v = static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
    out[i] = dtype == DType::F16 ? half_to_float(v) : bf16_to_float(v);
  }
}

// Layers beyond config.n_layer mean the config and the weights do not belong together: loading only the first
// n_layer of them would run a different model without a word.
void require_no_extra_layers(const SafeTensorsFile& file, const GPT2Config& config, const std::string& path) {
  for (const std::string& full : file.names()) {
    const std::string name = full.rfind("transformer.", 0) == 0 ? full.substr(12) : full;
    if (name.rfind("h.", 0) != 0) continue;
    const std::size_t dot = name.find('.', 2);
    const std::string index = name.substr(2, dot == std::string::npos ? std::string::npos : dot - 2);
    if (index.empty() || index.find_first_not_of("0123456789") != std::string::npos) continue;
    if (index.size() > 9 || std::stoi(index) >= config.n_layer) {
      fail("'" + path + "' holds tensor '" + full + "' of layer " + index + ", but config.json has n_layer=" +
           std::to_string(config.n_layer) + ": the weights and the config do not belong together");
    }
  }
}

// A cross-attention tensor under a config without cross-attention: loading the rest would run the decoder without
// the encoder, a different model. (crossattention.bias / masked_bias are old checkpoints' mask buffers, not
// parameters: transformers ignores them, as we do attn.bias.)
void require_no_cross_tensors(const SafeTensorsFile& file, const std::string& path) {
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (const std::string& full : file.names()) {
    const bool cross = full.find(".ln_cross_attn.") != std::string::npos ||
                       full.find(".crossattention.") != std::string::npos;
    if (!cross) continue;
    if (ends_with(full, ".crossattention.bias") || ends_with(full, ".crossattention.masked_bias")) continue;
    fail("'" + path + "' holds cross-attention tensor '" + full + "', but config.json has add_cross_attention "
         "false (or absent): loading it as a plain GPT-2 would drop the cross-attention and compute another model");
  }
}

}  // namespace

int64_t ParamSlot::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

GPT2Weights::GPT2Weights(const GPT2Config& config) : config_(config), h(config.n_layer) { config_.validate(); }

std::vector<ParamSlot> GPT2Weights::slots() {
  const int64_t V = config_.n_vocab, P = config_.n_ctx, C = config_.n_embd;
  using I = ParamSlot::Init;
  std::vector<ParamSlot> s;
  s.push_back({"wte.weight", {V, C}, &wte, I::Normal});
  s.push_back({"wpe.weight", {P, C}, &wpe, I::Normal});
  for (int l = 0; l < config_.n_layer; ++l) {
    LayerWeights& w = h[l];
    const std::string p = "h." + std::to_string(l) + ".";
    s.push_back({p + "ln_1.weight", {C}, &w.ln_1_w, I::Ones});
    s.push_back({p + "ln_1.bias", {C}, &w.ln_1_b, I::Zeros});
    s.push_back({p + "attn.c_attn.weight", {C, 3 * C}, &w.c_attn_w, I::Normal});
    s.push_back({p + "attn.c_attn.bias", {3 * C}, &w.c_attn_b, I::Zeros});
    s.push_back({p + "attn.c_proj.weight", {C, C}, &w.attn_proj_w, I::ResidualNormal});
    s.push_back({p + "attn.c_proj.bias", {C}, &w.attn_proj_b, I::Zeros});
    s.push_back({p + "ln_2.weight", {C}, &w.ln_2_w, I::Ones});
    s.push_back({p + "ln_2.bias", {C}, &w.ln_2_b, I::Zeros});
    if (config_.add_cross_attention) {  // transformers' order; its c_proj is a residual projection like attn's
      s.push_back({p + "crossattention.c_attn.weight", {C, 2 * C}, &w.cross_kv_w, I::Normal});
      s.push_back({p + "crossattention.c_attn.bias", {2 * C}, &w.cross_kv_b, I::Zeros});
      s.push_back({p + "crossattention.q_attn.weight", {C, C}, &w.cross_q_w, I::Normal});
      s.push_back({p + "crossattention.q_attn.bias", {C}, &w.cross_q_b, I::Zeros});
      s.push_back({p + "crossattention.c_proj.weight", {C, C}, &w.cross_proj_w, I::ResidualNormal});
      s.push_back({p + "crossattention.c_proj.bias", {C}, &w.cross_proj_b, I::Zeros});
      s.push_back({p + "ln_cross_attn.weight", {C}, &w.ln_cross_w, I::Ones});
      s.push_back({p + "ln_cross_attn.bias", {C}, &w.ln_cross_b, I::Zeros});
    }
    s.push_back({p + "mlp.c_fc.weight", {C, 4 * C}, &w.c_fc_w, I::Normal});
    s.push_back({p + "mlp.c_fc.bias", {4 * C}, &w.c_fc_b, I::Zeros});
    s.push_back({p + "mlp.c_proj.weight", {4 * C, C}, &w.mlp_proj_w, I::ResidualNormal});
    s.push_back({p + "mlp.c_proj.bias", {C}, &w.mlp_proj_b, I::Zeros});
  }
  s.push_back({"ln_f.weight", {C}, &ln_f_w, I::Ones});
  s.push_back({"ln_f.bias", {C}, &ln_f_b, I::Zeros});
  if (lm_head != nullptr && !tied()) s.push_back({"lm_head.weight", {V, C}, &lm_head, I::Normal});
  return s;
}

std::size_t GPT2Weights::nbytes() const {
  std::size_t n = 0;
  for (auto& slot : const_cast<GPT2Weights*>(this)->slots()) n += slot.numel() * sizeof(float);
  return n;
}

std::unique_ptr<GPT2Weights> GPT2Weights::load(const std::vector<std::string>& paths, const GPT2Config& config,
                                               WeightType type) {
  require(!paths.empty(), "no weights file given");
  std::unique_ptr<GPT2Weights> w(new GPT2Weights(config));
  // Every tensor name -> the file that holds it; a name in two shards would leave which one counts to chance.
  std::map<std::string, const SafeTensorsFile*> owner;
  for (const std::string& path : paths) {
    w->files_.push_back(std::make_shared<SafeTensorsFile>(path));
    const SafeTensorsFile* file = w->files_.back().get();
    for (const std::string& name : file->names()) {
      const auto [it, fresh] = owner.emplace(name, file);
      if (!fresh) fail("tensor '" + name + "' is in both '" + it->second->path() + "' and '" + path + "'");
    }
  }
  const std::string where = paths.size() == 1 ? "'" + paths[0] + "'"
                                              : "the " + std::to_string(paths.size()) + " shards ('" + paths[0] +
                                                    "', ...)";

  struct Found {
    const SafeTensorsFile* file;
    const TensorInfo* info;
  };
  // Checkpoints from GPT2LMHeadModel prefix the body with "transformer."; those of GPT2Model do not.
  auto find = [&](const std::string& name) -> Found {
    for (const std::string& key : {"transformer." + name, name}) {
      const auto it = owner.find(key);
      if (it != owner.end()) return {it->second, &it->second->info(key)};
    }
    return {nullptr, nullptr};
  };
  auto check = [&](const std::string& name, const std::vector<int64_t>& shape) -> Found {
    const Found found = find(name);
    if (found.info == nullptr) {
      const bool cross = name.find("cross") != std::string::npos;
      fail("missing tensor '" + name + "' in " + where +
           (cross ? " (config.json has add_cross_attention true: every layer needs its cross-attention)" : ""));
    }
    const TensorInfo& info = *found.info;
    if (info.shape != shape) {
      fail("tensor '" + name + "' has shape " + shape_text(info.shape) + ", expected " + shape_text(shape) +
           " from config.json");
    }
    if (info.dtype == DType::Other) {
      fail("tensor '" + name + "' has unsupported dtype " + info.dtype_name + " (supported: F32, F16, BF16)");
    }
    return found;
  };

  // An explicit lm_head is used when present, else the head is tied to wte as in GPT-2.
  const int64_t V = config.n_vocab, C = config.n_embd;
  const Found head = owner.count("lm_head.weight") != 0 ? check("lm_head.weight", {V, C}) : Found{nullptr, nullptr};

  // Pass 1: check every tensor and count what needs converting; pass 2: point or convert.
  std::vector<ParamSlot> slots = w->slots();
  std::vector<Found> found;
  int64_t to_convert = 0;
  auto in_place = [&](const Found& f) {
    return f.info->dtype == DType::F32 && reinterpret_cast<uintptr_t>(f.file->data(*f.info)) % alignof(float) == 0;
  };
  for (auto& slot : slots) {
    found.push_back(check(slot.name, slot.shape));
    if (!in_place(found.back())) to_convert += slot.numel();
  }
  for (std::size_t i = 0; i < paths.size(); ++i) {
    require_no_extra_layers(*w->files_[i], config, paths[i]);
    if (!config.add_cross_attention) require_no_cross_tensors(*w->files_[i], paths[i]);
  }
  if (head.info != nullptr && !in_place(head)) to_convert += head.info->numel();
  w->arena_ = xt::xtensor<float, 1>::from_shape({static_cast<std::size_t>(to_convert)});
  advise_huge_pages(w->arena_.data(), w->arena_.size() * sizeof(float));

  float* next = w->arena_.data();
  auto place = [&](const Found& f) -> const float* {
    const TensorInfo& info = *f.info;
    if (in_place(f)) return reinterpret_cast<const float*>(f.file->data(info));
    if (info.dtype == DType::F32) {
      std::memcpy(next, f.file->data(info), info.numel() * sizeof(float));
    } else {
      convert_to_f32(next, f.file->data(info), info.numel(), info.dtype);
    }
    const float* out = next;
    next += info.numel();
    return out;
  };
  for (std::size_t i = 0; i < slots.size(); ++i) *slots[i].ptr = place(found[i]);
  w->lm_head = head.info != nullptr ? place(head) : w->wte;
  w->build_matrices(type);
  return w;
}

std::unique_ptr<GPT2Weights> GPT2Weights::random(const GPT2Config& config, uint64_t seed, WeightType type) {
  std::unique_ptr<GPT2Weights> w(new GPT2Weights(config));
  std::vector<ParamSlot> slots = w->slots();
  int64_t total = 0;
  for (auto& slot : slots) total += slot.numel();
  w->arena_ = xt::xtensor<float, 1>::from_shape({static_cast<std::size_t>(total)});
  advise_huge_pages(w->arena_.data(), w->arena_.size() * sizeof(float));

  std::mt19937_64 rng(seed);
  const float std_normal = 0.02f;
  const float std_residual = 0.02f / std::sqrt(2.0f * config.n_layer);
  float* next = w->arena_.data();
  for (auto& slot : slots) {
    using I = ParamSlot::Init;
    const int64_t n = slot.numel();
    if (slot.init == I::Ones || slot.init == I::Zeros) {
      std::fill(next, next + n, slot.init == I::Ones ? 1.0f : 0.0f);
    } else {
      std::normal_distribution<float> normal(0.0f, slot.init == I::Normal ? std_normal : std_residual);
      for (int64_t i = 0; i < n; ++i) next[i] = normal(rng);
    }
    *slot.ptr = next;
    next += n;
  }
  w->lm_head = w->wte;
  w->build_matrices(type);
  return w;
}

void GPT2Weights::build_matrices(WeightType type) {
  const long C = config_.n_embd, V = config_.n_vocab;
  // Every matrix the kernels read: Conv1D sources (in, out), and the lm_head, output-major (out, in).
  std::vector<MatrixJob> jobs;
  for (std::size_t i = 0; i < h.size(); ++i) {
    LayerWeights& l = h[i];
    const std::string p = "h." + std::to_string(i) + ".";
    auto named = [&](const char* tensor, long outputs) {
      return std::vector<std::pair<std::string, long>>{{p + tensor, outputs}};
    };
    jobs.push_back({&l.c_attn, l.c_attn_w, C, 3 * C, true, named("attn.c_attn.weight", 3 * C)});
    jobs.push_back({&l.attn_proj, l.attn_proj_w, C, C, true, named("attn.c_proj.weight", C)});
    jobs.push_back({&l.c_fc, l.c_fc_w, C, 4 * C, true, named("mlp.c_fc.weight", 4 * C)});
    jobs.push_back({&l.mlp_proj, l.mlp_proj_w, 4 * C, C, true, named("mlp.c_proj.weight", C)});
    if (config_.add_cross_attention) {
      jobs.push_back({&l.cross_kv, l.cross_kv_w, C, 2 * C, true, named("crossattention.c_attn.weight", 2 * C)});
      jobs.push_back({&l.cross_q, l.cross_q_w, C, C, true, named("crossattention.q_attn.weight", C)});
      jobs.push_back({&l.cross_proj, l.cross_proj_w, C, C, true, named("crossattention.c_proj.weight", C)});
    }
  }
  jobs.push_back({&lm_head_matrix, lm_head, V, C, false, {{tied() ? "wte.weight" : "lm_head.weight", V}}});
  // The kernels read the copy from now on; the file's pages of the source would only count twice in the RSS.
  // A tied head's are released too: the embedding reads one row per token, which faults its page back in.
  matrices_.build(jobs, type, [&](const float* source, std::size_t bytes) {
    for (const auto& file : files_) {
      if (file->maps(source)) release_mapped_pages(source, bytes);
    }
  });
  weight_type_ = type;
}

std::size_t GPT2Weights::compute_nbytes() const {
  const std::size_t C = config_.n_embd, V = config_.n_vocab, L = config_.n_layer;
  const bool cross = config_.add_cross_attention;
  // c_attn 3C^2, attn_proj C^2, c_fc 4C^2, mlp_proj 4C^2 (+ cross_q and cross_proj C^2 each)
  const std::size_t matrix_elements = L * (12 + (cross ? 2 : 0)) * C * C + V * C;
  const auto per_element = static_cast<std::size_t>(element_bytes(weight_type_));
  std::size_t scale_bytes = 0;
  if (weight_type_ == WeightType::I8) {
    scale_bytes = (L * (3 * C + C + 4 * C + C + (cross ? 2 * C : 0)) + V) * sizeof(float);
  }
  // crossattention.c_attn (C, 2C) and its bias are read once per call, by set_encoder_states, not by a step
  const std::size_t cross_kv_floats = cross ? L * (2 * C * C + 2 * C) : 0;
  // everything else (embeddings, biases, layernorms) stays float32; a tied wte is counted once, as the lm_head
  const std::size_t rest = nbytes() - (matrix_elements + cross_kv_floats) * sizeof(float);
  return matrix_elements * per_element + scale_bytes + rest;
}

}  // namespace kvcache
