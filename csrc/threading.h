// The one piece of global mutable state of the core: how many threads its kernels use.
#pragma once

namespace kvcache {

int get_num_threads();
// n >= 1; throws std::invalid_argument otherwise.
void set_num_threads(int n);

// Applies the thread count to the calling thread's OpenMP settings. OpenBLAS (OpenMP build) follows the same
// setting, so our loops and BLAS share one pool and never oversubscribe the cores.
void apply_num_threads();

}  // namespace kvcache
