#include "attention.h"

#include <cblas.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>

#include "multiversion.h"

namespace kvcache::kernels {

KVCACHE_MULTIVERSION
void attend(float* out, const float* q, const float* keys, const float* values, int len, int HS, float scale,
            float* scores) {
  // pass 1: scores and their maximum
  float max_score = -INFINITY;
  for (int j = 0; j < len; ++j) {
    const float* k = keys + static_cast<std::size_t>(j) * HS;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int c = 0; c < HS; ++c) dot += q[c] * k[c];
    scores[j] = dot * scale;
    max_score = scores[j] > max_score ? scores[j] : max_score;
  }
  // pass 2: exponentials and their sum
  float sum = 0.0f;
  for (int j = 0; j < len; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  // pass 3: weighted sum of values
  for (int c = 0; c < HS; ++c) out[c] = 0.0f;
  const float inv_sum = 1.0f / sum;
  for (int j = 0; j < len; ++j) {
    const float* v = values + static_cast<std::size_t>(j) * HS;
    const float w = scores[j] * inv_sum;
#pragma omp simd
    for (int c = 0; c < HS; ++c) out[c] += w * v[c];
  }
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
    auto p = xt::adapt(row, len, xt::no_ownership(), std::array<std::size_t, 1>{len});
    const float max_score = xt::amax(p)();
    xt::noalias(p) = xt::exp(p - max_score);  // vectorised by xsimd
    const float inv_sum = 1.0f / xt::sum(p)();
    xt::noalias(p) = p * inv_sum;
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
