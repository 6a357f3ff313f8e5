// Cross-attention (GPT2Attention(is_cross_attention=True)): the decoder's new tokens attend over every encoder
// position of a CrossCache. A pure forward function, out-parameter first, as layers.h.
#pragma once

#include "cross_cache.h"

namespace kvcache {

// out (n_rows * T, NH HS) = per head, softmax(q . K^T / sqrt(HS)) @ V over all S positions of the cross cache of
// `layer` (no mask: each query sees every encoder position)
//                                                          crossattention(h, encoder_hidden_states) before its c_proj
// q (n_rows * T, NH HS): the queries (q_attn of the new tokens); input row r reads cross cache row cache_rows[r].
// scores: cross_attention_scratch_floats(S) floats.
void cross_attention_forward(float* out, const float* q, const CrossCache& cross, int layer, const int* cache_rows,
                             int n_rows, int T, float* scores);

// Floats of scratch cross_attention_forward needs for S encoder positions: S scores per thread.
long cross_attention_scratch_floats(int S);

}  // namespace kvcache
