// KVCACHE_MULTIVERSION compiles a kernel twice, for x86-64-v3 (AVX2 + FMA) and for baseline x86-64, and picks one
// at load time (GCC target_clones), so one build runs fast here and correctly on any x86-64. The level is chosen
// by the CPU's features: "arch=haswell" would test the CPU *model* and miss every AMD machine. Elsewhere it is
// empty and the portable loop is compiled for the target. Inner loops are written with vec.h's 8-float vectors
// (or `omp simd` where the compiler vectorises them well), never with -ffast-math.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KVCACHE_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KVCACHE_MULTIVERSION
#endif
