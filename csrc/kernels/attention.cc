#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "attention_avx2.h"
#include "attention_passes.h"
#include "isa.h"
#include "panel_gemm.h"

namespace kvcache::kernels {

// Queries per block of a prefill (attend_block): smaller blocks skip more of the causal triangle, larger ones keep
// the products efficient; 128 measured fastest at 512 tokens.
constexpr int kQueryBlock = 128;

namespace {

// Any head size (the reference path's shapes in tests), one scalar pass each.
template <class E>
void attend_scalar(float* out, const float* q, const E* keys, const E* values, int len, int HS, float scale,
                   float* scores) {
  for (int j = 0; j < len; ++j) {
    float dot = 0.0f;
    for (int c = 0; c < HS; ++c) dot += q[c] * widen(keys, static_cast<long>(j) * HS + c);
    scores[j] = dot * scale;
  }
  softmax_in_place(scores, static_cast<std::size_t>(len));
  for (int c = 0; c < HS; ++c) out[c] = 0.0f;
  for (int j = 0; j < len; ++j)
    for (int c = 0; c < HS; ++c) out[c] += scores[j] * widen(values, static_cast<long>(j) * HS + c);
}

template <class E>
void attend_partial_scalar(float* out, float* max, float* sum, const float* q, const E* keys, const E* values, int len,
                           int HS, float scale, float* scores) {
  float m = -INFINITY;
  for (int j = 0; j < len; ++j) {
    float dot = 0.0f;
    for (int c = 0; c < HS; ++c) dot += q[c] * widen(keys, static_cast<long>(j) * HS + c);
    scores[j] = dot * scale;
    m = scores[j] > m ? scores[j] : m;
  }
  float s = 0.0f;
  for (int j = 0; j < len; ++j) s += scores[j] = std::exp(scores[j] - m);
  for (int c = 0; c < HS; ++c) out[c] = 0.0f;
  for (int j = 0; j < len; ++j)
    for (int c = 0; c < HS; ++c) out[c] += scores[j] * widen(values, static_cast<long>(j) * HS + c);
  *max = m;
  *sum = s;
}

}  // namespace

template <class E>
void attend_partial(float* out, float* max, float* sum, const float* q, const E* keys, const E* values, int len,
                    int HS, float scale, float* scores, Isa max_isa) {
  if (HS % 8 != 0) return attend_partial_scalar(out, max, sum, q, keys, values, len, HS, scale, scores);
  if (usable_isa(max_isa) >= Isa::kAvx2) {
    return attend_partial_avx2(out, max, sum, q, keys, values, len, HS, scale, scores);
  }
  attend_partial_passes(out, max, sum, q, keys, values, len, HS, scale, scores);
}

void merge_partials(float* out, const float* partials, int n_chunks, int HS) {
  const int stride = 2 + HS;
  float m = -INFINITY;
  for (int c = 0; c < n_chunks; ++c) m = partials[c * stride] > m ? partials[c * stride] : m;
  float total = 0.0f;
  for (int i = 0; i < HS; ++i) out[i] = 0.0f;
  for (int c = 0; c < n_chunks; ++c) {
    const float* p = partials + c * stride;
    const float w = std::exp(p[0] - m);  // the chunk's exponentials rescaled to the overall max
    total += w * p[1];
    for (int i = 0; i < HS; ++i) out[i] += w * p[2 + i];
  }
  const float inv = 1.0f / total;
  for (int i = 0; i < HS; ++i) out[i] *= inv;
}

template <class E>
void attend(float* out, const float* q, const E* keys, const E* values, int len, int HS, float scale, float* scores,
            Isa max_isa) {
  if (HS % 8 != 0) return attend_scalar(out, q, keys, values, len, HS, scale, scores);
  if (usable_isa(max_isa) >= Isa::kAvx2) return attend_avx2(out, q, keys, values, len, HS, scale, scores);
  attend_passes(out, q, keys, values, len, HS, scale, scores);
}

long attend_block_scratch(int T, int L, int HS) {
  return static_cast<long>(T) * L + packed_size(HS, L) + packed_size(L, HS);
}

template <class E>
void attend_block(float* out, int ldo, const float* q, int ldq, const E* keys, const E* values, int start, int T,
                  int HS, float scale, float* scratch) {
  const int L = start + T;
  // The keys and values packed into panels once, so that both products run on the linear layers' register tiles:
  // Q K^T with the keys as the outputs (K^T in panels of 16 keys), P V with the head's channels as the outputs.
  // Packing costs L x HS copies (widened to float32 from a 16-bit cache) against T x L x HS multiply-adds;
  // OpenBLAS, called on these small products, ran at a quarter of the FMA peak.
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

template void attend(float*, const float*, const float*, const float*, int, int, float, float*, Isa);
template void attend(float*, const float*, const Half*, const Half*, int, int, float, float*, Isa);
template void attend(float*, const float*, const uint16_t*, const uint16_t*, int, int, float, float*, Isa);
template void attend_partial(float*, float*, float*, const float*, const float*, const float*, int, int, float, float*,
                             Isa);
template void attend_partial(float*, float*, float*, const float*, const Half*, const Half*, int, int, float, float*,
                             Isa);
template void attend_partial(float*, float*, float*, const float*, const uint16_t*, const uint16_t*, int, int, float,
                             float*, Isa);
template void attend_block(float*, int, const float*, int, const float*, const float*, int, int, int, float, float*);
template void attend_block(float*, int, const float*, int, const Half*, const Half*, int, int, int, float, float*);
template void attend_block(float*, int, const float*, int, const uint16_t*, const uint16_t*, int, int, int, float,
                           float*);

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
