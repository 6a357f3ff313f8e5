// Matrix products for a few rows of activations (decode: one token per sequence, batch <= kSmallRows).
// Memory-bound: every weight is read exactly once per call; each thread streams its own contiguous share of the
// matrix's rows (outputs), as dot products. Widening them to float32 panels for the prefill path (matmul.cc), as
// BLAS packs them for GEMM even at 2 rows, costs a second pass over them; this kernel reads them in place.
#pragma once

#include "isa.h"
#include "matrix.h"

namespace kvcache::kernels {

constexpr int kSmallRows = 16;  // up to this many rows (decode) the weights are streamed in place

// out (N, OC) (+)= inp (N, K) @ weight^T + bias      weight (OC, K) of any storage type; bias may be null
// max_isa below kAvx2 keeps int8 and float16 weights on the multiversioned kernel even where the AVX2 one runs (for
// their tests).
void gemv_rows(float* out, const float* inp, const Matrix& weight, const float* bias, int N, int K, int OC,
               bool accumulate, Isa max_isa = kBestIsa);

}  // namespace kvcache::kernels
