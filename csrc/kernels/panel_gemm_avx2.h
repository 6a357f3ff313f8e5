// panel_gemm's loop nest compiled for AVX2 + FMA (panel_gemm_avx2.cc, built with -mavx2 -mfma on x86-64 with GCC);
// panel_tiles.h says why it is not a target_clones kernel.
#pragma once

#include "panel_gemm.h"

namespace kvcache::kernels {

// Panels [p0, p1) of the product; only call when isa_available(Isa::kAvx2) (isa.h).
void panel_range_avx2(const PanelProduct& product, int p0, int p1);
// Panels a thread takes at a time (stream_split.h).
int chunk_panels_avx2(const PanelProduct& product);

}  // namespace kvcache::kernels
