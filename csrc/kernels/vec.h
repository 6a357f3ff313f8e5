// v8f: eight floats as one value, with GCC vector extensions, for the kernels whose inner loops the compiler did
// not vectorise well from scalar code with `omp simd` (gemv.cc's four-row block ran 4x slower than four one-row
// passes: its sums were spilled). One v8f is one AVX2 register in the x86-64-v3 clone of a KVCACHE_MULTIVERSION
// kernel and a pair of SSE registers in the baseline clone.
#pragma once

#include <cstdint>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace kvcache::kernels {
namespace {  // NOLINT: internal linkage, as the same functions compile differently per file (gemv_rows.h)

typedef float v8f __attribute__((vector_size(32)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));
typedef int8_t v8i8 __attribute__((vector_size(8)));
typedef int16_t v8i16 __attribute__((vector_size(16)));
typedef int32_t v8i32 __attribute__((vector_size(32)));

// Eight consecutive weights as float32 (memcpy: unaligned loads).
__attribute__((always_inline)) inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline v8f load8(const uint16_t* p) {  // bfloat16: the high half of a float32
  v8u16 h;
  std::memcpy(&h, p, sizeof h);
  const v8u32 bits = __builtin_convertvector(h, v8u32) << 16;
  return (v8f)bits;  // a cast between vector types of one size keeps the bits
}
__attribute__((always_inline)) inline v8f load8(const int8_t* p) {
#if defined(__AVX2__)  // gemv_avx2.cc: one vpmovsxbd and one vcvtdq2ps
  const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  return f;
#else
  v8i8 q;
  std::memcpy(&q, p, sizeof q);
  // by way of int16 and int32: GCC 12 turns int8 -> float, and even int8 -> int32, into eight scalar conversions;
  // these steps at least stay in vector registers (about ten instructions, see gemv_avx2.h)
  return __builtin_convertvector(__builtin_convertvector(__builtin_convertvector(q, v8i16), v8i32), v8f);
#endif
}

__attribute__((always_inline)) inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

// x in every lane, as one vbroadcastss. Neither `v8f{} + x` (without -ffast-math a real addition: 0 + -0 is +0)
// nor `v8f{x, x, ...}` (GCC 12 builds it lane by lane with vinsertps inside target_clones). Subtracting +0 is
// exact for every x, so GCC drops it and keeps the broadcast.
__attribute__((always_inline)) inline v8f broadcast8(float x) { return x - v8f{}; }

__attribute__((always_inline)) inline float hsum(v8f v) {
  float sum = 0.0f;
  for (int l = 0; l < 8; ++l) sum += v[l];
  return sum;
}

// The first n < 8 floats of p, the other lanes zero; store_partial writes back only those n.
__attribute__((always_inline)) inline v8f load_partial(const float* p, int n) {
  v8f v = {};
  std::memcpy(&v, p, sizeof(float) * n);
  return v;
}
__attribute__((always_inline)) inline void store_partial(float* p, v8f v, int n) { std::memcpy(p, &v, sizeof(float) * n); }

// e^x, lane by lane, to about 2 ulp (Cephes' expf: x = n ln2 + r, a degree-6 polynomial for e^r, 2^n from the
// exponent bits). Ours rather than a library's so that a lane's result never depends on where it sits in memory:
// xsimd's exp runs on aligned blocks and std::exp on the edges, so the same score gave different bits depending
// on the buffer's alignment. Inputs are clamped to [-87.34, 88.38]: below, the result is 2^-126 (1.2e-38, where
// the true value is a denormal or 0: invisible in a softmax or a sigmoid); above, about 2^127.
__attribute__((always_inline)) inline v8f exp8(v8f x) {
  const v8f lo = v8f{} - 87.3365447505531f, hi = v8f{} + 88.3762626647949f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  v8f n = x * 1.44269504088896341f + 0.5f;  // round(x / ln2) via floor(x / ln2 + 0.5)
  v8f floor_n = __builtin_convertvector(__builtin_convertvector(n, v8i32), v8f);
  floor_n += __builtin_convertvector(floor_n > n, v8f);  // truncation rounded negatives up: the mask is -1
  const v8f r = x - floor_n * 0.693359375f + floor_n * 2.12194440e-4f;
  v8f y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const v8i32 bits = (__builtin_convertvector(floor_n, v8i32) + 127) << 23;
  return y * (v8f)bits;
}

}  // namespace
}  // namespace kvcache::kernels
