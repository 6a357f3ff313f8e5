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
void prefetch_head(KVCache& cache, int layer, int row, int g, int HS) {
  const std::size_t bytes = std::min(static_cast<std::size_t>(cache.seq_len(row)) * HS * sizeof(E), kPrefetchBytes);
  const char* keys = reinterpret_cast<const char*>(cache.keys<E>(layer, row, g));
  const char* values = reinterpret_cast<const char*>(cache.values<E>(layer, row, g));
  for (std::size_t offset = 0; offset < bytes; offset += 64) {
    __builtin_prefetch(keys + offset, 0, 2);
    __builtin_prefetch(values + offset, 0, 2);
  }
}

// attention_forward for the cache's element type E (float, Half or uint16_t = bfloat16).
template <class E>
void attention_typed(float* out, const float* qkv, KVCache& cache, int layer, const int* cache_rows, int n_rows, int T,
                     const AttentionShape& s, float* scratch) {
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
  // decode (and short prompts): each (row, key/value head) writes its new positions, then each query head of its
  // group, and each of their queries, attends over the cache up to its own position (causal mask by length): a
  // stored head is read from memory once per step however many query heads share it. Threads take contiguous
  // runs of (row, kv head) items (kernels::parallel_stream), so the item after the current one is usually the
  // same thread's next: its keys and values are prefetched while this one computes.
  auto attend_items = [&](int begin, int end) {
    for (int i = begin; i < end; ++i) {
      const int r = i / NKV, g = i % NKV, row = cache_rows[r];
      if (i + 1 < n_rows * NKV) prefetch_head<E>(cache, layer, cache_rows[(i + 1) / NKV], (i + 1) % NKV, HS);
      write_new_positions<E>(cache, qkv, layer, r, row, g, T, s);
      E* keys = cache.keys<E>(layer, row, g);
      E* values = cache.values<E>(layer, row, g);
      float* scores = scratch + static_cast<size_t>(omp_get_thread_num()) * max_len;
      for (int h = g * group; h < (g + 1) * group; ++h) {
        for (int t = 0; t < T; ++t) {
          const float* q = qkv + static_cast<size_t>(r * T + t) * W + h * HS;
          float* o = out + static_cast<size_t>(r * T + t) * D + h * HS;
          kernels::attend(o, q, keys, values, cache.seq_len(row) + t + 1, HS, scale, scores);
        }
      }
    }
  };
  kernels::parallel_stream(n_rows * NKV, 1, attend_items);
}

}  // namespace

void attention_forward(float* out, const float* qkv, KVCache& cache, int layer, const int* cache_rows, int n_rows,
                       int T, const AttentionShape& heads, float* scratch) {
  switch (cache.type()) {
    case KVType::F32:
      return attention_typed<float>(out, qkv, cache, layer, cache_rows, n_rows, T, heads, scratch);
    case KVType::F16:
      return attention_typed<Half>(out, qkv, cache, layer, cache_rows, n_rows, T, heads, scratch);
    case KVType::BF16:
      return attention_typed<uint16_t>(out, qkv, cache, layer, cache_rows, n_rows, T, heads, scratch);
  }
}

}  // namespace kvcache
