#include "model.h"

#include <algorithm>
#include <cstddef>

#include <cmath>
#include <memory>
#include <string>

#include "cross_attention.h"
#include "cross_cache.h"
#include "errors.h"
#include "kernels/matmul.h"
#include "layers.h"
#include "threading.h"

namespace kvcache {

using std::size_t;

void GPT2Model::reserve(Workspace& ws, int n_tokens, int n_logits, int max_seq_len) const {
  const GPT2Config& config = config_;
  const GPT2Weights& weights = *weights_;
  const int C = config.n_embd;
  reserve_shared(ws, n_tokens, n_logits, max_seq_len, C, config.n_vocab, config.n_head, config.head_dim());
  grow(ws.qkv, n_tokens, 3 * C);
  grow(ws.att, n_tokens, C);
  grow(ws.fc, n_tokens, 4 * C);
  // the largest any product of this pass needs (none for a decode step): the layers' widest input, mlp_proj's 4C
  // (every layer matrix has the same storage), or the lm_head's
  grow(ws.matmul_scratch,
       static_cast<size_t>(std::max(kernels::matmul_scratch_size(weights.h[0].mlp_proj, n_tokens, 4 * C),
                                    kernels::matmul_scratch_size(weights.lm_head_matrix, n_logits, C))));
}

std::vector<float> GPT2Model::rotary_table(int) const {
  fail("GPT-2 cannot have a sliding-window cache: its positions are learned absolute embeddings (wpe) added to the "
       "token embeddings before the first layer, so every cached key and value of every layer was computed from its "
       "absolute position, and no operation on the cache turns them into those of another position (a RoPE model's "
       "keys can be rotated to a new position: the LLaMA family takes window= and sinks=). Keep generations within "
       "n_ctx=" + std::to_string(config_.n_ctx) + " with a dense cache");
}

GPT2Model::GPT2Model(std::unique_ptr<GPT2Weights> weights)
    : weights_(std::move(weights)), config_(weights_->config()) {}

void GPT2Model::set_encoder_states(KVCache& cache, const float* states, int B, int S, int C) const {
  check_owns(cache);
  const GPT2Config& cfg = config_;
  require(cfg.add_cross_attention,
          "this GPT-2 checkpoint has no cross-attention (add_cross_attention=False): it takes no encoder states");
  require(B == cache.batch_size(), "encoder states of batch " + std::to_string(B) + " for a cache of batch_size " +
                                       std::to_string(cache.batch_size()) + ": one encoder sequence per cache row");
  require(C == cfg.n_embd, "encoder states of width " + std::to_string(C) + ", the model's n_embd is " +
                               std::to_string(cfg.n_embd) + " (project them to n_embd first)");
  require(S >= 1, "encoder states need at least one position, got " + std::to_string(S));
  const long N = static_cast<long>(B) * S;
  for (long i = 0; i < N * C; ++i) {
    if (!std::isfinite(states[i])) {
      fail("encoder states hold a non-finite value (" + float_text(states[i]) + ") at batch row " +
           std::to_string(i / (static_cast<long>(S) * C)) + ", position " + std::to_string(i / C % S));
    }
  }
  const KVCache::Hold hold(cache, "set the encoder states of");
  apply_num_threads();
  const int NH = cfg.n_head, HS = cfg.head_dim();
  auto cross = std::make_shared<CrossCache>(cache_shape(), B, S, this);
  // k, v (B S, 2C) = states @ crossattention.c_attn + bias, layer by layer, then scattered into (row, head) blocks
  xt::xtensor<float, 1> kv = xt::xtensor<float, 1>::from_shape({static_cast<size_t>(N * 2 * C)});
  xt::xtensor<float, 1> scratch = xt::xtensor<float, 1>::from_shape(
      {static_cast<size_t>(kernels::matmul_scratch_size(weights_->h[0].cross_kv, N, C))});
  for (int l = 0; l < cfg.n_layer; ++l) {
    const LayerWeights& lw = weights_->h[l];
    kernels::matmul(kv.data(), states, lw.cross_kv, lw.cross_kv_b, static_cast<int>(N), C, 2 * C, false,
                    scratch.data());
#pragma omp parallel for if (B * NH > 1)
    for (int i = 0; i < B * NH; ++i) {
      const int b = i / NH, h = i % NH;
      float* keys = cross->keys(l, b, h);
      float* values = cross->values(l, b, h);
      for (int s = 0; s < S; ++s) {
        const float* src = kv.data() + (static_cast<size_t>(b) * S + s) * 2 * C;
        std::copy_n(src + h * HS, HS, keys + static_cast<size_t>(s) * HS);
        std::copy_n(src + C + h * HS, HS, values + static_cast<size_t>(s) * HS);
      }
    }
  }
  cache.set_cross(std::move(cross));
}

void GPT2Model::compute(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
                        bool all_logits) const {
  const GPT2Config& cfg = config_;
  const GPT2Weights& w = *weights_;
  const int N = n_rows * T, C = cfg.n_embd;
  const AttentionShape heads{cfg.n_head, cfg.n_head, cfg.head_dim()};
  const int n_logits = all_logits ? N : n_rows;
  // Cross-attention needs the encoder's keys and values, and only a model with cross-attention may read them. Plain
  // ifs: the messages are built only on failure, so a decode step allocates nothing.
  const CrossCache* cross = cache.cross();
  if (cfg.add_cross_attention && cross == nullptr) {
    fail("this GPT-2 checkpoint has cross-attention (add_cross_attention=True): pass encoder_hidden_states");
  }
  if (!cfg.add_cross_attention && cross != nullptr) {
    fail("the KV cache holds cross-attention keys and values, but this GPT-2 checkpoint has no cross-attention "
         "(add_cross_attention=False)");
  }
  if (cross != nullptr) {
    if (cross->owner() != this || cross->batch_size() != cache.batch_size()) {
      fail("the KV cache's cross-attention keys and values were computed by another model or for another batch");
    }
    // S is the cross cache's, which reserve() does not see: grown here, once per larger S, before any layer runs
    grow(ws.cross_scores, static_cast<size_t>(cross_attention_scratch_floats(cross->seq_len())));
  }

  float* x = ws.x.data();
  embedding_forward(x, tokens, ws.positions.data(), w.wte, w.wpe, N, C);

  // out (N, OC) (+)= in (N, K) @ weight + bias
  auto linear = [&](float* out, const float* in, const Matrix& weight, const float* bias, int K, int OC, bool add) {
    kernels::matmul(out, in, weight, bias, N, K, OC, add, ws.matmul_scratch.data());
  };
  for (int l = 0; l < cfg.n_layer; ++l) {
    const LayerWeights& lw = w.h[l];
    // x = x + attn(ln_1(x))
    layernorm_forward(ws.ln.data(), x, lw.ln_1_w, lw.ln_1_b, N, C, cfg.eps);
    linear(ws.qkv.data(), ws.ln.data(), lw.c_attn, lw.c_attn_b, C, 3 * C, false);
    attention_forward(ws.att.data(), ws.qkv.data(), cache, l, cache_rows, n_rows, T, heads, ws.scratch.data(),
                      ws.attn_partials.data());
    linear(x, ws.att.data(), lw.attn_proj, lw.attn_proj_b, C, C, true);
    if (cross != nullptr) {
      // x = x + crossattention(ln_cross_attn(x)): queries of the new tokens over the encoder's keys and values
      layernorm_forward(ws.ln.data(), x, lw.ln_cross_w, lw.ln_cross_b, N, C, cfg.eps);
      linear(ws.qkv.data(), ws.ln.data(), lw.cross_q, lw.cross_q_b, C, C, false);
      cross_attention_forward(ws.att.data(), ws.qkv.data(), *cross, l, cache_rows, n_rows, T, ws.cross_scores.data());
      linear(x, ws.att.data(), lw.cross_proj, lw.cross_proj_b, C, C, true);
    }
    // x = x + mlp(ln_2(x))
    layernorm_forward(ws.ln.data(), x, lw.ln_2_w, lw.ln_2_b, N, C, cfg.eps);
    linear(ws.fc.data(), ws.ln.data(), lw.c_fc, lw.c_fc_b, C, 4 * C, false);
    gelu_forward(ws.fc.data(), static_cast<long>(N) * 4 * C);
    linear(x, ws.fc.data(), lw.mlp_proj, lw.mlp_proj_b, 4 * C, C, true);
  }

  // logits = ln_f(x) @ wte^T, for every position or only each row's last one
  if (all_logits) {
    layernorm_forward(ws.last.data(), x, w.ln_f_w, w.ln_f_b, N, C, cfg.eps);
  } else {
    for (int r = 0; r < n_rows; ++r) {
      layernorm_forward(ws.last.data() + static_cast<size_t>(r) * C, x + static_cast<size_t>(r * T + T - 1) * C,
                        w.ln_f_w, w.ln_f_b, 1, C, cfg.eps);
    }
  }
  kernels::matmul(ws.logits.data(), ws.last.data(), w.lm_head_matrix, nullptr, n_logits, C, cfg.n_vocab, false,
                  ws.matmul_scratch.data());
}

}  // namespace kvcache
