#include "matmul.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "float16.h"
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
      case WeightType::F16:
        for (long c = 0; c < cols; ++c) o[c] = widen(static_cast<const Half*>(weight.data) + at, c);
        break;
      case WeightType::I8:
        for (long c = 0; c < cols; ++c) o[c] = widen(static_cast<const int8_t*>(weight.data) + at, c) * weight.scales[r];
        break;
    }
  }
}

namespace {
// Room for a block of widened output-major weights: kDequantFloats, or one panel where that is more. Growing with
// K, so the workspace's size for the widest K serves every product (model.cc).
long block_floats(long K) { return std::max(kDequantFloats, K * kPanelWidth); }
long block_panels(long K) { return block_floats(K) / (K * kPanelWidth); }

// Output rows [o0, o0 + rows) of an output-major weight as float32 panels (panel_gemm.h's layout).
void widen_to_panels(float* packed, const Matrix& weight, long o0, long rows, long K) {
  const size_t at = static_cast<size_t>(o0) * K;
  switch (weight.type) {
    case WeightType::F32:
      pack_panels_from_output_major(packed, static_cast<const float*>(weight.data) + at, K, rows);
      break;
    case WeightType::BF16:
      pack_panels_from_output_major(packed, static_cast<const uint16_t*>(weight.data) + at, K, rows);
      break;
    case WeightType::F16:
      pack_panels_from_output_major(packed, static_cast<const Half*>(weight.data) + at, K, rows);
      break;
    case WeightType::I8: {  // float(q) * scale, one rounding, as dequantize_rows widens it
      const int8_t* q = static_cast<const int8_t*>(weight.data) + at;
      const float* scales = weight.scales + o0;
#pragma omp parallel for schedule(static)
      for (long p = 0; p < panel_count(rows); ++p) {
        float* panel = packed + p * K * kPanelWidth;
        const long c0 = p * kPanelWidth, cols = std::min<long>(kPanelWidth, rows - c0);
        for (long k = 0; k < K; ++k) {
          for (long j = 0; j < kPanelWidth; ++j) {
            panel[k * kPanelWidth + j] = j < cols ? static_cast<float>(q[(c0 + j) * K + k]) * scales[c0 + j] : 0.0f;
          }
        }
      }
      break;
    }
  }
}
}  // namespace

long matmul_scratch_size(const Matrix& weight, long N, long K) {
  static_assert(kPackMinRows > kSmallRows, "decode needs no scratch");
  if (weight.layout == Layout::Panels) return packed_inp_size(N, K);
  return N > kSmallRows ? block_floats(K) + packed_inp_size(N, K) : 0;
}

void matmul(float* out, const float* inp, const Matrix& weight, const float* bias, int N, int K, int OC,
            bool accumulate, float* scratch, Isa max_isa) {
  if (weight.layout == Layout::Panels) {  // every row count: decode and prefill alike
    panel_gemm(out, inp, static_cast<const float*>(weight.data), bias, N, K, OC, accumulate, scratch, max_isa);
    return;
  }
  if (N <= kSmallRows) {  // decode: stream the weights once
    gemv_rows(out, inp, weight, bias, N, K, OC, accumulate, max_isa);
    return;
  }
  // Output-major weights, many rows (a prefill with 16/8-bit weights): a block of output rows at a time widened
  // into float32 panels, then the panel kernel over them. Each output is then summed in input order, as the float32
  // model sums it: the float32 model's result on the stored values, bit for bit, on any thread count and whatever
  // other rows (17 or more in all) share the call. Decode (gemv_rows) sums in another order, so a row's 16/8-bit
  // result differs between the two paths by rounding. OpenBLAS sgemm on rows widened the same way, which this
  // replaced, moved sums by about 1e-6 with the thread count and ran at about the same speed (prefill of 512
  // tokens, GPT-2 124M: this took 0.90-0.95x its time in median over 16 alternations).
  const long panels = block_panels(K);
  float* packed_rows = scratch + block_floats(K);
  for (long o0 = 0; o0 < OC; o0 += panels * kPanelWidth) {
    const long rows = std::min<long>(panels * kPanelWidth, OC - o0);
    widen_to_panels(scratch, weight, o0, rows, K);
    PanelProduct product{out + o0, OC, inp, K, scratch, static_cast<long>(K) * kPanelWidth,
                         bias != nullptr ? bias + o0 : nullptr, N, K, static_cast<int>(rows), accumulate};
    if (packed_inp_size(N, K) > 0) product.packed_inp = packed_rows;
    panel_gemm(product, max_isa);
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
