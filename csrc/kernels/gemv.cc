#include "gemv.h"

#include <omp.h>

#include <cstddef>
#include <cstdint>

#include "multiversion.h"

namespace kvcache::kernels {

using std::size_t;

namespace {

// 32 separate lane sums (four vectors) hide the FMA latency and vectorise for every storage type, where an
// `omp simd reduction` over int8 does not.
constexpr int kDotLanes = 32;
// With several input rows, four share each weight load (16 lanes each: eight vector chains in flight).
constexpr int kRowBlock = 4;
constexpr int kBlockLanes = 16;

template <typename T>
__attribute__((always_inline)) inline float dot(const float* x, const T* w, int K) {
  float lanes[kDotLanes] = {};
  int k = 0;
  for (; k + kDotLanes <= K; k += kDotLanes) {
#pragma omp simd
    for (int l = 0; l < kDotLanes; ++l) lanes[l] += x[k + l] * widen(w, k + l);
  }
  float sum = 0.0f;
  for (int l = 0; l < kDotLanes; ++l) sum += lanes[l];
  for (; k < K; ++k) sum += x[k] * widen(w, k);
  return sum;
}

// dots[r] = x_r . w for kRowBlock rows x_r = x + r * K, reading w once.
template <typename T>
__attribute__((always_inline)) inline void dot_block(float* dots, const float* x, const T* w, int K) {
  float lanes[kRowBlock][kBlockLanes] = {};
  const float* x0 = x;
  const float* x1 = x + K;
  const float* x2 = x + 2 * static_cast<size_t>(K);
  const float* x3 = x + 3 * static_cast<size_t>(K);
  int k = 0;
  for (; k + kBlockLanes <= K; k += kBlockLanes) {
    float wv[kBlockLanes];  // widened first, in its own loop: one element type per loop vectorises for int8 too
#pragma omp simd
    for (int l = 0; l < kBlockLanes; ++l) wv[l] = widen(w, k + l);
#pragma omp simd
    for (int l = 0; l < kBlockLanes; ++l) {
      lanes[0][l] += x0[k + l] * wv[l];
      lanes[1][l] += x1[k + l] * wv[l];
      lanes[2][l] += x2[k + l] * wv[l];
      lanes[3][l] += x3[k + l] * wv[l];
    }
  }
  for (int r = 0; r < kRowBlock; ++r) {
    float sum = 0.0f;
    for (int l = 0; l < kBlockLanes; ++l) sum += lanes[r][l];
    for (int kk = k; kk < K; ++kk) sum += x[r * static_cast<size_t>(K) + kk] * widen(w, kk);
    dots[r] = sum;
  }
}

// Rows [o0, o1) of out (N, OC) (+)= inp (N, K) @ weight^T * scale + bias: one dot product per (output, input row).
template <typename T>
__attribute__((always_inline)) inline void dot_rows(float* out, const float* inp, const T* weight,
                                                     const float* scales, const float* bias, int N, int K, int OC,
                                                     int o0, int o1, bool accumulate) {
  for (int o = o0; o < o1; ++o) {
    const T* w = weight + static_cast<size_t>(o) * K;
    const float scale = scales != nullptr ? scales[o] : 1.0f;
    const float b = bias != nullptr ? bias[o] : 0.0f;
    auto emit = [&](int n, float d) {
      float& y = out[static_cast<size_t>(n) * OC + o];
      y = (accumulate ? y : 0.0f) + b + d * scale;
    };
    int n = 0;
    for (; n + kRowBlock <= N; n += kRowBlock) {
      float dots[kRowBlock];
      dot_block(dots, inp + static_cast<size_t>(n) * K, w, K);
      for (int r = 0; r < kRowBlock; ++r) emit(n + r, dots[r]);
    }
    for (; n < N; ++n) emit(n, dot(inp + static_cast<size_t>(n) * K, w, K));
  }
}

// One compiled (and multiversioned) entry per storage type.
#define KVCACHE_DOT_ROWS(NAME, T)                                                                               \
  KVCACHE_MULTIVERSION void NAME(float* out, const float* inp, const T* w, const float* scales, const float* bias, \
                                 int N, int K, int OC, int o0, int o1, bool accumulate) {                        \
    dot_rows(out, inp, w, scales, bias, N, K, OC, o0, o1, accumulate);                                           \
  }
KVCACHE_DOT_ROWS(dot_rows_f32, float)
KVCACHE_DOT_ROWS(dot_rows_bf16, uint16_t)
KVCACHE_DOT_ROWS(dot_rows_i8, int8_t)
#undef KVCACHE_DOT_ROWS

}  // namespace

void gemv_rows(float* out, const float* inp, const Matrix& weight, const float* bias, int N, int K, int OC,
               bool accumulate) {
#pragma omp parallel
  {
    // equal contiguous shares of the output rows, so each thread streams one region of the matrix
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int o0 = static_cast<int>(static_cast<long>(OC) * t / threads);
    const int o1 = static_cast<int>(static_cast<long>(OC) * (t + 1) / threads);
    const float* s = weight.scales;
    switch (weight.type) {
      case WeightType::F32:
        dot_rows_f32(out, inp, static_cast<const float*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
      case WeightType::BF16:
        dot_rows_bf16(out, inp, static_cast<const uint16_t*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
      case WeightType::I8:
        dot_rows_i8(out, inp, static_cast<const int8_t*>(weight.data), s, bias, N, K, OC, o0, o1, accumulate);
        break;
    }
  }
}

}  // namespace kvcache::kernels
