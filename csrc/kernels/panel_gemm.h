// Matrix products on float32 weights packed in panels: the layout of every float32 linear layer of the model.
//
// A panel holds kPanelWidth consecutive outputs for every input, input-major: panel p is a (K, 16) block, the
// floats of weight[k][16p .. 16p + 15] one after another for k = 0 .. K - 1 (Conv1D's own (in, out) layout, cut
// into column strips; a last ragged strip is padded with zeros). One kernel serves every number of rows:
//  - decode (1-16 rows): the panels are streamed once, from memory, each thread taking chunks of its own
//    contiguous share and then of the back of the slower one's (stream_split.h). Up to 6 rows share one panel
//    at a time (a single sequential stream per thread, as memory, not the FMAs, is the limit). 7-11 rows run as
//    two row blocks over each 64-input piece of the panel, the second from L1; at 12-16, rows beyond 6 re-read
//    each group of panels from L2, several panels per tile. So batch 8 costs little more weight traffic than
//    batch 1;
//  - prefill (many rows): the same tiles, blocked so that a (kKBlock, 16) piece of a panel stays in L1 while
//    every 6-row block of activations, packed into a micro-panel, passes over it (BLIS' loop order, with the
//    weights packed once at load instead of at every call).
// Each output is summed in input order k = 0, 1, ..., K - 1 by every tile, so a row's result does not depend on
// how many rows share the call (batch composition never changes a token).
#pragma once

#include "isa.h"

namespace kvcache::kernels {

constexpr int kPanelWidth = 16;  // outputs per panel: two 8-float vectors
constexpr int kPackedRows = 6;   // rows of a prefill tile, packed together (PanelProduct::packed_inp)
constexpr int kPackMinRows = 17;  // fewer rows (decode) stream the weights and read the rows in place

inline long panel_count(long outputs) { return (outputs + kPanelWidth - 1) / kPanelWidth; }
// Floats a (K, OC) weight occupies once packed (its last panel padded to a full one).
inline long packed_size(long K, long OC) { return panel_count(OC) * kPanelWidth * K; }
// Floats of PanelProduct::packed_inp for N rows of K inputs (0 where they are read in place).
inline long packed_inp_size(long N, long K) { return N >= kPackMinRows ? N / kPackedRows * kPackedRows * K : 0; }

// packed (panel_count(OC), K, 16) from an input-major (K, OC) weight (Hugging Face's Conv1D layout).
// E: float, or Half / uint16_t (bfloat16): the 16-bit KV cache's keys and values and the 16-bit weights (matmul.cc),
// widened to float32.
template <class E>
void pack_panels(float* packed, const E* in_major, long K, long OC);
// The same from an output-major (OC, K) weight (nn.Linear's layout).
template <class E>
void pack_panels_from_output_major(float* packed, const E* out_major, long K, long OC);

// out (N, OC) (+)= inp (N, K) @ W + bias, W packed by pack_panels; bias may be null. scratch: null, or
// packed_inp_size(N, K) floats for the packed rows. max_isa: the most capable build the call may run (isa.h;
// the tests compare the builds).
void panel_gemm(float* out, const float* inp, const float* packed, const float* bias, int N, int K, int OC,
                bool accumulate, float* scratch, Isa max_isa = kBestIsa);

// The same product in its general form, for attention's: rows of inp and out ldi and ldo floats apart, panels
// panel_stride floats apart (K * 16 for a whole packed matrix, more when the product uses only the first K inputs
// of a longer one). Inside a parallel region it runs on the calling thread alone.
struct PanelProduct {
  float* out;
  long ldo;
  const float* inp;
  long ldi;
  const float* packed;
  long panel_stride;
  const float* bias;  // may be null
  int N, K, OC;
  bool accumulate;
  // Many rows (prefill): room for packed_inp_size(N, K) floats, where each full block of kPackedRows rows is first
  // packed into a (K, kPackedRows) micro-panel, so that a tile reads its rows' inputs as one stream. Rows at K
  // floats apart mapped to the same few L1 sets (all six at K = 3072) and a prefill ran 8% slower. Null: in place.
  float* packed_inp = nullptr;
};
void panel_gemm(const PanelProduct& product, Isa max_isa = kBestIsa);

}  // namespace kvcache::kernels
