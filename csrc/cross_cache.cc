#include "cross_cache.h"

#include <algorithm>
#include <array>
#include <string>

#include "errors.h"
#include "huge_pages.h"

namespace kvcache {

CrossCache::CrossCache(const CacheShape& shape, int batch_size, int seq_len, const void* owner)
    : n_layer_(shape.n_layer),
      n_head_(shape.n_kv_head),
      head_dim_(shape.head_dim),
      batch_size_(batch_size),
      seq_len_(seq_len),
      owner_(owner) {
  require(batch_size >= 1, "cross cache batch_size must be >= 1, got " + std::to_string(batch_size));
  require(seq_len >= 1, "cross cache needs at least one encoder position, got " + std::to_string(seq_len));
  auto u = [](int v) { return static_cast<std::size_t>(v); };
  const std::array<std::size_t, 6> dims = {u(n_layer_), 2, u(batch_size), u(n_head_), u(seq_len), u(head_dim_)};
  data_ = xt::xtensor<float, 6>::from_shape(dims);
  advise_huge_pages(data_.data(), nbytes());
  std::fill(data_.begin(), data_.end(), 0.0f);  // every value is written by the model next; none is ever stale
}

}  // namespace kvcache
