#include "matmul.h"

#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "gemv.h"
#include "panel_gemm.h"

namespace kvcache::kernels {

using std::size_t;

void dequantize_rows(float* out, const Matrix& weight, long r0, long r1, long cols) {
#pragma omp parallel for schedule(static)
  for (long r = r0; r < r1; ++r) {
    float* o = out + static_cast<size_t>(r - r0) * cols;
    const size_t at = static_cast<size_t>(r) * cols;
    if (weight.layout == Layout::Panels) {  // output r is lane r % 16 of panel r / 16
      const float* panel = static_cast<const float*>(weight.data) + (r / kPanelWidth) * cols * kPanelWidth;
      for (long c = 0; c < cols; ++c) o[c] = panel[c * kPanelWidth + r % kPanelWidth];
      continue;
    }
    switch (weight.type) {
      case WeightType::F32: std::copy_n(static_cast<const float*>(weight.data) + at, cols, o); break;
      case WeightType::BF16:
        for (long c = 0; c < cols; ++c) o[c] = widen(static_cast<const uint16_t*>(weight.data) + at, c);
        break;
      case WeightType::I8:
        for (long c = 0; c < cols; ++c) o[c] = widen(static_cast<const int8_t*>(weight.data) + at, c) * weight.scales[r];
        break;
    }
  }
}

long matmul_scratch_size(const Matrix& weight, long N, long K) {
  static_assert(kPackMinRows > kSmallRows, "decode needs no scratch");
  if (weight.layout == Layout::Panels) return packed_inp_size(N, K);
  return N > kSmallRows && weight.type != WeightType::F32 ? kDequantFloats : 0;
}

void matmul(float* out, const float* inp, const Matrix& weight, const float* bias, int N, int K, int OC,
            bool accumulate, float* scratch, bool avx2) {
  if (weight.layout == Layout::Panels) {  // every row count: decode and prefill alike
    panel_gemm(out, inp, static_cast<const float*>(weight.data), bias, N, K, OC, accumulate, scratch, avx2);
    return;
  }
  if (N <= kSmallRows) {  // decode: stream the weights once
    gemv_rows(out, inp, weight, bias, N, K, OC, accumulate, avx2);
    return;
  }
  // The bias is laid into (or added onto) out first, so BLAS can accumulate with beta = 1 in a single pass.
  if (bias != nullptr) {
    for (int n = 0; n < N; ++n) {
      float* row = out + static_cast<size_t>(n) * OC;
      if (accumulate) {
        for (int o = 0; o < OC; ++o) row[o] += bias[o];
      } else {
        std::copy(bias, bias + OC, row);
      }
    }
  }
  const float beta = accumulate || bias != nullptr ? 1.0f : 0.0f;
  if (weight.type == WeightType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, K, 1.0f, inp, K,
                static_cast<const float*>(weight.data), K, beta, out, OC);
    return;
  }
  // Reduced precision: widen a block of output rows at a time and fill that block of output columns.
  const int block = static_cast<int>(std::max(1L, kDequantFloats / K));
  for (int o0 = 0; o0 < OC; o0 += block) {
    const int rows = std::min(block, OC - o0);
    dequantize_rows(scratch, weight, o0, o0 + rows, K);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, rows, K, 1.0f, inp, K, scratch, K, beta, out + o0, OC);
  }
}

void matmul_naive(float* out, const float* inp, const float* weight, const float* bias, int N, int K, int OC,
                  bool accumulate) {
  for (int n = 0; n < N; ++n) {
    for (int o = 0; o < OC; ++o) {
      float sum = bias != nullptr ? bias[o] : 0.0f;
      for (int k = 0; k < K; ++k) sum += inp[static_cast<size_t>(n) * K + k] * weight[static_cast<size_t>(o) * K + k];
      float& y = out[static_cast<size_t>(n) * OC + o];
      y = accumulate ? y + sum : sum;
    }
  }
}

}  // namespace kvcache::kernels
