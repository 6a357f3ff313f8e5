// The matrix products of the model: out (N, OC) (+)= inp (N, K) @ weight^T + bias, weight (OC, K) (matrix.h).
// float32 weights in panels: panel_gemm.h, for any number of rows. Output-major weights: few rows (decode) take
// the streaming kernel of gemv.h; many rows (a prefill with 16/8-bit weights) the panel kernel too, the weights
// widened to float32 panels a block of outputs at a time into scratch, a cost that many rows amortise. A naive
// float32 twin serves the tests.
#pragma once

#include "isa.h"
#include "matrix.h"

namespace kvcache::kernels {

// Floats of scratch a product of N rows needs: the packed rows of a prefill (panel_gemm.h), and for 16/8-bit
// weights a block of them widened to float32 panels; decode (N <= kSmallRows) needs none.
constexpr long kDequantFloats = 1L << 22;
long matmul_scratch_size(const Matrix& weight, long N, long K);

// With accumulate the product is added to out (residual connections fused into the matmul). bias may be null.
// scratch: matmul_scratch_size(weight, N, K) floats. max_isa: the most capable build of the kernels (isa.h) the
// call may run, lowered by the tests that compare the builds.
void matmul(float* out, const float* inp, const Matrix& weight, const float* bias, int N, int K, int OC,
            bool accumulate, float* scratch, Isa max_isa = kBestIsa);

// Rows [r0, r1) of a (rows, cols) weight as float32 (output-major, whatever the weight's layout).
void dequantize_rows(float* out, const Matrix& weight, long r0, long r1, long cols);

// The same product, one multiply-add at a time, on a float32 (OC, K) weight.
void matmul_naive(float* out, const float* inp, const float* weight, const float* bias, int N, int K, int OC,
                  bool accumulate);

}  // namespace kvcache::kernels
