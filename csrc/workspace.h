// Workspace: the activations of one forward pass, shared by every model family. Each model's reserve() sizes the
// buffers it uses; they only grow, so steady-state decode allocates nothing.
#pragma once

#include <cstddef>
#include <vector>
#include <xtensor/xtensor.hpp>

namespace kvcache {

struct Workspace {
  xt::xtensor<float, 2> x;        // (N, C)  residual stream
  xt::xtensor<float, 2> ln;       // (N, C)  normalised input of a block
  xt::xtensor<float, 2> qkv;      // (N, (NH + 2 NKV) HS)  queries, keys, values of the new tokens side by side
  xt::xtensor<float, 2> att;      // (N, NH HS)  attention output, heads side by side
  xt::xtensor<float, 2> fc;       // (N, F) MLP hidden (GPT-2: 4C; LLaMA: gate and up side by side, 2F)
  xt::xtensor<float, 2> hidden;   // (N, F)  LLaMA: silu(gate) * up
  xt::xtensor<float, 2> rope;     // (N, HS) LLaMA: cos then sin of each new position's rotary angles
  xt::xtensor<float, 2> last;     // (rows, C) final norm of the rows whose logits are wanted
  xt::xtensor<float, 2> logits;   // (rows, V)
  xt::xtensor<float, 2> scratch;  // (threads, attention_scratch_floats) attention scores and packed K, V
  xt::xtensor<float, 1> attn_partials;  // a decode step's split attention: (queries, NH, chunks, 2 + HS)
  xt::xtensor<float, 1> matmul_scratch;  // a prefill's packed rows (+ 16/8-bit weights widened to panels)
  xt::xtensor<float, 1> cross_scores;    // GPT-2 with cross-attention: (threads, S) scores over the encoder positions
  std::vector<int> positions;     // (N)
};

// Resizes a 2-D buffer only when it must grow, keeping steady-state passes allocation-free.
inline void grow(xt::xtensor<float, 2>& t, int rows, int cols) {
  if (t.shape(0) < static_cast<std::size_t>(rows) || t.shape(1) != static_cast<std::size_t>(cols)) {
    t.resize({static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)});
  }
}
inline void grow(xt::xtensor<float, 1>& t, std::size_t n) {
  if (t.size() < n) t.resize({n});
}

}  // namespace kvcache
