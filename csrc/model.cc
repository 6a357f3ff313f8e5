#include "model.h"

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <string>

#include "errors.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "layers.h"
#include "threading.h"

namespace kvcache {

using std::size_t;

namespace {
// Resizes a 2-D buffer only when it must grow, keeping steady-state passes allocation-free.
void grow(xt::xtensor<float, 2>& t, int rows, int cols) {
  if (t.shape(0) < static_cast<size_t>(rows) || t.shape(1) != static_cast<size_t>(cols)) {
    t.resize({static_cast<size_t>(rows), static_cast<size_t>(cols)});
  }
}
}  // namespace

void Workspace::reserve(const GPT2Weights& weights, int n_tokens, int n_logits, int max_seq_len) {
  const GPT2Config& config = weights.config();
  const int C = config.n_embd;
  grow(x, n_tokens, C);
  grow(ln, n_tokens, C);
  grow(qkv, n_tokens, 3 * C);
  grow(att, n_tokens, C);
  grow(fc, n_tokens, 4 * C);
  grow(last, n_logits, C);
  grow(logits, n_logits, config.n_vocab);
  // attention scores: one row per thread when decoding, a (T, max_seq_len) block per thread in prefill
  const int T = std::min(n_tokens, max_seq_len);
  grow(scratch, omp_get_max_threads(), static_cast<int>(attention_scratch_floats(T, max_seq_len, config.head_dim())));
  // the largest any product of this pass needs (none for a decode step): the layers' widest input, mlp_proj's 4C
  // (every layer matrix has the same storage), or the lm_head's
  const auto scratch_floats = static_cast<size_t>(
      std::max(kernels::matmul_scratch_size(weights.h[0].mlp_proj, n_tokens, 4 * C),
               kernels::matmul_scratch_size(weights.lm_head_matrix, n_logits, C)));
  if (matmul_scratch.size() < scratch_floats) matmul_scratch.resize({scratch_floats});
  if (positions.size() < static_cast<size_t>(n_tokens)) positions.resize(n_tokens);
}

GPT2Model::GPT2Model(std::unique_ptr<GPT2Weights> weights)
    : weights_(std::move(weights)), config_(weights_->config()) {}

KVCache GPT2Model::new_cache(int batch_size, int max_seq_len, KVType type) const {
  return KVCache(config_, batch_size, max_seq_len, this, type);
}

void GPT2Model::check_owns(const KVCache& cache) const {
  if (cache.owner() != this) fail("the KV cache was created by another model; make one with this model's new_cache()");
}

void GPT2Model::validate(const int* tokens, int n_rows, int T, const int* cache_rows, const KVCache& cache) const {
  // Plain ifs, not require(): the messages are built only on failure, so a decode step allocates nothing.
  check_owns(cache);
  if (n_rows < 1 || T < 1) {
    fail("forward needs at least one row and one token, got " + std::to_string(n_rows) + " x " + std::to_string(T));
  }
  if (n_rows > cache.batch_size()) {
    fail("forward of " + std::to_string(n_rows) + " rows on a cache of batch_size " +
         std::to_string(cache.batch_size()));
  }
  for (int r = 0; r < n_rows; ++r) {
    if (cache_rows[r] < 0 || cache_rows[r] >= cache.batch_size()) {
      fail("cache row " + std::to_string(cache_rows[r]) + " outside batch_size " + std::to_string(cache.batch_size()));
    }
    cache.check_room(cache_rows[r], T);
  }
  for (long i = 0; i < static_cast<long>(n_rows) * T; ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.n_vocab) {
      fail("token id " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " +
           std::to_string(config_.n_vocab) + ")");
    }
  }
}

void GPT2Model::forward(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
                        bool all_logits) const {
  const KVCache::Hold hold(cache);  // before validating: another call could change the lengths checked
  validate(tokens, n_rows, T, cache_rows, cache);
  apply_num_threads();
  const GPT2Config& cfg = config_;
  const GPT2Weights& w = *weights_;
  const int N = n_rows * T, C = cfg.n_embd, NH = cfg.n_head, HS = cfg.head_dim();
  const int n_logits = all_logits ? N : n_rows;
  ws.reserve(w, N, n_logits, cache.max_seq_len());

  for (int r = 0; r < n_rows; ++r) {
    for (int t = 0; t < T; ++t) ws.positions[r * T + t] = cache.seq_len(cache_rows[r]) + t;
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
    attention_forward(ws.att.data(), ws.qkv.data(), cache, l, cache_rows, n_rows, T, NH, HS, ws.scratch.data());
    linear(x, ws.att.data(), lw.attn_proj, lw.attn_proj_b, C, C, true);
    // x = x + mlp(ln_2(x))
    layernorm_forward(ws.ln.data(), x, lw.ln_2_w, lw.ln_2_b, N, C, cfg.eps);
    linear(ws.fc.data(), ws.ln.data(), lw.c_fc, lw.c_fc_b, C, 4 * C, false);
    gelu_forward(ws.fc.data(), static_cast<long>(N) * 4 * C);
    linear(x, ws.fc.data(), lw.mlp_proj, lw.mlp_proj_b, 4 * C, C, true);
  }
  for (int r = 0; r < n_rows; ++r) cache.advance(cache_rows[r], T);

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
