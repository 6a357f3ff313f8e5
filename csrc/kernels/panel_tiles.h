// The register tiles and loop nest of panel_gemm.cc as templates. Included by panel_gemm.cc (compiled for any
// target: the portable fallback), panel_gemm_avx2.cc (AVX2 + FMA) and panel_gemm_avx512.cc (AVX-512 VL: the same
// vectors, 32 registers instead of 16, so other decode tiles), one chosen at run time (isa.h). Why not
// target_clones as for gemv.cc: inside a clone GCC 12 built every broadcast lane by lane (8 vinsertps per
// multiply-add group) and the tile ran at a third of its speed. Internal linkage, so the two compilations can
// never be merged by the linker.
#pragma once

#include <algorithm>
#include <cstddef>

#include "panel_gemm.h"
#include "stream_split.h"
#include "vec.h"

namespace kvcache::kernels {
namespace {  // NOLINT: per translation unit on purpose (see above)

using std::size_t;

#if defined(__AVX512VL__)
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorRegisters = 16;
#endif
constexpr int kRowTile = kPackedRows;  // rows of the prefill tile: 6 x 2 vectors = 12 sums, the 16-register budget
constexpr int kSums = 12;       // sums in flight per tile: hides the FMA latency (2 per cycle, 4-5 cycles)
constexpr int kKBlock = 256;    // inputs per pass: a (256, 16) panel piece is 16 KiB, half of L1
constexpr int kRowBlock = 85 * kRowTile;  // rows per pass: their (510, 256) activations, 510 KiB, stay in L2
static_assert(kRowBlock % kRowTile == 0, "a pass's 6-row tiles must be the packed blocks (packed_inp)");
constexpr int kPanelGroup = 6;  // panels whose pieces all rows visit before the next: 96 KiB, in L2
constexpr int kPrefillChunk = 2 * kPanelGroup;  // panels a prefill thread takes at a time (stream_split.h)
constexpr int kStreamRows = 16;       // up to this many rows (decode) the weights stream from memory ...
static_assert(kPackMinRows == kStreamRows + 1, "the rows are packed exactly when they are not streamed");
constexpr long kStreamGroupBytes = 512 * 1024;  // ... a group of whole panels at a time, so that it stays in L2
// Lines (16 KiB) ahead per panel stream, into L2, for 3-16 rows: 32 lines into L1 left batch 2-8 decode waiting on
// memory (batch 8 took 1.9x the time of batch 1 in a kernel benchmark; with these prefetches, 1.3x); without any,
// batch 3 gave 2.08-2.27x batch 1's tokens/s in the model instead of 2.39-2.44x while memory read at 45-56 GB/s,
// and batch 5-6 took 1.2-1.4x as long in the kernel benchmark. 1-2 rows read fastest with the hardware prefetcher
// alone (short_tiles): without them batch 2 gave 1.88-1.91x batch 1 instead of 1.77-1.82x at 28-34 GB/s, the
// same 1.62-1.70x at 45-56 (benchmarks/NOTES.md).
constexpr int kPrefetchAhead = 256;
constexpr int kPrefetchMinRows = 3;

// The first n of 8 floats (n < 8 only in a ragged last panel, whose missing outputs read as zero and are never
// written). By value, never through a reference to the tile's sums: GCC then keeps every sum in a register (with
// the sums' address taken, it spilled half of them to the stack in the inner loop).
__attribute__((always_inline)) inline v8f load_upto8(const float* p, int n) {
  return n >= 8 ? load8(p) : n > 0 ? load_partial(p, n) : v8f{};
}
__attribute__((always_inline)) inline void store_upto8(float* p, v8f v, int n) {
  if (n >= 8) {
    store8(p, v);
  } else if (n > 0) {
    store_partial(p, v, n);
  }
}

// One register tile: MR rows x NP panels, over kc inputs. out starts at (row 0, panel 0) of the tile, inp at
// (row 0, first input of the pass), w at the pass's first input of panel 0; panels lie panel_stride floats apart.
// Input k of row r is inp[r * ldi + k * KS]: KS = 1 reads rows in place, KS = kRowTile a packed micro-panel.
// last_cols: valid outputs of the tile's last panel. bias (null after the first pass) is that of panel 0.
// load_out: add onto out (a later pass, or a residual connection) rather than start from zero.
template <int MR, int NP, bool kStream, int KS = 1>
__attribute__((always_inline)) inline void tile(float* out, long ldo, const float* inp, long ldi, const float* w,
                                                long panel_stride, int kc, int last_cols, const float* bias,
                                                bool load_out) {
  v8f acc[MR][NP][2];
#pragma GCC unroll 16
  for (int p = 0; p < NP; ++p) {
    const int cols = p == NP - 1 ? last_cols : kPanelWidth;
    const v8f b0 = bias != nullptr ? load_upto8(bias + p * kPanelWidth, cols) : v8f{};
    const v8f b1 = bias != nullptr ? load_upto8(bias + p * kPanelWidth + 8, cols - 8) : v8f{};
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const float* o = out + r * ldo + p * kPanelWidth;
      acc[r][p][0] = (load_out ? load_upto8(o, cols) : v8f{}) + b0;
      acc[r][p][1] = (load_out ? load_upto8(o + 8, cols - 8) : v8f{}) + b1;
    }
  }
  for (int k = 0; k < kc; ++k) {
    v8f b[NP][2];
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) {
      // decode streams each panel from memory once: one prefetch per 64-byte line, kPrefetchAhead lines ahead,
      // into L2 (locality 2: prefetcht1)
      if (kStream && MR >= kPrefetchMinRows) {
        __builtin_prefetch(w + p * panel_stride + (k + kPrefetchAhead) * kPanelWidth, 0, 2);
      }
      b[p][0] = load8(w + p * panel_stride + k * kPanelWidth);
      b[p][1] = load8(w + p * panel_stride + k * kPanelWidth + 8);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const v8f a = broadcast8(inp[r * ldi + k * KS]);
#pragma GCC unroll 16
      for (int p = 0; p < NP; ++p) {
        acc[r][p][0] += a * b[p][0];
        acc[r][p][1] += a * b[p][1];
      }
    }
  }
#pragma GCC unroll 16
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const int cols = p == NP - 1 ? last_cols : kPanelWidth;
      store_upto8(out + r * ldo + p * kPanelWidth, acc[r][p][0], cols);
      store_upto8(out + r * ldo + p * kPanelWidth + 8, acc[r][p][1], cols - 8);
    }
}

// Fewer than kRowTile rows. From L2 (prefill's last rows): as many panels as keep kSums sums in flight (2 rows x
// 3 panels ... 5 rows x 1). Streamed (decode): one panel at a time, whatever the rows. A decode tile waits on
// memory, not on FMAs, and panels lie one after another, so a thread then reads its chunk as one sequential
// stream, the probe's pattern. At batch 1 (no software prefetch, see kPrefetchMinRows) decode reached 94-95% of
// the probed bandwidth at 47-52 GB/s this way, 85-87% over two panels, 73-79% over two with prefetches; batch 2
// 91-96%, where three prefetched panels read at 76% (all in alternation with the probe, before its fix in
// probes.cc).
template <int MR, bool kStream>
__attribute__((always_inline)) inline void short_tiles(float* out, long ldo, const float* inp, long ldi,
                                                       const float* w, long panel_stride, int kc, int p0, int p1,
                                                       int OC, const float* bias, bool load_out) {
  constexpr int kPanels = kStream ? 1 : MR == 1 ? 2 : kSums / (2 * MR);
  for (int p = p0; p < p1; p += kPanels) {
    const int np = std::min(kPanels, p1 - p);
    const int last_cols = std::min(kPanelWidth, OC - (p + np - 1) * kPanelWidth);
    float* o = out + static_cast<size_t>(p) * kPanelWidth;
    const float* wp = w + p * panel_stride;
    const float* bp = bias != nullptr ? bias + static_cast<size_t>(p) * kPanelWidth : nullptr;
    static_assert(kPanels <= 3, "the switch below covers groups of up to 3 panels");
    switch (np) {  // only kPanels and a final shorter group occur
#define KVCACHE_TILE(NP) \
  case NP: tile<MR, (NP <= kPanels ? NP : 1), kStream>(o, ldo, inp, ldi, wp, panel_stride, kc, last_cols, bp, load_out); break;
      KVCACHE_TILE(1)
      KVCACHE_TILE(2)
      KVCACHE_TILE(3)
#undef KVCACHE_TILE
    }
  }
}

// Panels [p0, p1) of the product in passes of k_block inputs; within a pass, groups of `group` panels that every
// row visits before the next group.
template <bool kStream>
__attribute__((always_inline)) inline void panel_passes(const PanelProduct& pp, int p0, int p1, int k_block,
                                                        int group) {
  const int N = pp.N, K = pp.K, OC = pp.OC;
  const long ldo = pp.ldo, ldi = pp.ldi, panel_stride = pp.panel_stride;
  for (int k0 = 0; k0 < K; k0 += k_block) {
    const int kc = std::min(k_block, K - k0);
    const bool first = k0 == 0;
    const float* pass_bias = first ? pp.bias : nullptr;
    const bool load_out = pp.accumulate || !first;
    const float* w = pp.packed + static_cast<size_t>(k0) * kPanelWidth;
    for (int m0 = 0; m0 < N; m0 += kRowBlock) {
      const int m1 = std::min(N, m0 + kRowBlock);
      const int full_end = m0 + (m1 - m0) / kRowTile * kRowTile;
      for (int g0 = p0; g0 < p1; g0 += group) {
        const int g1 = std::min(p1, g0 + group);
        // every 6-row block over one panel piece at a time (the piece stays in L1) ...
        for (int p = g0; p < g1; ++p) {
          const int cols = std::min(kPanelWidth, OC - p * kPanelWidth);
          const float* wp = w + p * panel_stride;
          const float* bp = pass_bias != nullptr ? pass_bias + static_cast<size_t>(p) * kPanelWidth : nullptr;
          for (int r = m0; r < full_end; r += kRowTile) {
            float* o = pp.out + r * ldo + static_cast<size_t>(p) * kPanelWidth;
            if (pp.packed_inp != nullptr) {  // rows r .. r + 5 as one (K, 6) micro-panel (pack_rows)
              const float* a = pp.packed_inp + static_cast<size_t>(r) * K + static_cast<size_t>(k0) * kRowTile;
              tile<kRowTile, 1, kStream, kRowTile>(o, ldo, a, 1, wp, panel_stride, kc, cols, bp, load_out);
            } else {
              tile<kRowTile, 1, kStream>(o, ldo, pp.inp + r * ldi + k0, ldi, wp, panel_stride, kc, cols, bp, load_out);
            }
          }
        }
        // ... then the remaining rows over the whole group, while its pieces are still in L2 (tiles of several
        // panels); with no 6-row tiles before them (decode of 1-5 rows) they stream it from memory instead
        float* o = pp.out + full_end * ldo;
        const float* in = pp.inp + full_end * ldi + k0;
        switch (m1 - full_end) {
#define KVCACHE_SHORT(MR)                                                                                \
  case MR:                                                                                               \
    if (kStream && full_end == m0) {                                                                     \
      short_tiles<MR, true>(o, ldo, in, ldi, w, panel_stride, kc, g0, g1, OC, pass_bias, load_out);      \
    } else {                                                                                             \
      short_tiles<MR, false>(o, ldo, in, ldi, w, panel_stride, kc, g0, g1, OC, pass_bias, load_out);     \
    }                                                                                                    \
    break;
          KVCACHE_SHORT(1)
          KVCACHE_SHORT(2)
          KVCACHE_SHORT(3)
          KVCACHE_SHORT(4)
          KVCACHE_SHORT(5)
#undef KVCACHE_SHORT
          default: break;
        }
      }
    }
  }
}

// Decode of 7-11 rows with 16 registers (12-16 with 32): two row blocks over one panel at a time, in
// kDecodeKBlock-input pieces. The first block (prefetching) streams the piece from memory; the second (the other
// rows) then reads it from L1. The thread still reads its panels as one sequential stream, and the second block's
// FMAs run between the first block's loads instead of after a whole group of panels, when the memory sat idle
// (panel_passes).
// With 16 registers, against the group path below (6 rows streamed, then the rest over a group of panels from L2,
// while no weights came in), in alternation over the 49 products of a GPT-2 124M step at 2 threads: 0.84-0.90x
// the time at batch 7-11 while memory read at 31-35 GB/s, 0.95-1.10x while it read at 47-52 GB/s (FMA-bound
// then: batch 8 needs 16 FMAs per 64-byte line of weights). In the model, batch 8 steps took 0.84x the time at
// the lower bandwidth and 0.94x at the higher. The splits are the faster of those measured: 4+3 over 5+2, 6+4 over
// 5+5, 5+4 over 6+3 (0.97-0.99x the time at 35 and at 58 GB/s; from L2 on one core 83 GFLOP/s against 80: a 3-row
// block's 6 sums are too few to hide the FMA latency). 5+3 and 4+4 were within 3.2% of each other, 5+3 ahead at
// 35 GB/s and 4+4 at 58. 6+6 was slower than the group path, which keeps 12-16 rows. With 32 registers, 6+6 ...
// 8+8 took 0.78-0.82x the time of the group path at 12-16 rows, at 34 GB/s (benchmarks/NOTES.md).
constexpr int kDecodeKBlock = 64;  // a (64, 16) piece: 4 KiB, in L1 when the second block reads it
// Decode rows that run as two row blocks (split_row_panels). Fewer run as one tile (2 sums a row, besides 2 weight
// vectors and a broadcast: 16 registers hold 6 rows, 32 hold 14, of which up to 11 were measured to pay).
constexpr int kSplitMinRows = kVectorRegisters == 32 ? 12 : 7, kSplitMaxRows = kVectorRegisters == 32 ? 16 : 11;

// One row block's piece, as a function of its own: inlined into split_row_panels' loop, GCC 12 kept the 5-row
// block's sums on the stack (a load and a store around each multiply-add) and batch 8 ran 1.7x slower.
template <int MR, bool kStream>
__attribute__((noinline)) void split_piece(float* out, long ldo, const float* inp, long ldi, const float* w,
                                           long panel_stride, int kc, int last_cols, const float* bias, bool load_out) {
  tile<MR, 1, kStream>(out, ldo, inp, ldi, w, panel_stride, kc, last_cols, bias, load_out);
}

template <int R1, int R2>
__attribute__((always_inline)) inline void split_row_panels(const PanelProduct& pp, int p0, int p1) {
  static_assert(2 * R1 + 3 <= kVectorRegisters && 2 * R2 + 3 <= kVectorRegisters, "a block's sums in registers");
  const int K = pp.K;
  const long ldo = pp.ldo, ldi = pp.ldi, panel_stride = pp.panel_stride;
  for (int p = p0; p < p1; ++p) {
    const int cols = std::min(kPanelWidth, pp.OC - p * kPanelWidth);
    const float* wp = pp.packed + p * panel_stride;
    float* o = pp.out + static_cast<size_t>(p) * kPanelWidth;
    const float* bp = pp.bias != nullptr ? pp.bias + static_cast<size_t>(p) * kPanelWidth : nullptr;
    for (int k0 = 0; k0 < K; k0 += kDecodeKBlock) {  // each output still summed in input order, whatever the split
      const int kc = std::min(kDecodeKBlock, K - k0);
      const bool first = k0 == 0;
      const float* b = first ? bp : nullptr;
      const bool load_out = pp.accumulate || !first;
      const float* w = wp + static_cast<size_t>(k0) * kPanelWidth;
      split_piece<R1, true>(o, ldo, pp.inp + k0, ldi, w, panel_stride, kc, cols, b, load_out);
      split_piece<R2, false>(o + R1 * ldo, ldo, pp.inp + R1 * ldi + k0, ldi, w, panel_stride, kc, cols, b, load_out);
    }
  }
}

// Decode of 7-11 rows with 32 registers: each panel streamed once by one tile of all the rows (up to 22 sums),
// over all its inputs. Batch 8 thus runs at the 6-row tile's rate per FMA: with the weights hot in L3, 208-217
// GFLOP/s over the 49 products against 166-173 as 5 + 3 (benchmarks/NOTES.md). noinline: see split_piece.
template <int MR>
__attribute__((noinline)) void whole_row_panels(const PanelProduct& pp, int p0, int p1) {
  static_assert(2 * MR + 3 <= kVectorRegisters, "the tile's sums in registers");
  for (int p = p0; p < p1; ++p) {
    const int cols = std::min(kPanelWidth, pp.OC - p * kPanelWidth);
    const float* bp = pp.bias != nullptr ? pp.bias + static_cast<size_t>(p) * kPanelWidth : nullptr;
    tile<MR, 1, true>(pp.out + static_cast<size_t>(p) * kPanelWidth, pp.ldo, pp.inp, pp.ldi,
                      pp.packed + p * pp.panel_stride, pp.panel_stride, pp.K, cols, bp, pp.accumulate);
  }
}

// Panels of a decode group (see panel_passes).
inline int decode_group(const PanelProduct& pp) {
  const long group_panels = kStreamGroupBytes / (static_cast<long>(pp.K) * kPanelWidth * sizeof(float));
  return static_cast<int>(std::clamp<long>(group_panels, 1, kPanelGroup));
}

// Panels [p0, p1) of the product: one thread's share.
__attribute__((always_inline)) inline void panel_range(const PanelProduct& pp, int p0, int p1) {
  if (pp.N > kStreamRows) {  // prefill: (256, 16) pieces of a group of panels, each in L1 while the rows pass over it
    panel_passes<false>(pp, p0, p1, kKBlock, kPanelGroup);
    return;
  }
  // Decode: whole panels, so each thread reads its share of the weights in long sequential runs.
  // (#if, not if constexpr: outside a template the other branch's tiles would be built too, and not fit)
#if defined(__AVX512VL__)
  switch (pp.N) {
    case 7: whole_row_panels<7>(pp, p0, p1); return;
    case 8: whole_row_panels<8>(pp, p0, p1); return;
    case 9: whole_row_panels<9>(pp, p0, p1); return;
    case 10: whole_row_panels<10>(pp, p0, p1); return;
    case 11: whole_row_panels<11>(pp, p0, p1); return;
    case 12: split_row_panels<6, 6>(pp, p0, p1); return;
    case 13: split_row_panels<7, 6>(pp, p0, p1); return;
    case 14: split_row_panels<7, 7>(pp, p0, p1); return;
    case 15: split_row_panels<8, 7>(pp, p0, p1); return;
    case 16: split_row_panels<8, 8>(pp, p0, p1); return;
    default: break;
  }
  static_assert(kSplitMinRows == 12 && kSplitMaxRows == kStreamRows, "the switch above covers 7-16 rows");
#else
  switch (pp.N) {
    case 7: split_row_panels<4, 3>(pp, p0, p1); return;
    case 8: split_row_panels<5, 3>(pp, p0, p1); return;
    case 9: split_row_panels<5, 4>(pp, p0, p1); return;
    case 10: split_row_panels<6, 4>(pp, p0, p1); return;
    case 11: split_row_panels<6, 5>(pp, p0, p1); return;
    default: break;
  }
  static_assert(kSplitMinRows == 7 && kSplitMaxRows == 11, "the switch above covers 7-11 rows");
#endif
  // 1-6 rows, and 12-16 with 16 registers: rows beyond the 6-row tiles re-read a group of panels, which must
  // still be in L2 then.
  const int group = pp.N < kRowTile ? p1 - p0 : decode_group(pp);
  panel_passes<true>(pp, p0, p1, pp.K, group);
}

// Panels a thread takes at a time (stream_split.h). Decode: long sequential reads, and whole groups where rows
// re-read one (6 rows, and 12-16 with 16 registers). Prefill: two groups (evening out the threads made it 3%
// faster, in eight alternating pairs out of nine, though every chunk reads the packed rows again).
inline int chunk_panels(const PanelProduct& pp) {
  if (pp.N > kStreamRows) return kPrefillChunk;
  if (pp.N == kRowTile || pp.N > kSplitMaxRows) return decode_group(pp);
  const long panel_bytes = static_cast<long>(pp.K) * kPanelWidth * sizeof(float);
  return static_cast<int>(std::max<long>(1, kStreamChunkBytes / panel_bytes));
}

}  // namespace
}  // namespace kvcache::kernels
