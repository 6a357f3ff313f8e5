// KVCache: the keys and values of every past position, in one contiguous buffer allocated once.
//
// Layout, row-major:  (L, 2, B, NH, max_seq_len, HS)   [layer][K=0 / V=1][batch row][head][position][channel]
// so the keys of one (layer, row, head) are a dense (max_seq_len, HS) matrix that attention streams through.
// Prefill writes a prompt's K/V once; each decode step writes one position per row. Each batch row keeps its
// own length, so prompts of different lengths share a cache. Nothing is ever reallocated, concatenated or
// wrapped: writing past max_seq_len throws.
//   nbytes = 2 x L x B x NH x max_seq_len x HS x 4  (= 2 x L x B x max_seq_len x C x 4)
#pragma once

#include <cstddef>
#include <vector>
#include <xtensor/xtensor.hpp>

#include "config.h"

namespace kvcache {

class KVCache {
 public:
  // owner identifies the model the cache belongs to; a cache is only valid with the model that made it.
  KVCache(const GPT2Config& config, int batch_size, int max_seq_len, const void* owner);

  int batch_size() const { return batch_size_; }
  int max_seq_len() const { return max_seq_len_; }
  int n_layer() const { return n_layer_; }
  const void* owner() const { return owner_; }
  std::size_t nbytes() const { return data_.size() * sizeof(float); }

  // (max_seq_len, HS) blocks of keys / values for one layer, batch row and head.
  float* keys(int layer, int row, int head) { return block(layer, 0, row, head); }
  float* values(int layer, int row, int head) { return block(layer, 1, row, head); }

  int seq_len(int row) const { return seq_lens_[row]; }
  const std::vector<int>& seq_lens() const { return seq_lens_; }
  // Throws std::invalid_argument when the row would exceed max_seq_len.
  void check_room(int row, int n_new) const;
  void advance(int row, int n_new);
  void reset();                        // every row back to length 0; memory is kept
  void reset_row(int row);
  void crop(int max_length);           // drop positions >= max_length in every row

 private:
  float* block(int layer, int kv, int row, int head) {
    return &data_(static_cast<std::size_t>(layer), static_cast<std::size_t>(kv), static_cast<std::size_t>(row),
                  static_cast<std::size_t>(head), 0, 0);
  }

  int n_layer_, batch_size_, max_seq_len_;
  const void* owner_;
  xt::xtensor<float, 6> data_;
  std::vector<int> seq_lens_;  // explicit length per row, never inferred from contents
};

}  // namespace kvcache
