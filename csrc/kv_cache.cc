#include "kv_cache.h"

#include <algorithm>
#include <array>
#include <cstring>
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

void KVCache::check_row(int row, const char* what) const {
  if (row < 0 || row >= batch_size_) {
    fail(std::string(what) + " row " + std::to_string(row) + " is outside the cache's batch_size " +
         std::to_string(batch_size_));
  }
}

std::byte* KVCache::raw_block(int layer, int kv, int row, int head) {
  if (type_ == KVType::F32) return reinterpret_cast<std::byte*>(block<float>(layer, kv, row, head));
  return reinterpret_cast<std::byte*>(block<uint16_t>(layer, kv, row, head));
}

void KVCache::crop_row(int row, int max_length) {
  check_row(row, "crop");
  require(max_length >= 0, "crop length must be >= 0, got " + std::to_string(max_length));
  const Hold hold(*this, "crop");
  seq_lens_[row] = std::min(seq_lens_[row], max_length);
}

void KVCache::copy_row(int src, KVCache& dst, int dst_row) {
  check_row(src, "source");
  dst.check_row(dst_row, "destination");
  require(dst.owner_ == owner_, "cannot copy between the caches of two models");
  require(dst.type_ == type_, "cannot copy a " + std::string(kv_type_label(type_)) + " cache row into a " +
                                  kv_type_label(dst.type_) + " cache");
  const int n = seq_lens_[src];
  require(n <= dst.max_seq_len_, "row " + std::to_string(src) + " holds " + std::to_string(n) +
                                     " positions, more than the destination's max_seq_len=" +
                                     std::to_string(dst.max_seq_len_));
  const Hold hold(*this, "copy a row of");
  std::unique_ptr<Hold> dst_hold;
  if (&dst != this) dst_hold = std::make_unique<Hold>(dst, "copy a row into");
  if (&dst == this && dst_row == src) return;
  const std::size_t bytes = static_cast<std::size_t>(n) * head_dim_ * element_bytes();
  for_each_block([&](int l, int kv, int h) {
    std::memcpy(dst.raw_block(l, kv, dst_row, h), raw_block(l, kv, src, h), bytes);
  });
  dst.seq_lens_[dst_row] = n;
}

KVCache KVCache::clone() const {
  const Hold hold(const_cast<KVCache&>(*this), "copy");
  KVCache out(CacheShape{n_layer_, n_kv_head_, head_dim_, max_seq_len_}, batch_size_, max_seq_len_, owner_, type_);
  out.f32_ = f32_;
  out.b16_ = b16_;
  out.seq_lens_ = seq_lens_;
  out.cross_ = cross_;
  return out;
}

void KVCache::check_positions(int row, int start, int n) const {
  check_row(row, "read");
  if (start < 0 || n < 0 || static_cast<long>(start) + n > seq_lens_[row]) {
    fail("positions [" + std::to_string(start) + ", " + std::to_string(static_cast<long>(start) + n) +
         ") are outside the " + std::to_string(seq_lens_[row]) + " that row " + std::to_string(row) + " holds");
  }
}

void KVCache::read_positions(int row, int start, int n, void* out) const {
  check_positions(row, start, n);
  const Hold hold(const_cast<KVCache&>(*this), "read");
  const std::size_t bytes = static_cast<std::size_t>(n) * head_dim_ * element_bytes();
  const std::size_t offset = static_cast<std::size_t>(start) * head_dim_ * element_bytes();
  auto* dst = static_cast<std::byte*>(out);
  for_each_block([&](int l, int kv, int h) {
    std::memcpy(dst, raw_block(l, kv, row, h) + offset, bytes);
    dst += bytes;
  });
}

void KVCache::append_positions(int row, int n, const void* in) {
  check_row(row, "append to");
  require(n >= 0, "cannot append " + std::to_string(n) + " positions");
  check_room(row, n);
  const Hold hold(*this, "append to");
  const std::size_t bytes = static_cast<std::size_t>(n) * head_dim_ * element_bytes();
  const std::size_t offset = static_cast<std::size_t>(seq_lens_[row]) * head_dim_ * element_bytes();
  const auto* src = static_cast<const std::byte*>(in);
  for_each_block([&](int l, int kv, int h) {
    std::memcpy(raw_block(l, kv, row, h) + offset, src, bytes);
    src += bytes;
  });
  seq_lens_[row] += n;
}

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
