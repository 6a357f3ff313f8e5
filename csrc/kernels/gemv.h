// Matrix products for a few rows of activations (decode: one token per sequence, batch <= kSmallRows).
// Memory-bound: every weight is read exactly once per call; each thread streams its own contiguous share of the
// matrix's rows (outputs), as dot products. BLAS packs the weights for GEMM even at 2 rows, which costs a second
// pass over them; this kernel does not.
#pragma once

#include "matrix.h"

namespace kvcache::kernels {

constexpr int kSmallRows = 16;  // up to this many rows the streaming kernel beats BLAS (benchmarks/speed.py)

// out (N, OC) (+)= inp (N, K) @ weight^T + bias      weight (OC, K) of any storage type; bias may be null
// int8_avx2 = false keeps int8 weights on the multiversioned kernel even where the AVX2 one runs (for its test).
void gemv_rows(float* out, const float* inp, const Matrix& weight, const float* bias, int N, int K, int OC,
               bool accumulate, bool int8_avx2 = true);

}  // namespace kvcache::kernels
