// Which build of the kernels a call runs. Every kernel with a build for a wider instruction set keeps its
// portable one, and the fastest one this CPU runs is chosen at run time, so one binary runs on any x86-64 (and
// on other architectures, where only the portable builds exist):
//  - portable: compiled for the build's target (baseline x86-64 here, or KVCACHE_MULTIVERSION clones, see
//    multiversion.h);
//  - AVX2 + FMA + F16C (*_avx2.cc): the float32 panel products, int8 and float16 decode, a decode step's attention;
//  - AVX-512 F + VL (panel_gemm_avx512.cc): the float32 panel products only. Still 8-float vectors, but 32 of
//    them, so a decode tile holds up to 11 rows' sums at once (panel_tiles.h). Every output is summed in the same
//    order with the same FMAs, so its results are the AVX2 build's, bit for bit.
#pragma once

#include <optional>
#include <string>

namespace kvcache::kernels {

enum class Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };  // ordered: each runs wherever the next does
constexpr Isa kBestIsa = Isa::kAvx512;  // as a limit: whatever this CPU runs

// True when this binary has the kernels built for `isa` and the CPU (and OS) runs them; checked once.
bool isa_available(Isa isa);
// The most capable build this CPU runs, up to `limit` (the tests compare the builds by lowering it).
Isa usable_isa(Isa limit);

// "portable", "avx2", "avx512": how the tests and benchmarks/step_products.cc name a build.
const char* isa_name(Isa isa);
std::optional<Isa> isa_from_name(const std::string& name);  // nullopt for any other name

}  // namespace kvcache::kernels
