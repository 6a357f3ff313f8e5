#include "model.h"

#include <algorithm>
#include <cstddef>

#include "kernels/matmul.h"
#include "layers.h"

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

GPT2Model::GPT2Model(std::unique_ptr<GPT2Weights> weights)
    : weights_(std::move(weights)), config_(weights_->config()) {}

void GPT2Model::compute(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
                        bool all_logits) const {
  const GPT2Config& cfg = config_;
  const GPT2Weights& w = *weights_;
  const int N = n_rows * T, C = cfg.n_embd;
  const AttentionShape heads{cfg.n_head, cfg.n_head, cfg.head_dim()};
  const int n_logits = all_logits ? N : n_rows;

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
