// GELU, tanh form (transformers' "gelu_new", GPT-2's activation), in place over n floats:
//   0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3),
// computed as x * sigmoid(2u) = x / (1 + e^(-2u)), the same function with one exponential (vec.h's exp8) and
// no cancellation. It runs over every MLP activation of a prefill (12 x T x 3072 values); xtensor's tanh, which
// is compiled for baseline x86-64 only, took 7% of a 512-token prefill.
#pragma once

namespace kvcache::kernels {

void gelu(float* x, long n);
void gelu_naive(float* x, long n);  // std::tanh in double, one value at a time

}  // namespace kvcache::kernels
