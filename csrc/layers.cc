#include "layers.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "kernels/attention.h"
#include "kernels/float16.h"
#include "kernels/gelu.h"
#include "kernels/stream_split.h"

namespace kvcache {

using std::size_t;

void embedding_forward(float* out, const int* tokens, const int* positions, const float* wte, const float* wpe,
                       int N, int C) {
  for (int n = 0; n < N; ++n) {
    const float* te = wte + static_cast<size_t>(tokens[n]) * C;
    const float* pe = wpe + static_cast<size_t>(positions[n]) * C;
    float* o = out + static_cast<size_t>(n) * C;
    for (int c = 0; c < C; ++c) o[c] = te[c] + pe[c];
  }
}

void layernorm_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                       float eps) {
#pragma omp parallel for if (N > 4)
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<size_t>(n) * C;
    float* o = out + static_cast<size_t>(n) * C;
    // two passes (mean, then variance about it): stable where E[x^2] - E[x]^2 would cancel
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += x[c];
    const float mean = sum / C;
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; ++c) var += (x[c] - mean) * (x[c] - mean);
    const float rstd = 1.0f / std::sqrt(var / C + eps);
    for (int c = 0; c < C; ++c) o[c] = (x[c] - mean) * rstd * weight[c] + bias[c];
  }
}

void gelu_forward(float* x, long n) { kernels::gelu(x, n); }

long attention_scratch_floats(int T, int max_seq_len, int HS) {
  return T >= kBlockAttentionMin ? kernels::attend_block_scratch(T, max_seq_len, HS) : max_seq_len;
}

namespace {

// Writes the new keys and values of T positions of one (batch row, head) into the cache, at positions
// seq_len .. seq_len + T - 1, rounded to the cache's type: every query, this step's included, then sees the same
// stored values.
template <class E>
void write_new_positions(KVCache& cache, const float* qkv, int layer, int r, int row, int h, int T, int C, int HS) {
  const int start = cache.seq_len(row);
  E* keys = cache.keys<E>(layer, row, h);
  E* values = cache.values<E>(layer, row, h);
  for (int t = 0; t < T; ++t) {
    const float* src = qkv + static_cast<size_t>(r * T + t) * 3 * C;
    kernels::store_row(keys + static_cast<size_t>(start + t) * HS, src + C + h * HS, HS);
    kernels::store_row(values + static_cast<size_t>(start + t) * HS, src + 2 * C + h * HS, HS);
  }
}

// Asks for a (batch row, head)'s stored keys and values, at most their first 16 KiB each, in L2. By the time a
// layer's attention runs, the weights streamed since the last step have pushed its cache rows out of every cache
// level, and at a few dozen positions a head's rows are a few KiB, too short for the hardware prefetcher to ramp
// up on: read on demand, they came in at 10-18 GB/s. Prefetching the next head while one computes took a batch-8 step's
// attention at 8-48 positions from 1.3-1.7 ms to 1.0-1.2 (batch 1: 0.19-0.37 to 0.15-0.25 ms), and batch-8 steps
// at 100-200 positions 3% faster. Longer rows are left to the hardware prefetcher after their first 16 KiB:
// prefetched whole, attention at 1000 positions ran 5-11% slower.
constexpr std::size_t kPrefetchBytes = 16 * 1024;

template <class E>
void prefetch_head(KVCache& cache, int layer, int row, int h, int HS) {
  const std::size_t bytes = std::min(static_cast<std::size_t>(cache.seq_len(row)) * HS * sizeof(E), kPrefetchBytes);
  const char* keys = reinterpret_cast<const char*>(cache.keys<E>(layer, row, h));
  const char* values = reinterpret_cast<const char*>(cache.values<E>(layer, row, h));
  for (std::size_t offset = 0; offset < bytes; offset += 64) {
    __builtin_prefetch(keys + offset, 0, 2);
    __builtin_prefetch(values + offset, 0, 2);
  }
}

// attention_forward for the cache's element type E (float, Half or uint16_t = bfloat16).
template <class E>
void attention_typed(float* out, const float* qkv, KVCache& cache, int layer, const int* cache_rows, int n_rows, int T,
                     int NH, int HS, float* scratch) {
  const int C = NH * HS;
  const size_t max_len = static_cast<size_t>(cache.max_seq_len());
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  if (T >= kBlockAttentionMin) {
    for (int r = 0; r < n_rows; ++r) {
      for (int h = 0; h < NH; ++h) write_new_positions<E>(cache, qkv, layer, r, cache_rows[r], h, T, C, HS);
    }
    // prefill: a block of queries per (row, head), two register-tiled products each; threads take whole
    // (row, head) pairs, and the products run on the calling thread inside them
    const size_t per_thread = static_cast<size_t>(attention_scratch_floats(T, cache.max_seq_len(), HS));
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n_rows * NH; ++i) {
      const int r = i / NH, h = i % NH, row = cache_rows[r];
      kernels::attend_block(out + static_cast<size_t>(r * T) * C + h * HS, C,
                            qkv + static_cast<size_t>(r * T) * 3 * C + h * HS, 3 * C, cache.keys<E>(layer, row, h),
                            cache.values<E>(layer, row, h), cache.seq_len(row), T, HS, scale,
                            scratch + static_cast<size_t>(omp_get_thread_num()) * per_thread);
    }
    return;
  }
  // decode (and short prompts): each (row, head) writes its new positions, then each of its queries attends over
  // the cache up to its own position (causal mask by length). Threads take contiguous runs of (row, head) items
  // (kernels::parallel_stream), so the item after the current one is usually the same thread's next: its keys and
  // values are prefetched while this one computes.
  auto attend_items = [&](int begin, int end) {
    for (int i = begin; i < end; ++i) {
      const int r = i / NH, h = i % NH, row = cache_rows[r];
      if (i + 1 < n_rows * NH) prefetch_head<E>(cache, layer, cache_rows[(i + 1) / NH], (i + 1) % NH, HS);
      write_new_positions<E>(cache, qkv, layer, r, row, h, T, C, HS);
      E* keys = cache.keys<E>(layer, row, h);
      E* values = cache.values<E>(layer, row, h);
      float* scores = scratch + static_cast<size_t>(omp_get_thread_num()) * max_len;
      for (int t = 0; t < T; ++t) {
        const float* q = qkv + static_cast<size_t>(r * T + t) * 3 * C + h * HS;
        float* o = out + static_cast<size_t>(r * T + t) * C + h * HS;
        kernels::attend(o, q, keys, values, cache.seq_len(row) + t + 1, HS, scale, scores);
      }
    }
  };
  kernels::parallel_stream(n_rows * NH, 1, attend_items);
}

}  // namespace

void attention_forward(float* out, const float* qkv, KVCache& cache, int layer, const int* cache_rows, int n_rows,
                       int T, int NH, int HS, float* scratch) {
  switch (cache.type()) {
    case KVType::F32:
      return attention_typed<float>(out, qkv, cache, layer, cache_rows, n_rows, T, NH, HS, scratch);
    case KVType::F16:
      return attention_typed<Half>(out, qkv, cache, layer, cache_rows, n_rows, T, NH, HS, scratch);
    case KVType::BF16:
      return attention_typed<uint16_t>(out, qkv, cache, layer, cache_rows, n_rows, T, NH, HS, scratch);
  }
}

}  // namespace kvcache
