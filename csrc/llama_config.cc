#include "llama_config.h"

#include <cmath>
#include <string>

#include "errors.h"

namespace kvcache {

void LlamaConfig::validate() const {
  require_positive(n_vocab, "n_vocab");
  require_positive(n_ctx, "n_ctx");
  require_positive(n_embd, "n_embd");
  require_positive(n_head, "n_head");
  require_positive(n_kv_head, "n_kv_head");
  require_positive(n_layer, "n_layer");
  require_positive(head_dim, "head_dim");
  require_positive(n_ff, "n_ff");
  require(n_head % n_kv_head == 0, "config: n_head (" + std::to_string(n_head) + ") must be a multiple of n_kv_head (" +
                                       std::to_string(n_kv_head) + ")");
  require(head_dim % 2 == 0, "config: head_dim must be even for rotary embeddings, got " + std::to_string(head_dim));
  require(std::isfinite(eps) && eps > 0.0f, "config: rms_norm_eps must be a positive finite float32, got " +
                                                float_text(eps));
  require(std::isfinite(rope_theta) && rope_theta > 1.0f,
          "config: rope_theta must be a finite float32 > 1, got " + float_text(rope_theta));
  if (rope_scaling.kind == RopeScaling::Kind::Llama3) {
    const RopeScaling& s = rope_scaling;
    require(std::isfinite(s.factor) && s.factor >= 1.0f,
            "config: rope_scaling factor must be >= 1, got " + float_text(s.factor));
    require(std::isfinite(s.low_freq_factor) && s.low_freq_factor > 0.0f &&
                std::isfinite(s.high_freq_factor) && s.high_freq_factor > s.low_freq_factor,
            "config: rope_scaling needs 0 < low_freq_factor < high_freq_factor, got " + float_text(s.low_freq_factor) +
                " and " + float_text(s.high_freq_factor));
    require_positive(s.original_max_position_embeddings, "rope_scaling original_max_position_embeddings");
  }
}

std::vector<float> LlamaConfig::rope_inv_freq() const {
  // Each operation as transformers' float32 tensors do it (modeling_rope_utils.py), so the angles are its angles:
  // inv_freq = 1 / theta ** (arange(0, HS, 2) / HS)
  const int half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(rope_theta, exponent);
  }
  if (rope_scaling.kind != RopeScaling::Kind::Llama3) return inv_freq;
  // Llama 3: wavelengths beyond the original context are slowed by `factor`, those below
  // original / high_freq_factor kept, and those between blended smoothly.
  const RopeScaling& s = rope_scaling;
  const float old_len = static_cast<float>(s.original_max_position_embeddings);
  const float low_freq_wavelen = old_len / s.low_freq_factor;
  const float high_freq_wavelen = old_len / s.high_freq_factor;
  const float two_pi = static_cast<float>(2.0 * M_PI);
  for (float& f : inv_freq) {
    const float wavelen = two_pi / f;
    const float scaled = wavelen > low_freq_wavelen ? f / s.factor : f;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (medium) {
      const float smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = (1.0f - smooth) * scaled / s.factor + smooth * scaled;
    } else {
      f = scaled;
    }
  }
  return inv_freq;
}

}  // namespace kvcache
