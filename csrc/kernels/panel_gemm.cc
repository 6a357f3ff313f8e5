#include "panel_gemm.h"

#include <algorithm>
#include <cstddef>

#include "float16.h"
#include "panel_gemm_avx2.h"
#include "panel_gemm_avx512.h"
#include "panel_tiles.h"
#include "stream_split.h"

namespace kvcache::kernels {

namespace {
// The fallback for CPUs without AVX2 + FMA (and other architectures): the same loops for the build's target.
void panel_range_portable(const PanelProduct& product, int p0, int p1) { panel_range(product, p0, p1); }
int chunk_panels_portable(const PanelProduct& product) { return chunk_panels(product); }

// One build of the loop nest. Each plans its own decode tiles (panel_tiles.h), so each also says how many panels a
// thread takes at a time.
struct PanelBuild {
  void (*range)(const PanelProduct&, int, int);
  int (*chunk)(const PanelProduct&);
};

PanelBuild panel_build(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return {panel_range_avx512, chunk_panels_avx512};
    case Isa::kAvx2: return {panel_range_avx2, chunk_panels_avx2};
    case Isa::kPortable: break;
  }
  return {panel_range_portable, chunk_panels_portable};
}
}  // namespace

namespace {
// Weight (k, o) at source[k * k_stride + o * o_stride]: one loop for both source layouts, and for a 16-bit KV
// cache's keys and values, widened here once.
template <class E>
void pack_panels_strided(float* packed, const E* source, long K, long OC, long k_stride, long o_stride) {
  const long panels = panel_count(OC);
#pragma omp parallel for schedule(static)
  for (long p = 0; p < panels; ++p) {
    float* dst = packed + p * K * kPanelWidth;
    const long c0 = p * kPanelWidth, cols = std::min<long>(kPanelWidth, OC - c0);
    for (long k = 0; k < K; ++k) {
      for (long j = 0; j < kPanelWidth; ++j) {
        dst[k * kPanelWidth + j] = j < cols ? widen(source, k * k_stride + (c0 + j) * o_stride) : 0.0f;
      }
    }
  }
}

// Rows kPackedRows * block .. + kPackedRows - 1 of the product's input as one (K, kPackedRows) micro-panel.
void pack_rows(const PanelProduct& pp, int block) {
  float* dst = pp.packed_inp + static_cast<size_t>(block) * kPackedRows * pp.K;
  const float* src = pp.inp + static_cast<size_t>(block) * kPackedRows * pp.ldi;
  for (int k = 0; k < pp.K; ++k) {
    for (int r = 0; r < kPackedRows; ++r) dst[k * kPackedRows + r] = src[r * pp.ldi + k];
  }
}

}  // namespace

template <class E>
void pack_panels(float* packed, const E* in_major, long K, long OC) {
  pack_panels_strided(packed, in_major, K, OC, OC, 1);
}

template <class E>
void pack_panels_from_output_major(float* packed, const E* out_major, long K, long OC) {
  pack_panels_strided(packed, out_major, K, OC, 1, K);
}

template void pack_panels(float*, const float*, long, long);
template void pack_panels(float*, const Half*, long, long);
template void pack_panels(float*, const uint16_t*, long, long);
template void pack_panels_from_output_major(float*, const float*, long, long);
template void pack_panels_from_output_major(float*, const Half*, long, long);
template void pack_panels_from_output_major(float*, const uint16_t*, long, long);

void panel_gemm(float* out, const float* inp, const float* packed, const float* bias, int N, int K, int OC,
                bool accumulate, float* scratch, Isa max_isa) {
  PanelProduct product{out, OC, inp, K, packed, static_cast<long>(K) * kPanelWidth, bias, N, K, OC, accumulate};
  if (packed_inp_size(N, K) > 0) product.packed_inp = scratch;
  panel_gemm(product, max_isa);
}

void panel_gemm(const PanelProduct& product, Isa max_isa) {
  const int panels = static_cast<int>(panel_count(product.OC));
  const PanelBuild build = panel_build(usable_isa(max_isa));
  if (product.packed_inp != nullptr) {
#pragma omp parallel for schedule(static)
    for (int block = 0; block < product.N / kPackedRows; ++block) pack_rows(product, block);
  }
  parallel_stream(panels, build.chunk(product), [&](int p0, int p1) { build.range(product, p0, p1); });
}

}  // namespace kvcache::kernels
