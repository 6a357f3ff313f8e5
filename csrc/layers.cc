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

void embedding_lookup(float* out, const int* tokens, const float* table, int N, int C) {
  for (int n = 0; n < N; ++n) {
    std::copy_n(table + static_cast<size_t>(tokens[n]) * C, C, out + static_cast<size_t>(n) * C);
  }
}

void rmsnorm_forward(float* out, const float* inp, const float* weight, int N, int C, float eps) {
#pragma omp parallel for if (N > 4)
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<size_t>(n) * C;
    float* o = out + static_cast<size_t>(n) * C;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += x[c] * x[c];
    const float r = 1.0f / std::sqrt(sum / C + eps);
    for (int c = 0; c < C; ++c) o[c] = weight[c] * (x[c] * r);  // transformers' order: weight * (x * rsqrt)
  }
}

void swiglu_forward(float* out, const float* gate_up, int N, int F) {
#pragma omp parallel for if (N > 4)
  for (int n = 0; n < N; ++n) {
    const float* gate = gate_up + static_cast<size_t>(n) * 2 * F;
    const float* up = gate + F;
    float* o = out + static_cast<size_t>(n) * F;
    for (int i = 0; i < F; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
}

void rope_table(float* table, const int* positions, const float* inv_freq, int N, int HS) {
  const int half = HS / 2;
  for (int n = 0; n < N; ++n) {
    float* cos_row = table + static_cast<size_t>(n) * HS;
    const float position = static_cast<float>(positions[n]);
    for (int i = 0; i < half; ++i) {
      const float angle = position * inv_freq[i];  // float32, as transformers' inv_freq @ position_ids
      cos_row[i] = std::cos(angle);
      cos_row[half + i] = std::sin(angle);
    }
  }
}

void rope_forward(float* qkv, const float* table, int N, const AttentionShape& s) {
  const int HS = s.HS, half = HS / 2, W = s.qkv_width(), rotated = s.NH + s.NKV;  // q heads, then k heads
#pragma omp parallel for if (N > 4)
  for (int n = 0; n < N; ++n) {
    const float* cos_row = table + static_cast<size_t>(n) * HS;
    const float* sin_row = cos_row + half;
    for (int h = 0; h < rotated; ++h) {
      float* x = qkv + static_cast<size_t>(n) * W + h * HS;
      for (int i = 0; i < half; ++i) {
        const float a = x[i], b = x[half + i];
        x[i] = a * cos_row[i] + (-b) * sin_row[i];
        x[half + i] = b * cos_row[i] + a * sin_row[i];
      }
    }
  }
}

long attention_partials_floats(int n_queries, int NH, int HS, int max_seq_len) {
  const long chunks = (max_seq_len + kAttentionChunk - 1) / kAttentionChunk;
  return max_seq_len > kAttentionChunk ? static_cast<long>(n_queries) * NH * chunks * (2 + HS) : 0;
}

long attention_scratch_floats(int T, int max_seq_len, int HS) {
  return T >= kBlockAttentionMin ? kernels::attend_block_scratch(T, max_seq_len, HS) : max_seq_len;
}

namespace {

// Writes the new keys and values of T positions of one (batch row, key/value head) into the cache, at positions
// seq_len .. seq_len + T - 1, rounded to the cache's type: every query, this step's included, then sees the same
// stored values.
template <class E>
void write_new_positions(KVCache& cache, const float* qkv, int layer, int r, int row, int g, int T,
                         const AttentionShape& s) {
  const int start = cache.seq_len(row), W = s.qkv_width(), HS = s.HS;
  E* keys = cache.keys<E>(layer, row, g);
  E* values = cache.values<E>(layer, row, g);
  for (int t = 0; t < T; ++t) {
    const float* src = qkv + static_cast<size_t>(r * T + t) * W;
    kernels::store_row(keys + static_cast<size_t>(start + t) * HS, src + (s.NH + g) * HS, HS);
    kernels::store_row(values + static_cast<size_t>(start + t) * HS, src + (s.NH + s.NKV + g) * HS, HS);
  }
}

// Asks for a (batch row, head)'s stored keys and values, at most their first 16 KiB each, in L2. By the time a
// layer's attention runs, the weights streamed since the last step have pushed its cache rows out of every cache
// level, and at a few dozen positions a head's rows are a few KiB, too short for the hardware prefetcher to ramp
// up on (benchmarks/NOTES.md). Longer rows are left to the hardware prefetcher after their first 16 KiB.
constexpr std::size_t kPrefetchBytes = 16 * 1024;

template <class E>
void prefetch_head(KVCache& cache, int layer, int row, int g, int HS, int start) {
  const int positions = std::min(cache.seq_len(row) - start, kAttentionChunk);
  if (positions <= 0) return;
  const std::size_t bytes = std::min(static_cast<std::size_t>(positions) * HS * sizeof(E), kPrefetchBytes);
  const char* keys = reinterpret_cast<const char*>(cache.keys<E>(layer, row, g) + static_cast<std::size_t>(start) * HS);
  const char* values =
      reinterpret_cast<const char*>(cache.values<E>(layer, row, g) + static_cast<std::size_t>(start) * HS);
  for (std::size_t offset = 0; offset < bytes; offset += 64) {
    __builtin_prefetch(keys + offset, 0, 2);
    __builtin_prefetch(values + offset, 0, 2);
  }
}

// attention_forward for the cache's element type E (float, Half or uint16_t = bfloat16).
template <class E>
void attention_typed(float* out, const float* qkv, KVCache& cache, int layer, const int* cache_rows, int n_rows, int T,
                     const AttentionShape& s, float* scratch, float* partials) {
  const int NH = s.NH, NKV = s.NKV, HS = s.HS, W = s.qkv_width(), D = NH * HS, group = NH / NKV;
  const size_t max_len = static_cast<size_t>(cache.max_seq_len());
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  if (T >= kBlockAttentionMin) {
    for (int r = 0; r < n_rows; ++r) {
      for (int g = 0; g < NKV; ++g) write_new_positions<E>(cache, qkv, layer, r, cache_rows[r], g, T, s);
    }
    // prefill: a block of queries per (row, query head), two register-tiled products each; threads take whole
    // (row, head) pairs, and the products run on the calling thread inside them
    const size_t per_thread = static_cast<size_t>(attention_scratch_floats(T, cache.max_seq_len(), HS));
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n_rows * NH; ++i) {
      const int r = i / NH, h = i % NH, g = h / group, row = cache_rows[r];
      kernels::attend_block(out + static_cast<size_t>(r * T) * D + h * HS, D,
                            qkv + static_cast<size_t>(r * T) * W + h * HS, W, cache.keys<E>(layer, row, g),
                            cache.values<E>(layer, row, g), cache.seq_len(row), T, HS, scale,
                            scratch + static_cast<size_t>(omp_get_thread_num()) * per_thread);
    }
    return;
  }
  // decode (and short prompts): the new positions are written first, then each (row, key/value head, chunk of
  // kAttentionChunk positions) is a work item: each query head of the group, and each of its queries, attends over
  // the chunk's positions up to its own (causal mask by length), so a stored chunk is read from memory once per step
  // however many query heads share it. A query within one chunk gets its output directly; a longer one a partial
  // per chunk, merged after. Threads take contiguous runs of items (kernels::parallel_stream), so the item after
  // the current one is usually the same thread's next: its keys and values are prefetched while this one computes.
  for (int r = 0; r < n_rows; ++r) {
    for (int g = 0; g < NKV; ++g) write_new_positions<E>(cache, qkv, layer, r, cache_rows[r], g, T, s);
  }
  int longest = 0;
  for (int r = 0; r < n_rows; ++r) longest = std::max(longest, cache.seq_len(cache_rows[r]) + T);
  const int max_chunks = (cache.max_seq_len() + kAttentionChunk - 1) / kAttentionChunk;
  const int chunks = (longest + kAttentionChunk - 1) / kAttentionChunk;  // of the longest row; shorter rows skip
  const size_t partial_floats = static_cast<size_t>(2 + HS);
  auto partial = [&](int n, int h, int c) {
    return partials + ((static_cast<size_t>(n) * NH + h) * max_chunks + c) * partial_floats;
  };
  auto attend_items = [&](int begin, int end) {
    for (int i = begin; i < end; ++i) {
      const int r = i / (NKV * chunks), g = (i / chunks) % NKV, c = i % chunks, row = cache_rows[r];
      const int start = c * kAttentionChunk;
      if (start >= cache.seq_len(row) + T) continue;  // beyond this row's positions
      if (i + 1 < end) {
        const int r1 = (i + 1) / (NKV * chunks), g1 = ((i + 1) / chunks) % NKV, c1 = (i + 1) % chunks;
        prefetch_head<E>(cache, layer, cache_rows[r1], g1, HS, c1 * kAttentionChunk);
      }
      const E* keys = cache.keys<E>(layer, row, g) + static_cast<size_t>(start) * HS;
      const E* values = cache.values<E>(layer, row, g) + static_cast<size_t>(start) * HS;
      float* scores = scratch + static_cast<size_t>(omp_get_thread_num()) * max_len;
      for (int h = g * group; h < (g + 1) * group; ++h) {
        for (int t = 0; t < T; ++t) {
          const int len = cache.seq_len(row) + t + 1;  // this query's positions
          if (start >= len) continue;
          const int n = r * T + t;
          const float* q = qkv + static_cast<size_t>(n) * W + h * HS;
          if (len <= kAttentionChunk) {
            kernels::attend(out + static_cast<size_t>(n) * D + h * HS, q, keys, values, len, HS, scale, scores);
          } else {
            float* p = partial(n, h, c);
            kernels::attend_partial(p + 2, p, p + 1, q, keys, values, std::min(kAttentionChunk, len - start), HS,
                                    scale, scores);
          }
        }
      }
    }
  };
  kernels::parallel_stream(n_rows * NKV * chunks, 1, attend_items);
  for (int r = 0; r < n_rows; ++r) {  // merge the chunks of the queries that were split
    for (int t = 0; t < T; ++t) {
      const int len = cache.seq_len(cache_rows[r]) + t + 1, n = r * T + t;
      if (len <= kAttentionChunk) continue;
      const int n_chunks = (len + kAttentionChunk - 1) / kAttentionChunk;
      for (int h = 0; h < NH; ++h) {
        kernels::merge_partials(out + static_cast<size_t>(n) * D + h * HS, partial(n, h, 0), n_chunks, HS);
      }
    }
  }
}

}  // namespace

void attention_forward(float* out, const float* qkv, KVCache& cache, int layer, const int* cache_rows, int n_rows,
                       int T, const AttentionShape& heads, float* scratch, float* partials) {
  switch (cache.type()) {
    case KVType::F32:
      return attention_typed<float>(out, qkv, cache, layer, cache_rows, n_rows, T, heads, scratch, partials);
    case KVType::F16:
      return attention_typed<Half>(out, qkv, cache, layer, cache_rows, n_rows, T, heads, scratch, partials);
    case KVType::BF16:
      return attention_typed<uint16_t>(out, qkv, cache, layer, cache_rows, n_rows, T, heads, scratch, partials);
  }
}

}  // namespace kvcache
