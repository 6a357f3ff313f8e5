#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "multiversion.h"
#include "panel_gemm.h"
#include "vec.h"

namespace kvcache::kernels {

// Queries per block of a prefill (attend_block): smaller blocks skip more of the causal triangle, larger ones keep
// the products efficient; 128 measured fastest at 512 tokens.
constexpr int kQueryBlock = 128;

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

long attend_block_scratch(int T, int L, int HS) {
  return static_cast<long>(T) * L + packed_size(HS, L) + packed_size(L, HS);
}

void attend_block(float* out, int ldo, const float* q, int ldq, const float* keys, const float* values, int start, int T,
                  int HS, float scale, float* scratch) {
  const int L = start + T;
  // The keys and values packed into panels once, so that both products run on the linear layers' register tiles:
  // Q K^T with the keys as the outputs (K^T in panels of 16 keys), P V with the head's channels as the outputs.
  // Packing costs L x HS copies against T x L x HS multiply-adds; OpenBLAS, called on these small products, ran
  // at a quarter of the FMA peak.
  float* scores = scratch;  // (T, L)
  float* packed_keys = scores + static_cast<std::size_t>(T) * L;
  float* packed_values = packed_keys + packed_size(HS, L);
  pack_panels_from_output_major(packed_keys, keys, HS, L);
  pack_panels(packed_values, values, L, HS);
  // A block of queries at a time, each against the keys up to its last query only: the causal upper triangle is
  // skipped a block at a time (about 40% of the work at 512 tokens).
  for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
    const int rows = T - t0 < kQueryBlock ? T - t0 : kQueryBlock;
    const int len = start + t0 + rows;  // keys any query of the block may see
    float* block = scores + static_cast<std::size_t>(t0) * L;  // (rows, len) with row stride L
    // pass 1: scores = Q K^T, then * scale (where BLAS' alpha applied it)
    panel_gemm({block, L, q + static_cast<std::size_t>(t0) * ldq, ldq, packed_keys,
                static_cast<long>(HS) * kPanelWidth, nullptr, rows, HS, len, false});
    // pass 2: softmax of each row over its causal prefix; the later positions of the block get probability 0
    for (int r = 0; r < rows; ++r) {
      const std::size_t prefix = static_cast<std::size_t>(start + t0 + r + 1);
      float* row = block + static_cast<std::size_t>(r) * L;
      for (std::size_t j = 0; j < prefix; ++j) row[j] *= scale;
      softmax_in_place(row, prefix);
      std::fill(row + prefix, row + len, 0.0f);
    }
    // pass 3: out = P V, over the block's first len positions of the packed values
    panel_gemm({out + static_cast<std::size_t>(t0) * ldo, ldo, block, L, packed_values,
                static_cast<long>(L) * kPanelWidth, nullptr, rows, len, HS, false});
  }
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
