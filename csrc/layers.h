// The GPT-2 blocks as pure forward functions, out-parameter first (llm.c style).
// Dimensions: N rows of activations (batch rows x tokens), C channels, NH heads, HS = C / NH.
#pragma once

#include "kv_cache.h"

namespace kvcache {

// out (N, C) = wte[tokens] + wpe[positions]                            transformer.wte(ids) + transformer.wpe(pos)
void embedding_forward(float* out, const int* tokens, const int* positions, const float* wte, const float* wpe,
                       int N, int C);

// out (N, C) = (inp - mean) / sqrt(var + eps) * weight + bias, per row          nn.LayerNorm(C, eps)
void layernorm_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                       float eps);

// x (n) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place          ACT2FN["gelu_new"]
void gelu_forward(float* x, long n);

// From this many new tokens per row on, attention runs as matrix products (prefill); below, query by query.
constexpr int kBlockAttentionMin = 16;

// Causal self-attention over the cache for n_rows batch rows of T new tokens each.
// qkv (n_rows * T, 3C): q, k, v of the new tokens; their k, v are written into the cache of `layer` at each
// row's current length (cache_rows[r] is the cache row of input row r), then every new query attends over all
// positions up to and including its own. out (n_rows * T, C).
// scratch: (threads, attention_scratch_floats(T, cache.max_seq_len(), HS)) floats.
// The cache lengths are not advanced here: the model does that once after the last layer.
void attention_forward(float* out, const float* qkv, KVCache& cache, int layer, const int* cache_rows, int n_rows,
                       int T, int NH, int HS, float* scratch);

// Per thread: a block's scores and packed keys and values (kernels/attention.h), or one row of scores.
long attention_scratch_floats(int T, int max_seq_len, int HS);

}  // namespace kvcache
