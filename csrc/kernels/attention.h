// Causal self-attention over a row of the KV cache: one query at a time (decode), or a block of T queries at once
// with two register-tiled products (prefill, panel_gemm.h), where per-query dot products would leave the FMA units
// idle.
//
// The keys and values are of the cache's element type E: float, Half (IEEE float16) or uint16_t (bfloat16),
// widened to float32 as they are read; queries, scores and sums are float32.
#pragma once

#include "isa.h"

namespace kvcache::kernels {

// out (HS) = softmax(q . K[0:len]^T * scale) @ V[0:len]
// q (HS); keys, values (len, HS) dense; scores (len) is scratch. max_isa = kPortable runs the portable build even where
// the AVX2 + F16C one could (tests compare the two).
template <class E>
void attend(float* out, const float* q, const E* keys, const E* values, int len, int HS, float scale, float* scores,
            Isa max_isa = kBestIsa);
// A query's positions split into chunks (long contexts: more work items than (row, head) pairs give, so that the
// threads stay busy when a model has few key/value heads). One chunk of len positions:
//   out (HS) = sum_j exp(s_j - max) V[j],  s_j = q . K[j] * scale,  max = max_j s_j,  sum = sum_j exp(s_j - max)
template <class E>
void attend_partial(float* out, float* max, float* sum, const float* q, const E* keys, const E* values, int len,
                    int HS, float scale, float* scores, Isa max_isa = kBestIsa);
// The chunks of one query combined: out (HS) = softmax(q K^T * scale) V. partials: n_chunks x (2 + HS) floats,
// each [max, sum, out...] as attend_partial left them.
void merge_partials(float* out, const float* partials, int n_chunks, int HS);

// The float64 reference, on float32 keys and values.
void attend_naive(float* out, const float* q, const float* keys, const float* values, int len, int HS, float scale,
                  float* scores);

// T queries at positions start .. start + T - 1 over keys / values (start + T, HS):
// out[t] (HS) = softmax(q[t] . K[0 : start + t + 1]^T * scale) @ V[0 : start + t + 1]
// q rows are ldq floats apart, out rows ldo; scratch: attend_block_scratch(T, start + T, HS) floats.
template <class E>
void attend_block(float* out, int ldo, const float* q, int ldq, const E* keys, const E* values, int start, int T,
                  int HS, float scale, float* scratch);
// The scores (T, L) and the keys and values (L, HS) packed into panels.
long attend_block_scratch(int T, int L, int HS);

}  // namespace kvcache::kernels
