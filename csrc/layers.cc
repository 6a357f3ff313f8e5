#include "layers.h"

#include <omp.h>

#include <cmath>
#include <cstddef>

#include "kernels/attention.h"
#include "kernels/float16.h"
#include "kernels/gelu.h"

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

// attention_forward for the cache's element type E (float, Half or uint16_t = bfloat16).
template <class E>
void attention_typed(float* out, const float* qkv, KVCache& cache, int layer, const int* cache_rows, int n_rows, int T,
                     int NH, int HS, float* scratch) {
  const int C = NH * HS;
  const size_t max_len = static_cast<size_t>(cache.max_seq_len());
  // step 1: write the new keys and values into the cache, at positions seq_len .. seq_len + T - 1 (rounded to the
  // cache's type: every query, this step's included, then sees the same stored values)
  for (int r = 0; r < n_rows; ++r) {
    const int row = cache_rows[r];
    const int start = cache.seq_len(row);
    for (int h = 0; h < NH; ++h) {
      E* keys = cache.keys<E>(layer, row, h);
      E* values = cache.values<E>(layer, row, h);
      for (int t = 0; t < T; ++t) {
        const float* src = qkv + static_cast<size_t>(r * T + t) * 3 * C;
        kernels::store_row(keys + static_cast<size_t>(start + t) * HS, src + C + h * HS, HS);
        kernels::store_row(values + static_cast<size_t>(start + t) * HS, src + 2 * C + h * HS, HS);
      }
    }
  }
  // step 2: each new query attends over the cache up to its own position (causal mask by length)
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  if (T >= kBlockAttentionMin) {
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
  const int work = n_rows * NH * T;
#pragma omp parallel for schedule(dynamic, 1) if (work > 1)
  for (int i = 0; i < work; ++i) {
    const int t = i % T;
    const int h = (i / T) % NH;
    const int r = i / (T * NH);
    const int row = cache_rows[r];
    const int len = cache.seq_len(row) + t + 1;
    const float* q = qkv + static_cast<size_t>(r * T + t) * 3 * C + h * HS;
    float* o = out + static_cast<size_t>(r * T + t) * C + h * HS;
    float* scores = scratch + static_cast<size_t>(omp_get_thread_num()) * max_len;
    kernels::attend(o, q, cache.keys<E>(layer, row, h), cache.values<E>(layer, row, h), len, HS, scale, scores);
  }
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
