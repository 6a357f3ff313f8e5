// KVCACHE_MULTIVERSION compiles a kernel twice, for x86-64-v3 (AVX2 + FMA) and for baseline x86-64, and picks one
// at load time (GCC target_clones), so one build runs fast here and correctly on any x86-64. The level is chosen
// by the CPU's features: "arch=haswell" would test the CPU *model* and miss every AMD machine. Elsewhere it is
// empty and the portable loop is compiled for the target; so it is in a file compiled for AVX2 already (the
// *_avx2.cc kernels chosen at run time), where both clones would be the same code. Inner loops are written with vec.h's 8-float vectors
// (or `omp simd` where the compiler vectorises them well), never with -ffast-math.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__)
#define KVCACHE_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KVCACHE_MULTIVERSION
#endif
