// Built with -mavx2 -mfma where CMake adds those flags (x86-64, GCC); elsewhere nothing calls it. See panel_tiles.h.
#include "panel_gemm_avx2.h"

#if defined(KVCACHE_AVX2_KERNELS) && !defined(__AVX2__)
#error "panel_gemm_avx2.cc must be compiled with -mavx2 -mfma"
#endif

#include "panel_tiles.h"

namespace kvcache::kernels {

void panel_range_avx2(const PanelProduct& product, int p0, int p1) { panel_range(product, p0, p1); }
int chunk_panels_avx2(const PanelProduct& product) { return chunk_panels(product); }

}  // namespace kvcache::kernels
