#include "llama_model.h"

#include <algorithm>
#include <cstddef>

#include "kernels/matmul.h"

namespace kvcache {

using std::size_t;

LlamaModel::LlamaModel(std::unique_ptr<LlamaWeights> weights)
    : weights_(std::move(weights)),
      heads_{config().n_head, config().n_kv_head, config().head_dim},
      inv_freq_(config().rope_inv_freq()) {}

std::vector<float> LlamaModel::rotary_table(int n) const {
  std::vector<int> positions(n);
  for (int p = 0; p < n; ++p) positions[p] = p;
  std::vector<float> table(static_cast<size_t>(n) * config().head_dim);
  rope_table(table.data(), positions.data(), inv_freq_.data(), n, config().head_dim);
  return table;
}

void LlamaModel::reserve(Workspace& ws, int n_tokens, int n_logits, int max_seq_len) const {
  const LlamaConfig& c = config();
  const LlamaWeights& w = *weights_;
  const int C = c.n_embd, D = c.n_head * c.head_dim, F = c.n_ff;
  reserve_shared(ws, n_tokens, n_logits, max_seq_len, C, c.n_vocab, c.n_head, c.head_dim);
  grow(ws.qkv, n_tokens, heads_.qkv_width());
  grow(ws.att, n_tokens, D);
  grow(ws.fc, n_tokens, 2 * F);
  grow(ws.hidden, n_tokens, F);
  grow(ws.rope, n_tokens, c.head_dim);
  const LlamaLayerWeights& l0 = w.layers[0];  // every layer's matrices have the same storage
  const long widest = std::max({kernels::matmul_scratch_size(l0.qkv, n_tokens, C),
                                kernels::matmul_scratch_size(l0.o_proj, n_tokens, D),
                                kernels::matmul_scratch_size(l0.gate_up, n_tokens, C),
                                kernels::matmul_scratch_size(l0.down, n_tokens, F),
                                kernels::matmul_scratch_size(w.lm_head, n_logits, C)});
  grow(ws.matmul_scratch, static_cast<size_t>(widest));
}

void LlamaModel::compute(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
                         bool all_logits) const {
  const LlamaConfig& c = config();
  const LlamaWeights& w = *weights_;
  const int N = n_rows * T, C = c.n_embd, D = c.n_head * c.head_dim, F = c.n_ff, W = heads_.qkv_width();
  const int n_logits = all_logits ? N : n_rows;

  float* x = ws.x.data();
  embedding_lookup(x, tokens, w.embed, N, C);
  rope_table(ws.rope.data(), ws.positions.data(), inv_freq_.data(), N, c.head_dim);  // shared by every layer

  // out (N, OC) (+)= in (N, K) @ weight^T + bias
  auto linear = [&](float* out, const float* in, const Matrix& weight, const float* bias, int K, int OC, bool add) {
    kernels::matmul(out, in, weight, bias, N, K, OC, add, ws.matmul_scratch.data());
  };
  for (int l = 0; l < c.n_layer; ++l) {
    const LlamaLayerWeights& lw = w.layers[l];
    // x = x + o_proj(attn(rope(qkv(rmsnorm(x)))))
    rmsnorm_forward(ws.ln.data(), x, lw.attn_norm, N, C, c.eps);
    linear(ws.qkv.data(), ws.ln.data(), lw.qkv, lw.qkv_b, C, W, false);
    rope_forward(ws.qkv.data(), ws.rope.data(), N, heads_);
    attention_forward(ws.att.data(), ws.qkv.data(), cache, l, cache_rows, n_rows, T, heads_, ws.scratch.data(),
                      ws.attn_partials.data());
    linear(x, ws.att.data(), lw.o_proj, lw.o_b, D, C, true);
    // x = x + down(silu(gate(h)) * up(h)), h = rmsnorm(x)
    rmsnorm_forward(ws.ln.data(), x, lw.mlp_norm, N, C, c.eps);
    linear(ws.fc.data(), ws.ln.data(), lw.gate_up, lw.gate_up_b, C, 2 * F, false);
    swiglu_forward(ws.hidden.data(), ws.fc.data(), N, F);
    linear(x, ws.hidden.data(), lw.down, lw.down_b, F, C, true);
  }

  // logits = norm(x) @ lm_head^T, for every position or only each row's last one
  if (all_logits) {
    rmsnorm_forward(ws.last.data(), x, w.norm, N, C, c.eps);
  } else {
    for (int r = 0; r < n_rows; ++r) {
      rmsnorm_forward(ws.last.data() + static_cast<size_t>(r) * C, x + static_cast<size_t>(r * T + T - 1) * C, w.norm,
                      1, C, c.eps);
    }
  }
  kernels::matmul(ws.logits.data(), ws.last.data(), w.lm_head, nullptr, n_logits, C, c.n_vocab, false,
                  ws.matmul_scratch.data());
}

}  // namespace kvcache
