// IEEE half precision (binary16: 5 exponent bits, 10 mantissa bits) for the 16-bit KV cache and float16 weights
// (matrix.h; the store refuses weights beyond 65504 before converting them, quantize.h), converted with
// integer and float arithmetic on vec.h's 8-lane vectors rather than F16C instructions or _Float16: GCC 12 turns
// a vector of _Float16 into eight scalar conversions, and F16C intrinsics cannot sit inside the target_clones
// kernels (their baseline clone would not compile). The same code runs in every clone and on every target, and
// gives the same bits everywhere.
//
// float -> half rounds to nearest, ties to even, and saturates: beyond the largest half (65504) the value is
// clamped there instead of becoming infinity, so a large key can cost precision but never turn a softmax into NaN.
// NaN stays NaN. half -> float is exact.
#pragma once

#include <cstdint>
#include <cstring>

#include "half.h"
#include "matrix.h"
#include "vec.h"
#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kvcache {
namespace kernels {
namespace {  // NOLINT: internal linkage, as vec.h

// half -> float: the 15 bits below the sign, moved under the float exponent, are the value times 2^-112 for
// normal and subnormal halves alike (the float is then normal or subnormal too); one multiplication restores it.
// Infinity and NaN (exponent 31) get the float's all-ones exponent instead.
__attribute__((always_inline)) inline v8f load8(const Half* p) {
#if defined(__F16C__)  // attention_avx2.cc, gemv_avx2.cc: one vcvtph2ps, exact like the arithmetic below
  const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return f;
#endif
  v8u16 h;
  std::memcpy(&h, p, sizeof h);
  const v8u32 x = __builtin_convertvector(h, v8u32);
  const v8u32 magnitude_bits = (x & 0x7fffu) << 13;
  const v8f magnitude = (v8f)magnitude_bits * 0x1p112f;
  const v8u32 inf_or_nan = (v8u32)((x & 0x7c00u) == 0x7c00u);  // all ones where true
  const v8u32 bits = (v8u32)magnitude | ((x & 0x8000u) << 16) | (inf_or_nan & 0x7f800000u);
  return (v8f)bits;
}

// float -> half, round to nearest even (Maratyszcza's FP16 method): multiplying by 2^112 and then 2^-110 leaves the
// value with its exponent, and adding a power of two chosen from that exponent shifts the bits below half's
// precision out of the float's mantissa with the FPU's own rounding. Values below half's subnormal range round to
// zero; the clamp first keeps finite floats finite.
__attribute__((always_inline)) inline v8u16 to_half_bits(v8f f) {
  const v8f limit = v8f{} + 65504.0f;
  f = f > limit ? limit : f;
  f = f < -limit ? -limit : f;  // NaN fails both comparisons and stays NaN
  const v8u32 w = (v8u32)f;
  const v8u32 sign = w & 0x80000000u;
  const v8u32 shl1 = w + w;
  v8f magnitude = (v8f)(w & 0x7fffffffu);
  magnitude = (magnitude * 0x1p112f) * 0x1p-110f;
  v8u32 bias = shl1 & 0xff000000u;
  bias = bias < 0x71000000u ? v8u32{} + 0x71000000u : bias;  // subnormal halves share the smallest exponent
  const v8f rounded = (v8f)((bias >> 1) + 0x07800000u) + magnitude;
  const v8u32 r = (v8u32)rounded;
  const v8u32 nonsign = ((r >> 13) & 0x7c00u) + (r & 0x0fffu);
  const v8u32 half = (sign >> 16) | (shl1 > 0xff000000u ? v8u32{} + 0x7e00u : nonsign);  // NaN: a quiet NaN
  return __builtin_convertvector(half, v8u16);
}

__attribute__((always_inline)) inline void store8(Half* p, v8f v) {
  const v8u16 h = to_half_bits(v);
  std::memcpy(p, &h, sizeof h);
}

// bfloat16 (a uint16_t, as matrix.h's weights): round to nearest even; NaN stays NaN.
__attribute__((always_inline)) inline void store8(uint16_t* p, v8f v) {
  const v8u32 w = (v8u32)v;
  const v8u32 rounded = (w + 0x7fffu + ((w >> 16) & 1u)) >> 16;
  const v8u32 is_nan = (v8u32)((w & 0x7fffffffu) > 0x7f800000u);
  const v8u32 bits = (is_nan & ((w >> 16) | 0x40u)) | (~is_nan & rounded);
  const v8u16 h = __builtin_convertvector(bits, v8u16);
  std::memcpy(p, &h, sizeof h);
}

// The same conversions for n values, any n (the tail through a partial vector).
template <class E>
inline void store_row(E* dst, const float* src, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) store8(dst + i, load8(src + i));
  if (i < n) {
    E tail[8];
    store8(tail, load_partial(src + i, n - i));
    std::memcpy(dst + i, tail, sizeof(E) * (n - i));
  }
}
inline void store_row(float* dst, const float* src, int n) { std::memcpy(dst, src, sizeof(float) * n); }

template <class E>
inline void load_row(float* dst, const E* src, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) store8(dst + i, load8(src + i));
  if (i < n) {
    E tail[8] = {};
    std::memcpy(tail, src + i, sizeof(E) * (n - i));
    store_partial(dst + i, load8(tail), n - i);
  }
}

}  // namespace

// One element as float32, without vectors (the scalar paths: packing, head sizes not a multiple of 8): the same
// arithmetic as load8, lane by lane. float and bfloat16 elements widen through matrix.h's widen(),
// beside which this one sits (outside the unnamed namespace, so that one name lookup finds all three).
inline float widen(const Half* p, long j) {
  uint16_t h;
  std::memcpy(&h, p + j, sizeof h);
  const uint32_t magnitude_bits = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
  float magnitude;
  std::memcpy(&magnitude, &magnitude_bits, sizeof magnitude);
  magnitude *= 0x1p112f;
  uint32_t bits;
  std::memcpy(&bits, &magnitude, sizeof bits);
  bits |= (static_cast<uint32_t>(h) & 0x8000u) << 16;
  if ((h & 0x7c00u) == 0x7c00u) bits |= 0x7f800000u;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace kernels
}  // namespace kvcache
