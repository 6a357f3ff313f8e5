#include "attention.h"

#include <cblas.h>

#include <cmath>
#include <cstddef>

#include "multiversion.h"
#include "vec.h"

namespace kvcache::kernels {

namespace {

// Softmax in place over n scores. Vectorised (std::exp in a scalar loop was a third of a decode step's attention
// at 1000 positions), and every lane computed alike wherever the row starts, so results are reproducible bit for
// bit whichever thread's scratch holds them.
KVCACHE_MULTIVERSION
void softmax_in_place(float* row, std::size_t n) {
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
  sum += hsum(lanes);
  const float inv_sum = 1.0f / sum;
  for (std::size_t j = 0; j < n; ++j) row[j] *= inv_sum;
}

// The two streaming passes over one head's cache. The head size is a multiple of 8 (checked in attend): each key
// and value row is whole v8f loads.
KVCACHE_MULTIVERSION
void scores_pass(float* scores, const float* q, const float* keys, int len, int HS, float scale) {
  for (int j = 0; j < len; ++j) {
    const float* k = keys + static_cast<std::size_t>(j) * HS;
    v8f acc0 = {}, acc1 = {};
    int c = 0;
    for (; c + 16 <= HS; c += 16) {
      acc0 += load8(q + c) * load8(k + c);
      acc1 += load8(q + c + 8) * load8(k + c + 8);
    }
    for (; c < HS; c += 8) acc0 += load8(q + c) * load8(k + c);
    scores[j] = hsum(acc0 + acc1) * scale;
  }
}

KVCACHE_MULTIVERSION
void values_pass(float* out, const float* probs, const float* values, int len, int HS) {
  for (int c0 = 0; c0 < HS; c0 += 64) {  // 8 accumulators (64 channels, GPT-2's head) at a time in registers
    const int width = HS - c0 < 64 ? HS - c0 : 64;
    v8f acc[8] = {};
    for (int j = 0; j < len; ++j) {
      const float* v = values + static_cast<std::size_t>(j) * HS + c0;
      for (int a = 0; a < width / 8; ++a) acc[a] += probs[j] * load8(v + 8 * a);
    }
    for (int a = 0; a < width / 8; ++a) store8(out + c0 + 8 * a, acc[a]);
  }
}

// Any head size (the reference path's shapes in tests), one scalar pass each.
void attend_scalar(float* out, const float* q, const float* keys, const float* values, int len, int HS, float scale,
                   float* scores) {
  for (int j = 0; j < len; ++j) {
    float dot = 0.0f;
    for (int c = 0; c < HS; ++c) dot += q[c] * keys[static_cast<std::size_t>(j) * HS + c];
    scores[j] = dot * scale;
  }
  softmax_in_place(scores, static_cast<std::size_t>(len));
  for (int c = 0; c < HS; ++c) out[c] = 0.0f;
  for (int j = 0; j < len; ++j)
    for (int c = 0; c < HS; ++c) out[c] += scores[j] * values[static_cast<std::size_t>(j) * HS + c];
}

}  // namespace

void attend(float* out, const float* q, const float* keys, const float* values, int len, int HS, float scale,
            float* scores) {
  if (HS % 8 != 0) return attend_scalar(out, q, keys, values, len, HS, scale, scores);
  scores_pass(scores, q, keys, len, HS, scale);
  softmax_in_place(scores, static_cast<std::size_t>(len));
  values_pass(out, scores, values, len, HS);
}

void attend_block(float* out, int ldo, const float* q, int ldq, const float* keys, const float* values, int start, int T,
                  int HS, float scale, float* scores) {
  const int L = start + T;
  // pass 1: scores (T, L) = scale * Q K^T; the causal upper part is computed too and discarded: BLAS at full speed
  // on the square beats skipping half of the work at a fraction of it
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, L, HS, scale, q, ldq, keys, HS, 0.0f, scores, L);
  // pass 2: softmax of each row over its causal prefix; the positions after it get probability 0
  for (int t = 0; t < T; ++t) {
    const std::size_t len = static_cast<std::size_t>(start + t + 1);
    float* row = scores + static_cast<std::size_t>(t) * L;
    softmax_in_place(row, len);
    std::fill(row + len, row + L, 0.0f);
  }
  // pass 3: out (T, HS) = P V
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, L, 1.0f, scores, L, values, HS, 0.0f, out, ldo);
}

void attend_naive(float* out, const float* q, const float* keys, const float* values, int len, int HS, float scale,
                  float* scores) {
  float max_score = -INFINITY;
  for (int j = 0; j < len; ++j) {
    double dot = 0.0;
    for (int c = 0; c < HS; ++c) dot += static_cast<double>(q[c]) * keys[static_cast<std::size_t>(j) * HS + c];
    scores[j] = static_cast<float>(dot) * scale;
    if (scores[j] > max_score) max_score = scores[j];
  }
  double sum = 0.0;
  for (int j = 0; j < len; ++j) sum += std::exp(static_cast<double>(scores[j]) - max_score);
  for (int c = 0; c < HS; ++c) {
    double acc = 0.0;
    for (int j = 0; j < len; ++j) {
      acc += std::exp(static_cast<double>(scores[j]) - max_score) / sum * values[static_cast<std::size_t>(j) * HS + c];
    }
    out[c] = static_cast<float>(acc);
  }
}

}  // namespace kvcache::kernels
