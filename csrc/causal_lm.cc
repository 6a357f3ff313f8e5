#include "causal_lm.h"

#include <omp.h>

#include <algorithm>
#include <string>

#include "errors.h"
#include "layers.h"
#include "threading.h"

namespace kvcache {

void CausalLM::check_owns(const KVCache& cache) const {
  if (cache.owner() != this) fail("the KV cache was created by another model; make one with this model's new_cache()");
}

void CausalLM::validate(const int* tokens, int n_rows, int T, const int* cache_rows, const KVCache& cache) const {
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
  const int V = n_vocab();
  for (long i = 0; i < static_cast<long>(n_rows) * T; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) {
      fail("token id " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
    }
  }
}

void CausalLM::reserve_shared(Workspace& ws, int n_tokens, int n_logits, int max_seq_len, int C, int V, int NH,
                              int HS) {
  grow(ws.x, n_tokens, C);
  grow(ws.ln, n_tokens, C);
  grow(ws.last, n_logits, C);
  grow(ws.logits, n_logits, V);
  // attention scores: one row per thread when decoding, a (T, max_seq_len) block per thread in prefill
  const int T = std::min(n_tokens, max_seq_len);
  grow(ws.scratch, omp_get_max_threads(), static_cast<int>(attention_scratch_floats(T, max_seq_len, HS)));
  // split attention runs only below the prefill path: fewer than kBlockAttentionMin tokens per row
  const int queries = std::min(n_tokens, (kBlockAttentionMin - 1) * n_logits);
  grow(ws.attn_partials, static_cast<std::size_t>(attention_partials_floats(queries, NH, HS, max_seq_len)));
  if (ws.positions.size() < static_cast<std::size_t>(n_tokens)) ws.positions.resize(n_tokens);
}

void CausalLM::forward(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
                       bool all_logits) const {
  const KVCache::Hold hold(cache);  // before validating: another call could change the lengths checked
  validate(tokens, n_rows, T, cache_rows, cache);
  apply_num_threads();
  const int N = n_rows * T;
  reserve(ws, N, all_logits ? N : n_rows, cache.max_seq_len());
  for (int r = 0; r < n_rows; ++r) {
    for (int t = 0; t < T; ++t) ws.positions[r * T + t] = cache.seq_len(cache_rows[r]) + t;
  }
  compute(tokens, n_rows, T, cache_rows, cache, ws, all_logits);
  for (int r = 0; r < n_rows; ++r) cache.advance(cache_rows[r], T);
}

}  // namespace kvcache
