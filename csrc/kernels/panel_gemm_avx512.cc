// Built with -mavx2 -mfma -mavx512f -mavx512vl where CMake adds those flags (x86-64, GCC); elsewhere nothing calls
// it. See panel_tiles.h.
#include "panel_gemm_avx512.h"

#if defined(KVCACHE_AVX512_KERNELS) && !defined(__AVX512VL__)
#error "panel_gemm_avx512.cc must be compiled with -mavx512f -mavx512vl"
#endif

#include "panel_tiles.h"

namespace kvcache::kernels {

void panel_range_avx512(const PanelProduct& product, int p0, int p1) { panel_range(product, p0, p1); }
int chunk_panels_avx512(const PanelProduct& product) { return chunk_panels(product); }

}  // namespace kvcache::kernels
