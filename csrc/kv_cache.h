// KVCache: the keys and values of every past position, in one contiguous buffer allocated once.
//
// Layout, row-major:  (L, 2, B, NKV, max_seq_len, HS)   [layer][K=0 / V=1][batch row][kv head][position][channel]
// so the keys of one (layer, row, head) are a dense (max_seq_len, HS) matrix that attention streams through.
// NKV is the number of key/value heads: n_head for GPT-2, fewer under grouped-query attention (LLaMA family), where
// each group of n_head / NKV query heads reads one stored head; heads are never expanded.
// Prefill writes a prompt's K/V once; each decode step writes one position per row. Each batch row keeps its
// own length, so prompts of different lengths share a cache. Nothing is ever reallocated, concatenated or
// wrapped: writing past max_seq_len throws.
// The values are stored as float32, or in 16 bits (IEEE float16 or bfloat16, kernels/float16.h) to halve the bytes
// that attention reads at every decode step; attention converts them back to float32 in registers.
//   nbytes = 2 x L x B x NKV x max_seq_len x HS x bytes, bytes = 4 or 2
//
// A windowed cache (CacheWindow: a sliding window with attention sinks, StreamingLLM) never overflows: when a row is
// full and a token comes, evict() drops the evict_chunk oldest positions after the sinks and moves the rest down,
// so positions stay assigned by place in the cache (0 .. max_seq_len - 1), whatever the length generated. The keys
// are stored after their rotary embedding, so each moved key is rotated by the angle between its old and its new
// position (llama.cpp's context shift): the model gives the cos and sin of every position's angles at creation.
#pragma once

#include <atomic>
#include <cassert>
#include <cstddef>
#include <memory>
#include <vector>
#include <xtensor/xtensor.hpp>

#include "kernels/half.h"

namespace kvcache {

enum class KVType { F32, F16, BF16 };

inline const char* kv_type_label(KVType type) {
  return type == KVType::F32 ? "float32" : type == KVType::F16 ? "float16" : "bfloat16";
}

// A sliding window with attention sinks. window == 0: a dense cache (the default). Otherwise max_seq_len = sinks +
// window: the first `sinks` positions of a row are kept forever, and when a row is full the evict_chunk oldest
// positions after them are evicted at once (1 <= evict_chunk <= window), making room for that many tokens.
constexpr int kMaxShiftHeadDim = 1024;  // head_dim bound of a windowed cache (evict's row buffer)

struct CacheWindow {
  int sinks = 0;
  int window = 0;
  int evict_chunk = 1;
  bool enabled() const { return window > 0; }
};

class CrossCache;  // cross_cache.h: an encoder-decoder call's cross-attention keys and values

// What a model's cache holds per position: n_layer x 2 x n_kv_head x head_dim values; n_ctx bounds max_seq_len.
struct CacheShape {
  int n_layer, n_kv_head, head_dim, n_ctx;
};

class KVCache {
 public:
  // owner identifies the model the cache belongs to; a cache is only valid with the model that made it.
  KVCache(const CacheShape& shape, int batch_size, int max_seq_len, const void* owner, KVType type = KVType::F32);
  // A windowed cache. rotary: (max_seq_len, HS) cos then sin of the rotary angles of positions 0 .. max_seq_len - 1
  // (rope_table's layout, the rotate-half convention), with which evict() moves keys to their new positions.
  KVCache(const CacheShape& shape, int batch_size, int max_seq_len, const void* owner, KVType type,
          const CacheWindow& window, std::vector<float> rotary);

  int batch_size() const { return batch_size_; }
  int max_seq_len() const { return max_seq_len_; }
  int n_layer() const { return n_layer_; }
  int n_kv_head() const { return n_kv_head_; }
  int head_dim() const { return head_dim_; }
  const void* owner() const { return owner_; }
  KVType type() const { return type_; }
  std::size_t element_bytes() const { return type_ == KVType::F32 ? 4 : 2; }
  std::size_t nbytes() const { return (f32_.size() + b16_.size()) * element_bytes(); }

  // (max_seq_len, HS) blocks of keys / values for one layer, batch row and head, as E: float (F32), Half (F16) or
  // uint16_t (BF16), the cache's type.
  template <class E>
  E* keys(int layer, int row, int head) { return block<E>(layer, 0, row, head); }
  template <class E>
  E* values(int layer, int row, int head) { return block<E>(layer, 1, row, head); }

  int seq_len(int row) const { return seq_lens_[row]; }
  const std::vector<int>& seq_lens() const { return seq_lens_; }
  // Throws std::invalid_argument when the row would exceed max_seq_len (a windowed cache evicts instead: forward()
  // never asks it; append_positions does).
  void check_room(int row, int n_new) const;
  void advance(int row, int n_new);
  void reset();                        // every row back to length 0; memory is kept
  void reset_row(int row);
  void crop(int max_length);           // drop positions >= max_length in every row
  void crop_row(int row, int max_length);

  // The per-row operations that reuse computed keys and values instead of recomputing them (fan-out, beams,
  // prefix caching, sessions; llama.cpp's seq_cp / seq_rm). Each checks its rows, lengths, and that both caches
  // belong to one model and store one type, before anything is written.
  // Row dst of dst (this cache or another) becomes a copy of row src: its filled positions only.
  void copy_row(int src, KVCache& dst, int dst_row);
  // A new cache of the same model, size and type holding the same positions.
  KVCache clone() const;
  // Positions [start, start + n) of a row packed as (L, 2, NKV, n, HS) elements of the cache's type (float32, or
  // the 16 bits of float16 / bfloat16) into out, element_bytes() each.
  void read_positions(int row, int start, int n, void* out) const;
  // Throws unless row is a row of the cache and [start, start + n) positions it holds.
  void check_positions(int row, int start, int n) const;
  // The same packing of n positions appended at the row's end; the row's length advances by n.
  void append_positions(int row, int n, const void* in);

  // The sliding window (window().enabled() false for a dense cache), and the tokens each row has evicted since it
  // was last reset.
  const CacheWindow& window() const { return window_; }
  bool windowed() const { return window_.enabled(); }
  long evicted(int row) const { return evicted_[row]; }
  // Evicts positions [sinks, sinks + n) of a row: the later ones move down by n, their keys rotated to their new
  // positions, and the row's length falls by n. Throws unless the cache is windowed and the row holds sinks + n
  // positions. Allocates nothing (a decode step calls it).
  void evict(int row, int n);

  // The cross-attention K/V beside the self-attention ones (transformers' EncoderDecoderCache), or none. Computed
  // once per call from the encoder states by the model that reads them; shared, not copied, by copies of the cache.
  CrossCache* cross() const { return cross_.get(); }
  void set_cross(std::shared_ptr<CrossCache> cross) { cross_ = std::move(cross); }

  // One call at a time: a forward pass holds the cache from start to end (the Python layer releases the GIL, so two
  // threads could otherwise write one cache at once: corrupt keys, lengths advanced twice, a crashed process).
  // Claiming a cache that is held throws std::invalid_argument instead; reset and crop claim it too (a check
  // alone could pass just before a forward on another thread claims it). what: the action, for the message.
  class Hold {
   public:
    explicit Hold(KVCache& cache, const char* what = "run a forward pass on");
    ~Hold() { cache_.held_->store(false, std::memory_order_release); }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    KVCache& cache_;
  };

 private:
  template <class E>
  E* block(int layer, int kv, int row, int head);
  // A (max_seq_len, HS) block as bytes, whatever the type.
  std::byte* raw_block(int layer, int kv, int row, int head);
  const std::byte* raw_block(int layer, int kv, int row, int head) const {
    return const_cast<KVCache*>(this)->raw_block(layer, kv, row, head);
  }
  void check_row(int row, const char* what) const;
  template <class E>
  void evict_typed(int row, int n);
  // fn(layer, kv, head) for every (max_seq_len, HS) block of a row, in the (L, 2, NKV) order of read_positions.
  template <class Fn>
  void for_each_block(Fn fn) const {
    for (int l = 0; l < n_layer_; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        for (int h = 0; h < n_kv_head_; ++h) fn(l, kv, h);
      }
    }
  }

  int n_layer_, n_kv_head_, head_dim_, batch_size_, max_seq_len_;
  const void* owner_;
  KVType type_;
  // One of the two holds the cache, the other is empty. Half and bfloat16 values are both stored as their bits.
  xt::xtensor<float, 6> f32_;
  xt::xtensor<uint16_t, 6> b16_;
  std::vector<int> seq_lens_;  // explicit length per row, never inferred from contents
  CacheWindow window_;
  std::vector<float> rotary_;  // windowed: (max_seq_len, HS) cos, sin of each position's rotary angles
  std::vector<long> evicted_;  // per row: tokens evicted since the last reset
  std::shared_ptr<CrossCache> cross_;
  // Behind a pointer so that the cache stays movable; allocated once, with the cache.
  std::unique_ptr<std::atomic<bool>> held_ = std::make_unique<std::atomic<bool>>(false);

};

// The element type must be the cache's (asserted in debug builds): attention picks it from type() once per call.
template <>
inline float* KVCache::block<float>(int layer, int kv, int row, int head) {
  assert(type_ == KVType::F32);
  return &f32_(static_cast<std::size_t>(layer), static_cast<std::size_t>(kv), static_cast<std::size_t>(row),
               static_cast<std::size_t>(head), 0, 0);
}
template <>
inline uint16_t* KVCache::block<uint16_t>(int layer, int kv, int row, int head) {
  assert(type_ != KVType::F32);
  return &b16_(static_cast<std::size_t>(layer), static_cast<std::size_t>(kv), static_cast<std::size_t>(row),
               static_cast<std::size_t>(head), 0, 0);
}
template <>
inline Half* KVCache::block<Half>(int layer, int kv, int row, int head) {
  assert(type_ == KVType::F16);
  // Half is a struct of one uint16_t: its values are read and written with memcpy only (float16.h)
  return reinterpret_cast<Half*>(block<uint16_t>(layer, kv, row, head));
}

}  // namespace kvcache
