#include "causal_lm.h"

#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

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
    if (!cache.windowed()) cache.check_room(cache_rows[r], T);
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
  if (cache.windowed()) {
    // One pass when every row has room, or is full and evicts once to make room for all T (a decode step);
    // otherwise the rows fill and evict inside their tokens.
    const int S = cache.max_seq_len(), C = cache.window().evict_chunk;
    bool one_pass = true;
    for (int r = 0; r < n_rows; ++r) {
      const int len = cache.seq_len(cache_rows[r]);
      one_pass = one_pass && (len + T <= S || (len == S && T <= C));
    }
    if (!one_pass) return forward_in_pieces(tokens, n_rows, T, cache_rows, cache, ws, all_logits);
    for (int r = 0; r < n_rows; ++r) {
      if (cache.seq_len(cache_rows[r]) + T > S) cache.evict(cache_rows[r], C);
    }
  }
  const int N = n_rows * T;
  reserve(ws, N, all_logits ? N : n_rows, cache.max_seq_len());
  for (int r = 0; r < n_rows; ++r) {
    for (int t = 0; t < T; ++t) ws.positions[r * T + t] = cache.seq_len(cache_rows[r]) + t;
  }
  compute(tokens, n_rows, T, cache_rows, cache, ws, all_logits);
  for (int r = 0; r < n_rows; ++r) cache.advance(cache_rows[r], T);
}

void CausalLM::forward_in_pieces(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache,
                                 Workspace& ws, bool all_logits) const {
  const int S = cache.max_seq_len(), C = cache.window().evict_chunk, V = n_vocab();
  const std::size_t row_logits = static_cast<std::size_t>(all_logits ? T : 1) * V;
  std::vector<float> logits(n_rows * row_logits);  // pieces only come with several tokens: not a decode step
  const int widest = std::min(T, S);
  reserve(ws, widest, all_logits ? widest : 1, S);
  for (int r = 0; r < n_rows; ++r) {
    const int row = cache_rows[r];
    for (int t = 0; t < T;) {
      if (cache.seq_len(row) == S) cache.evict(row, C);
      const int len = cache.seq_len(row), n = std::min(T - t, S - len);
      for (int i = 0; i < n; ++i) ws.positions[i] = len + i;
      compute(tokens + static_cast<std::size_t>(r) * T + t, 1, n, &row, cache, ws, all_logits);
      cache.advance(row, n);
      const float* piece = ws.logits.data();
      if (all_logits) {
        std::copy(piece, piece + static_cast<std::size_t>(n) * V,
                  logits.data() + r * row_logits + static_cast<std::size_t>(t) * V);
      } else if (t + n == T) {
        std::copy(piece, piece + V, logits.data() + r * row_logits);
      }
      t += n;
    }
  }
  grow(ws.logits, static_cast<int>(n_rows * (all_logits ? T : 1)), V);
  std::copy(logits.begin(), logits.end(), ws.logits.data());
}

}  // namespace kvcache
