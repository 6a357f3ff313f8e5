// The row-streaming kernels of gemv.cc as templates over the weight storage type: one dot product per (output,
// input row), four input rows and three outputs sharing each load where there are enough. Included by gemv.cc
// (compiled for any x86-64, multiversioned) and gemv_avx2.cc (compiled with AVX2 + FMA). Everything here has
// internal linkage, so the two compilations can never be merged into one by the linker.
#pragma once

#include <cstddef>
#include <cstdint>

#include "float16.h"  // load8 and widen for Half: F16C in gemv_avx2.cc, integer arithmetic in gemv.cc
#include "matrix.h"
#include "vec.h"

namespace kvcache::kernels {
namespace {  // NOLINT: per translation unit on purpose (see above)

using std::size_t;

// x . w over K. Four independent vector sums hide the FMA latency.
template <typename T>
__attribute__((always_inline)) inline float dot(const float* x, const T* w, int K) {
  v8f a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    a0 += load8(x + k) * load8(w + k);
    a1 += load8(x + k + 8) * load8(w + k + 8);
    a2 += load8(x + k + 16) * load8(w + k + 16);
    a3 += load8(x + k + 24) * load8(w + k + 24);
  }
  for (; k + 8 <= K; k += 8) a0 += load8(x + k) * load8(w + k);
  float sum = hsum((a0 + a1) + (a2 + a3));
  for (; k < K; ++k) sum += x[k] * widen(w, k);
  return sum;
}

// With several input rows, four share each weight load: eight vector sums in flight, one weight stream.
constexpr int kRowBlock = 4;
constexpr int kOutputTile = 18;  // a multiple of kOutputBlock (below)

// dots[r] = x_r . w for the kRowBlock rows x_r = x + r * K, reading w once.
template <typename T>
__attribute__((always_inline)) inline void dot_block(float* dots, const float* x, const T* w, int K) {
  const float* x0 = x;
  const float* x1 = x + K;
  const float* x2 = x + 2 * static_cast<size_t>(K);
  const float* x3 = x + 3 * static_cast<size_t>(K);
  v8f a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
  int k = 0;
  for (; k + 16 <= K; k += 16) {
    const v8f wa = load8(w + k), wb = load8(w + k + 8);
    a0 += load8(x0 + k) * wa;
    a1 += load8(x1 + k) * wa;
    a2 += load8(x2 + k) * wa;
    a3 += load8(x3 + k) * wa;
    b0 += load8(x0 + k + 8) * wb;
    b1 += load8(x1 + k + 8) * wb;
    b2 += load8(x2 + k + 8) * wb;
    b3 += load8(x3 + k + 8) * wb;
  }
  const v8f sums[kRowBlock] = {a0 + b0, a1 + b1, a2 + b2, a3 + b3};
  for (int r = 0; r < kRowBlock; ++r) {
    float sum = hsum(sums[r]);
    for (int kk = k; kk < K; ++kk) sum += x[r * static_cast<size_t>(K) + kk] * widen(w, kk);
    dots[r] = sum;
  }
}

// With four input rows and three weight rows at once, each loaded vector feeds three or four FMAs: 7 loads for 12
// FMAs (the one-output block above needs 10 for 8), which lifts batch 4-16 decode where loads, not memory, bound it.
constexpr int kOutputBlock = 3;

// dots[j][r] = x_r . w_j for the kRowBlock rows x_r = x + r * K and the kOutputBlock rows w_j = w + j * K.
template <typename T>
__attribute__((always_inline)) inline void dot_block_3x4(float (&dots)[kOutputBlock][kRowBlock], const float* x,
                                                         const T* w, int K) {
  const float* xr[kRowBlock] = {x, x + K, x + 2 * static_cast<size_t>(K), x + 3 * static_cast<size_t>(K)};
  const T* w0 = w;
  const T* w1 = w + K;
  const T* w2 = w + 2 * static_cast<size_t>(K);
  v8f acc[kOutputBlock][kRowBlock] = {};
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    // the next three weight rows, a block ahead: three interleaved streams outran the hardware prefetcher
    __builtin_prefetch(w2 + K + k);
    __builtin_prefetch(w2 + 2 * static_cast<size_t>(K) + k);
    __builtin_prefetch(w2 + 3 * static_cast<size_t>(K) + k);
    const v8f a = load8(w0 + k), b = load8(w1 + k), c = load8(w2 + k);
#pragma GCC unroll 4
    for (int r = 0; r < kRowBlock; ++r) {
      const v8f xv = load8(xr[r] + k);
      acc[0][r] += xv * a;
      acc[1][r] += xv * b;
      acc[2][r] += xv * c;
    }
  }
  for (int j = 0; j < kOutputBlock; ++j) {
    for (int r = 0; r < kRowBlock; ++r) {
      float sum = hsum(acc[j][r]);
      for (int kk = k; kk < K; ++kk) sum += xr[r][kk] * widen(w + j * static_cast<size_t>(K), kk);
      dots[j][r] = sum;
    }
  }
}

// Rows [o0, o1) of out (N, OC) (+)= inp (N, K) @ weight^T * scale + bias: one dot product per (output, input row).
template <typename T>
__attribute__((always_inline)) inline void dot_rows(float* out, const float* inp, const T* weight,
                                                     const float* scales, const float* bias, int N, int K, int OC,
                                                     int o0, int o1, bool accumulate) {
  auto emit = [&](int n, int o, float d) {
    float& y = out[static_cast<size_t>(n) * OC + o];
    y = (accumulate ? y : 0.0f) + (bias != nullptr ? bias[o] : 0.0f) + d * (scales != nullptr ? scales[o] : 1.0f);
  };
  // A tile of output rows at a time, every block of input rows over the tile: the tile's weights (tens of KiB)
  // come from L1/L2 after the first block, and one block of inputs stays in L1. Without the tile, 8 rows ran
  // 2.5x slower than 4.
  for (int t0 = o0; t0 < o1; t0 += kOutputTile) {
    const int t1 = t0 + kOutputTile < o1 ? t0 + kOutputTile : o1;
    int n = 0;
    for (; n + kRowBlock <= N; n += kRowBlock) {
      int o = t0;
      for (; o + kOutputBlock <= t1; o += kOutputBlock) {
        float dots[kOutputBlock][kRowBlock];
        dot_block_3x4(dots, inp + static_cast<size_t>(n) * K, weight + static_cast<size_t>(o) * K, K);
        for (int j = 0; j < kOutputBlock; ++j)
          for (int r = 0; r < kRowBlock; ++r) emit(n + r, o + j, dots[j][r]);
      }
      for (; o < t1; ++o) {
        float dots[kRowBlock];
        dot_block(dots, inp + static_cast<size_t>(n) * K, weight + static_cast<size_t>(o) * K, K);
        for (int r = 0; r < kRowBlock; ++r) emit(n + r, o, dots[r]);
      }
    }
    for (; n < N; ++n)
      for (int o = t0; o < t1; ++o) emit(n, o, dot(inp + static_cast<size_t>(n) * K, weight + static_cast<size_t>(o) * K, K));
  }
}

}  // namespace
}  // namespace kvcache::kernels
