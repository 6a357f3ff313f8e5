// CausalLM: the seam between the engine and a model family. GPT-2 (model.h) and LLaMA (llama_model.h) implement
// it; the Generator, the bindings and the cache see only this. A model owns the shape of its cache
// (cache_shape: n_kv_head heads of head_dim per layer) and computes logits for new tokens over it.
#pragma once

#include <vector>

#include "kv_cache.h"
#include "workspace.h"

namespace kvcache {

class CausalLM {
 public:
  virtual ~CausalLM() = default;

  virtual int n_vocab() const = 0;
  virtual int n_ctx() const = 0;
  virtual CacheShape cache_shape() const = 0;

  // A dense cache, or with window.enabled() a sliding window with attention sinks (kv_cache.h), refused by a family
  // whose keys cannot move to another position.
  KVCache new_cache(int batch_size, int max_seq_len, KVType type = KVType::F32, const CacheWindow& window = {}) const {
    if (!window.enabled()) return KVCache(cache_shape(), batch_size, max_seq_len, this, type);
    std::vector<float> rotary = rotary_table(max_seq_len >= 1 && max_seq_len <= n_ctx() ? max_seq_len : 0);
    return KVCache(cache_shape(), batch_size, max_seq_len, this, type, window, std::move(rotary));
  }

  // (n, head_dim): the cos then the sin of the rotary angles of positions 0 .. n-1, with which a windowed cache
  // rotates the keys it moves. Throws std::invalid_argument, saying why, for a family whose cached keys and values
  // cannot be moved to another position.
  virtual std::vector<float> rotary_table(int n) const = 0;

  // Sizes ws for passes of up to n_tokens activation rows, n_logits logits rows, and attention over max_seq_len.
  virtual void reserve(Workspace& ws, int n_tokens, int n_logits, int max_seq_len) const = 0;

  // tokens (n_rows, T), row-major; input row r continues cache row cache_rows[r] at its current length, and the
  // cache lengths advance by T. On a windowed cache a row that is full when a token comes first evicts
  // evict_chunk positions (KVCache::evict), token by token: a row is fed in pieces that end where it fills, so T
  // tokens at once leave the cache as T single steps would. Logits land in ws.logits: (n_rows * T, V) with
  // all_logits, else (n_rows, V) for each row's last token only. Everything is validated before the cache is
  // touched; throws std::invalid_argument on a foreign cache, token ids outside the vocabulary or a cache overflow.
  void forward(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
               bool all_logits) const;

  // Throws unless this model made the cache (new_cache); checked before anything else about a cache, as no
  // other fix makes a foreign cache work.
  void check_owns(const KVCache& cache) const;

  // Bytes a decode step reads of the weights: the matrices in their storage type, norms and biases in float32.
  virtual std::size_t weights_nbytes() const = 0;

 protected:
  // The buffers every family's reserve() sizes alike: the residual stream and its norm (C wide), the logits rows
  // (V wide), positions, and attention's scratch and split-decode partials for NH query heads of HS channels.
  static void reserve_shared(Workspace& ws, int n_tokens, int n_logits, int max_seq_len, int C, int V, int NH,
                             int HS);

  // The family's layers, after forward() has validated the call, reserved ws and filled ws.positions.
  virtual void compute(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
                       bool all_logits) const = 0;

 private:
  void validate(const int* tokens, int n_rows, int T, const int* cache_rows, const KVCache& cache) const;
  // A windowed forward that must evict inside a row's tokens: row by row, piece by piece.
  void forward_in_pieces(const int* tokens, int n_rows, int T, const int* cache_rows, KVCache& cache, Workspace& ws,
                         bool all_logits) const;
};

}  // namespace kvcache
