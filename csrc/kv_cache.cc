#include "kv_cache.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "errors.h"
#include "huge_pages.h"
#include "kernels/float16.h"

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
  evicted_.assign(batch_size, 0);
}

KVCache::KVCache(const CacheShape& shape, int batch_size, int max_seq_len, const void* owner, KVType type,
                 const CacheWindow& window, std::vector<float> rotary)
    : KVCache(shape, batch_size, max_seq_len, owner, type) {
  if (!window.enabled()) return;
  const std::string S = std::to_string(max_seq_len);
  require(window.sinks >= 0, "sinks must be >= 0, got " + std::to_string(window.sinks));
  require(window.sinks < max_seq_len, "sinks=" + std::to_string(window.sinks) + " leaves no room for a window in " +
                                          "max_seq_len=" + S + ": sinks must be < max_seq_len");
  require(window.window >= 1 && window.sinks + window.window == max_seq_len,
          "window=" + std::to_string(window.window) + " plus sinks=" + std::to_string(window.sinks) +
              " must equal max_seq_len=" + S + " (the window holds the positions after the sinks)");
  require(window.evict_chunk >= 1 && window.evict_chunk <= window.window,
          "evict_chunk must be in [1, window=" + std::to_string(window.window) + "], got " +
              std::to_string(window.evict_chunk));
  require(rotary.size() == static_cast<std::size_t>(max_seq_len) * head_dim_ && head_dim_ % 2 == 0,
          "a windowed cache needs the rotary angles of its " + S + " positions");
  require(head_dim_ <= kMaxShiftHeadDim, "a windowed cache takes head_dim <= " + std::to_string(kMaxShiftHeadDim) +
                                             ", got " + std::to_string(head_dim_));
  window_ = window;
  rotary_ = std::move(rotary);
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
  std::fill(evicted_.begin(), evicted_.end(), 0L);
}

void KVCache::reset_row(int row) {
  seq_lens_[row] = 0;
  evicted_[row] = 0;
}

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
  if (seq_lens_[row] == 0) evicted_[row] = 0;
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
  dst.evicted_[dst_row] = dst.windowed() ? evicted_[src] : 0;
}

KVCache KVCache::clone() const {
  const Hold hold(const_cast<KVCache&>(*this), "copy");
  KVCache out(CacheShape{n_layer_, n_kv_head_, head_dim_, max_seq_len_}, batch_size_, max_seq_len_, owner_, type_);
  out.f32_ = f32_;
  out.b16_ = b16_;
  out.seq_lens_ = seq_lens_;
  out.window_ = window_;
  out.rotary_ = rotary_;
  out.evicted_ = evicted_;
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
  for (std::size_t r = 0; r < seq_lens_.size(); ++r) {
    seq_lens_[r] = std::min(seq_lens_[r], max_length);
    if (seq_lens_[r] == 0) evicted_[r] = 0;
  }
}

namespace {

// One (max_seq_len, HS) block pair of an eviction: positions [from, from + n) move to [to, to + n), to < from. Each
// key is rotated by the angle between its old position q and its new one p, composed from the two positions' own
// angles (cos(a_p - a_q) = cos a_p cos a_q + sin a_p sin a_q, ...), so that a moved key carries the angles a fresh
// key at p gets (rope_table's float32 angles) rather than p - q times the frequency; then it is rounded to the
// cache's type. Values move unchanged. In increasing order: a position is read before anything is written over it.
template <class E>
void shift_block(E* keys, E* values, int from, int to, int n, int HS, const float* rotary) {
  const int half = HS / 2;
  float x[kMaxShiftHeadDim];
  for (int j = 0; j < n; ++j) {
    const float* cos_q = rotary + static_cast<std::size_t>(from + j) * HS;
    const float* sin_q = cos_q + half;
    const float* cos_p = rotary + static_cast<std::size_t>(to + j) * HS;
    const float* sin_p = cos_p + half;
    kernels::load_row(x, keys + static_cast<std::size_t>(from + j) * HS, HS);
    for (int i = 0; i < half; ++i) {
      const float c = cos_p[i] * cos_q[i] + sin_p[i] * sin_q[i];  // cos(a_p - a_q)
      const float s = sin_p[i] * cos_q[i] - cos_p[i] * sin_q[i];  // sin(a_p - a_q)
      const float a = x[i], b = x[half + i];
      x[i] = a * c - b * s;
      x[half + i] = b * c + a * s;
    }
    kernels::store_row(keys + static_cast<std::size_t>(to + j) * HS, x, HS);
  }
  std::memmove(values + static_cast<std::size_t>(to) * HS, values + static_cast<std::size_t>(from) * HS,
               static_cast<std::size_t>(n) * HS * sizeof(E));
}

}  // namespace

template <class E>
void KVCache::evict_typed(int row, int n) {
  const int from = window_.sinks + n, moved = seq_lens_[row] - from;
  // every (layer, head) block of the row is independent: the threads share them
#pragma omp parallel for schedule(static) if (n_layer_ * n_kv_head_ > 1)
  for (int i = 0; i < n_layer_ * n_kv_head_; ++i) {
    const int l = i / n_kv_head_, h = i % n_kv_head_;
    shift_block<E>(block<E>(l, 0, row, h), block<E>(l, 1, row, h), from, window_.sinks, moved, head_dim_,
                   rotary_.data());
  }
}

void KVCache::evict(int row, int n) {
  // Plain ifs: the messages are built only on failure, so a decode step allocates nothing.
  if (!windowed()) fail("evict needs a windowed cache (new_cache(window=..., sinks=...))");
  if (row < 0 || row >= batch_size_ || n < 1 || seq_lens_[row] < window_.sinks + n) {
    fail("cannot evict " + std::to_string(n) + " positions after the " + std::to_string(window_.sinks) +
         " sinks of a row holding " + std::to_string(row >= 0 && row < batch_size_ ? seq_lens_[row] : 0));
  }
  switch (type_) {
    case KVType::F32: evict_typed<float>(row, n); break;
    case KVType::F16: evict_typed<Half>(row, n); break;
    case KVType::BF16: evict_typed<uint16_t>(row, n); break;
  }
  seq_lens_[row] -= n;
  evicted_[row] += n;
}

KVCache::Hold::Hold(KVCache& cache, const char* what) : cache_(cache) {
  if (cache.held_->exchange(true, std::memory_order_acquire)) {
    fail(std::string("cannot ") + what + " the KV cache: it is in use by a forward pass on another thread; a KV "
         "cache serves one call at a time (give each thread its own cache)");
  }
}

}  // namespace kvcache
