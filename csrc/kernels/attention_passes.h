// The passes of a decode step's attention over one head's cache, as templates over the cache's element type E
// (float, Half, or uint16_t = bfloat16), and the softmax between them. Included by attention.cc (any target: the
// portable build, with target_clones) and attention_avx2.cc (-mavx2 -mfma -mf16c, chosen at run time), where
// float16.h widens eight halves with one vcvtph2ps instead of eight integer and float operations: that made the
// float16 cache slower to read than the float32 one, whose bytes it halves.
#pragma once

#include <cmath>
#include <cstddef>

#include "float16.h"
#include "multiversion.h"
#include "vec.h"

namespace kvcache::kernels {
namespace {  // NOLINT: per translation unit on purpose (see above)

// Softmax in place over n scores. Vectorised (std::exp in a scalar loop was a third of a decode step's attention
// at 1000 positions), and every lane computed alike wherever the row starts, so results are reproducible bit for
// bit whichever thread's scratch holds them.
// exp(row[j] - max) in place over n scores; returns the max, and the sum of the exponentials in *sum.
KVCACHE_MULTIVERSION
float exp_in_place(float* row, std::size_t n, float* sum_out) {
  const std::size_t body = n - n % 8;
  const int tail = static_cast<int>(n - body);
  float max_score = -INFINITY;
  for (std::size_t j = 0; j < n; ++j) max_score = row[j] > max_score ? row[j] : max_score;
  v8f lanes = {};
  for (std::size_t j = 0; j < body; j += 8) {
    const v8f e = exp8(load8(row + j) - max_score);
    store8(row + j, e);
    lanes += e;
  }
  float sum = 0.0f;
  if (tail > 0) {
    const v8f e = exp8(load_partial(row + body, tail) - max_score);
    store_partial(row + body, e, tail);
    for (int l = 0; l < tail; ++l) sum += e[l];
  }
  *sum_out = sum + hsum(lanes);
  return max_score;
}

KVCACHE_MULTIVERSION
void softmax_in_place(float* row, std::size_t n) {
  float sum;
  exp_in_place(row, n, &sum);
  const float inv_sum = 1.0f / sum;
  for (std::size_t j = 0; j < n; ++j) row[j] *= inv_sum;
}

// Lane i of the result: the sum of the eight lanes of s[i]. Seven additions and fourteen shuffles for eight sums,
// where eight separate horizontal sums took about six operations each. Each output lane adds its vector's lanes
// in one fixed order, whatever the other seven hold.
__attribute__((always_inline)) inline v8f transpose_sums(const v8f s[8]) {
  const v8i32 even = {0, 8, 2, 10, 4, 12, 6, 14}, odd = {1, 9, 3, 11, 5, 13, 7, 15};
  v8f pairs[4];  // pairs[i]: lanes alternate s[2i] and s[2i + 1], each with 4 partial sums
  for (int i = 0; i < 4; ++i) {
    pairs[i] = __builtin_shuffle(s[2 * i], s[2 * i + 1], even) + __builtin_shuffle(s[2 * i], s[2 * i + 1], odd);
  }
  const v8i32 low2 = {0, 1, 8, 9, 4, 5, 12, 13}, high2 = {2, 3, 10, 11, 6, 7, 14, 15};
  const v8f quads0 = __builtin_shuffle(pairs[0], pairs[1], low2) + __builtin_shuffle(pairs[0], pairs[1], high2);
  const v8f quads1 = __builtin_shuffle(pairs[2], pairs[3], low2) + __builtin_shuffle(pairs[2], pairs[3], high2);
  // quads: lanes 0-3 and 4-7 hold the two halves' partial sums of s[0..3] (or s[4..7])
  const v8i32 low4 = {0, 1, 2, 3, 8, 9, 10, 11}, high4 = {4, 5, 6, 7, 12, 13, 14, 15};
  return __builtin_shuffle(quads0, quads1, low4) + __builtin_shuffle(quads0, quads1, high4);
}

// scores[j] = q . keys[j] * scale for j < len. Eight keys at a time, each with its own sum; a last group of fewer
// keys sums the same way (its missing keys read as zero), so a key's score has the same bits at every length.
// HS is a multiple of 8 (attend checks).
template <class E>
KVCACHE_MULTIVERSION void scores_pass(float* scores, const float* q, const E* keys, int len, int HS, float scale) {
  for (int j0 = 0; j0 < len; j0 += 8) {
    const int n = len - j0 < 8 ? len - j0 : 8;
    v8f acc[8] = {};
    for (int c = 0; c < HS; c += 8) {
      const v8f qc = load8(q + c);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        if (i < n) acc[i] += qc * load8(keys + static_cast<std::size_t>(j0 + i) * HS + c);
      }
    }
    const v8f sums = transpose_sums(acc) * scale;
    if (n == 8) {
      store8(scores + j0, sums);
    } else {
      store_partial(scores + j0, sums, n);
    }
  }
}

// out = sum over j < len of probs[j] * values[j]: eight channel vectors (GPT-2's 64-channel head) in registers.
template <class E>
KVCACHE_MULTIVERSION void values_pass(float* out, const float* probs, const E* values, int len, int HS) {
  for (int c0 = 0; c0 < HS; c0 += 64) {
    const int width = HS - c0 < 64 ? HS - c0 : 64;
    v8f acc[8] = {};
    for (int j = 0; j < len; ++j) {
      const E* v = values + static_cast<std::size_t>(j) * HS + c0;
      for (int a = 0; a < width / 8; ++a) acc[a] += probs[j] * load8(v + 8 * a);
    }
    for (int a = 0; a < width / 8; ++a) store8(out + c0 + 8 * a, acc[a]);
  }
}

// The three steps of one query's attention (HS a multiple of 8).
template <class E>
__attribute__((always_inline)) inline void attend_passes(float* out, const float* q, const E* keys, const E* values,
                                                         int len, int HS, float scale, float* scores) {
  scores_pass(scores, q, keys, len, HS, scale);
  softmax_in_place(scores, static_cast<std::size_t>(len));
  values_pass(out, scores, values, len, HS);
}

// One chunk of a query's positions (split decode, attention.h): out = sum_j exp(s_j - max) values[j], unnormalised.
template <class E>
__attribute__((always_inline)) inline void attend_partial_passes(float* out, float* max, float* sum, const float* q,
                                                                 const E* keys, const E* values, int len, int HS,
                                                                 float scale, float* scores) {
  scores_pass(scores, q, keys, len, HS, scale);
  *max = exp_in_place(scores, static_cast<std::size_t>(len), sum);
  values_pass(out, scores, values, len, HS);
}

}  // namespace
}  // namespace kvcache::kernels
