// panel_gemm's loop nest compiled for AVX-512 F + VL (panel_gemm_avx512.cc, built with -mavx512f -mavx512vl on
// x86-64 with GCC): the same 8-float vectors as the AVX2 build, but 32 registers of them, so that a decode tile
// holds up to 11 rows (panel_tiles.h). Results are the AVX2 build's, bit for bit.
#pragma once

#include "panel_gemm.h"

namespace kvcache::kernels {

// Panels [p0, p1) of the product; only call when isa_available(Isa::kAvx512) (isa.h).
void panel_range_avx512(const PanelProduct& product, int p0, int p1);
// Panels a thread takes at a time (stream_split.h).
int chunk_panels_avx512(const PanelProduct& product);

}  // namespace kvcache::kernels
