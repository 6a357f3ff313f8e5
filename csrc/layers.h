// The blocks of both families as pure forward functions, out-parameter first (llm.c style).
// Dimensions: N rows of activations (batch rows x tokens), C channels, NH query heads, NKV key/value heads, HS
// channels per head, F MLP hidden size.
#pragma once

#include "kv_cache.h"

namespace kvcache {

// The heads of one attention layer: NH query heads, NKV key/value heads (NKV divides NH; NKV == NH is multi-head
// attention, 1 multi-query), HS channels each. Query head h reads key/value head h / (NH / NKV).
struct AttentionShape {
  int NH, NKV, HS;
  int qkv_width() const { return (NH + 2 * NKV) * HS; }  // a token's q, k, v side by side
};

// out (N, C) = wte[tokens] + wpe[positions]                            transformer.wte(ids) + transformer.wpe(pos)
void embedding_forward(float* out, const int* tokens, const int* positions, const float* wte, const float* wpe,
                       int N, int C);

// out (N, C) = (inp - mean) / sqrt(var + eps) * weight + bias, per row          nn.LayerNorm(C, eps)
void layernorm_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                       float eps);

// out (N, C) = table[tokens]                                                    model.embed_tokens(ids)
void embedding_lookup(float* out, const int* tokens, const float* table, int N, int C);

// out (N, C) = x / sqrt(mean(x^2) + eps) * weight, per row                     LlamaRMSNorm(C, eps)
void rmsnorm_forward(float* out, const float* inp, const float* weight, int N, int C, float eps);

// out (N, F) = silu(gate_up[:, :F]) * gate_up[:, F:]               act_fn(gate_proj(x)) * up_proj(x)
void swiglu_forward(float* out, const float* gate_up, int N, int F);

// table (N, HS): cos of each row's rotary angles position * inv_freq[i] (i < HS/2), then their sin
void rope_table(float* table, const int* positions, const float* inv_freq, int N, int HS);

// Rotates the query and key heads of qkv rows (N, (NH + 2 NKV) HS) in place by their row's angles, transformers'
// rotate-half convention: x[i], x[i + HS/2] -> x[i] cos - x[i + HS/2] sin, x[i + HS/2] cos + x[i] sin
//                                                                                  apply_rotary_pos_emb(q, k, cos, sin)
void rope_forward(float* qkv, const float* table, int N, const AttentionShape& heads);

// x (n) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place          ACT2FN["gelu_new"]
void gelu_forward(float* x, long n);

// From this many new tokens per row on, attention runs as matrix products (prefill); below, query by query.
constexpr int kBlockAttentionMin = 16;
// Below the prefill path, a query over more positions than this is split into chunks of this many, each a work
// item of its own, and the chunks merged (kernels::merge_partials): a model with few key/value heads (SmolLM2: 3)
// otherwise gives two threads 3 items per row, one thread twice the other's share of a long cache. The split
// depends on the query's length only, so a row's result is the same alone or batched, on any thread count.
constexpr int kAttentionChunk = 256;

// Floats of split-attention partials for up to n_queries queries of NH heads over max_seq_len positions.
long attention_partials_floats(int n_queries, int NH, int HS, int max_seq_len);

// Causal self-attention over the cache for n_rows batch rows of T new tokens each.
// qkv (n_rows * T, (NH + 2 NKV) HS): q, k, v of the new tokens; their k, v are written into the cache of `layer` at
// each row's current length (cache_rows[r] is the cache row of input row r), then every new query attends over all
// positions up to and including its own. out (n_rows * T, NH HS).
// scratch: (threads, attention_scratch_floats(T, cache.max_seq_len(), HS)) floats; partials:
// attention_partials_floats(n_rows * T, NH, HS, cache.max_seq_len()) floats when T < kBlockAttentionMin.
// The cache lengths are not advanced here: the model does that once after the last layer.
void attention_forward(float* out, const float* qkv, KVCache& cache, int layer, const int* cache_rows, int n_rows,
                       int T, const AttentionShape& heads, float* scratch, float* partials);

// Per thread: a block's scores and packed keys and values (kernels/attention.h), or one row of scores.
long attention_scratch_floats(int T, int max_seq_len, int HS);

}  // namespace kvcache
