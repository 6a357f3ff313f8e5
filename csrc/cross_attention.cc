#include "cross_attention.h"

#include <omp.h>

#include <cmath>
#include <cstddef>

#include "kernels/attention.h"

namespace kvcache {

using std::size_t;

long cross_attention_scratch_floats(int S) { return static_cast<long>(omp_get_max_threads()) * S; }

void cross_attention_forward(float* out, const float* q, const CrossCache& cross, int layer, const int* cache_rows,
                             int n_rows, int T, float* scores) {
  const int NH = cross.n_head(), HS = cross.head_dim(), S = cross.seq_len(), D = NH * HS;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  // threads take (row, head) pairs; each of the pair's T queries reads the same (S, HS) keys and values
#pragma omp parallel for schedule(static) if (n_rows * NH > 1)
  for (int i = 0; i < n_rows * NH; ++i) {
    const int r = i / NH, h = i % NH, row = cache_rows[r];
    const float* keys = cross.keys(layer, row, h);
    const float* values = cross.values(layer, row, h);
    float* thread_scores = scores + static_cast<size_t>(omp_get_thread_num()) * S;
    for (int t = 0; t < T; ++t) {
      const size_t n = static_cast<size_t>(r) * T + t;
      kernels::attend(out + n * D + h * HS, q + n * D + h * HS, keys, values, S, HS, scale, thread_scores);
    }
  }
}

}  // namespace kvcache
