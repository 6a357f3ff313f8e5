// GPT2Model: forward(tokens, cache) -> logits, for prefill (many tokens per row) and decode (one per row).
#pragma once

#include <memory>
#include <vector>
#include <xtensor/xtensor.hpp>

#include "config.h"
#include "kv_cache.h"
#include "weights.h"

namespace kvcache {

// Activations of one forward pass. Buffers only grow (reserve), so steady-state decode allocates nothing.
struct Workspace {
  xt::xtensor<float, 2> x;        // (N, C)  residual stream
  xt::xtensor<float, 2> ln;       // (N, C)  layernorm output
  xt::xtensor<float, 2> qkv;      // (N, 3C)
  xt::xtensor<float, 2> att;      // (N, C)  attention output, heads side by side
  xt::xtensor<float, 2> fc;       // (N, 4C) MLP hidden
  xt::xtensor<float, 2> last;     // (rows, C) final layernorm of the rows whose logits are wanted
  xt::xtensor<float, 2> logits;   // (rows, V)
  xt::xtensor<float, 2> scratch;  // (threads, attention_scratch_floats) attention scores and packed K, V
  xt::xtensor<float, 1> matmul_scratch;  // a prefill's packed rows (+ 16/8-bit weights widened to panels)
  std::vector<int> positions;     // (N)

  // n_tokens activations rows, n_logits logits rows, attention over up to max_seq_len positions.
  void reserve(const GPT2Weights& weights, int n_tokens, int n_logits, int max_seq_len);
};

class GPT2Model {
 public:
  explicit GPT2Model(std::unique_ptr<GPT2Weights> weights);

  const GPT2Config& config() const { return config_; }
  GPT2Weights& weights() { return *weights_; }
  const GPT2Weights& weights() const { return *weights_; }

  KVCache new_cache(int batch_size, int max_seq_len, KVType type = KVType::F32) const;

  // tokens (n_rows, T), row-major; input row r continues cache row cache_rows[r] at its current length, and the
  // cache lengths advance by T. Logits land in ws.logits: (n_rows * T, V) with all_logits, else (n_rows, V) for
  // each row's last token only. Everything is validated before the cache is touched; throws
  // std::invalid_argument on a foreign cache, token ids outside the vocabulary or a cache overflow.
  void forward(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
               bool all_logits) const;

  // Throws unless this model made the cache (new_cache); checked before anything else about a cache, as no
  // other fix makes a foreign cache work.
  void check_owns(const KVCache& cache) const;

 private:
  void validate(const int* tokens, int n_rows, int T, const int* cache_rows, const KVCache& cache) const;

  std::unique_ptr<GPT2Weights> weights_;
  GPT2Config config_;
};

}  // namespace kvcache
