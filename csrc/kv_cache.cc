#include "kv_cache.h"

#include <algorithm>
#include <array>
#include <string>

#include "errors.h"
#include "huge_pages.h"

namespace kvcache {

KVCache::KVCache(const CacheShape& config, int batch_size, int max_seq_len, const void* owner, KVType type)
    : n_layer_(config.n_layer),
      n_kv_head_(config.n_kv_head),
      head_dim_(config.head_dim),
      batch_size_(batch_size), max_seq_len_(max_seq_len), owner_(owner), type_(type) {
  require(batch_size >= 1, "cache batch_size must be >= 1, got " + std::to_string(batch_size));
  require(max_seq_len >= 1 && max_seq_len <= config.n_ctx,
          "cache max_seq_len must be in [1, n_ctx=" + std::to_string(config.n_ctx) + "], got " +
              std::to_string(max_seq_len));
  auto u = [](int v) { return static_cast<std::size_t>(v); };
  const std::array<std::size_t, 6> shape = {u(config.n_layer), 2, u(batch_size), u(config.n_kv_head), u(max_seq_len),
                                            u(config.head_dim)};
  // Zero-filled (the bits of +0 in every type) so that even a bug reading past a row's length could not see stale
  // data from another run. Huge pages are advised before the first write (huge_pages.h).
  if (type == KVType::F32) {
    f32_ = xt::xtensor<float, 6>::from_shape(shape);
    advise_huge_pages(f32_.data(), nbytes());
    std::fill(f32_.begin(), f32_.end(), 0.0f);
  } else {
    b16_ = xt::xtensor<uint16_t, 6>::from_shape(shape);
    advise_huge_pages(b16_.data(), nbytes());
    std::fill(b16_.begin(), b16_.end(), uint16_t{0});
  }
  seq_lens_.assign(batch_size, 0);
}

void KVCache::check_room(int row, int n_new) const {
  if (seq_lens_[row] + n_new > max_seq_len_) {
    fail("KV cache overflow: batch row " + std::to_string(row) + " holds " + std::to_string(seq_lens_[row]) +
         " positions and " + std::to_string(n_new) + " more would exceed max_seq_len=" +
         std::to_string(max_seq_len_));
  }
}

void KVCache::advance(int row, int n_new) {
  check_room(row, n_new);
  seq_lens_[row] += n_new;
}

void KVCache::reset() {
  const Hold hold(*this, "reset");
  std::fill(seq_lens_.begin(), seq_lens_.end(), 0);
}

void KVCache::reset_row(int row) { seq_lens_[row] = 0; }

void KVCache::crop(int max_length) {
  require(max_length >= 0, "crop length must be >= 0, got " + std::to_string(max_length));
  const Hold hold(*this, "crop");
  for (int& len : seq_lens_) len = std::min(len, max_length);
}

KVCache::Hold::Hold(KVCache& cache, const char* what) : cache_(cache) {
  if (cache.held_->exchange(true, std::memory_order_acquire)) {
    fail(std::string("cannot ") + what + " the KV cache: it is in use by a forward pass on another thread; a KV "
         "cache serves one call at a time (give each thread its own cache)");
  }
}

}  // namespace kvcache
