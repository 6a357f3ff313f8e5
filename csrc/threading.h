// The one piece of global mutable state of the core: how many threads its kernels use.
#pragma once

namespace kvcache {

// Far beyond any core count we run on, and low enough that each thread's scratch (attention's, up to
// n_ctx x n_ctx floats in a prefill) and OpenMP's thread creation stay possible: at 33000 threads libgomp could not
// create them and exited the process.
constexpr int kMaxThreads = 256;

// The count set last, else OMP_NUM_THREADS (a count in [1, kMaxThreads]), else every core (at most kMaxThreads).
int get_num_threads();
// 1 <= n <= kMaxThreads; throws std::invalid_argument otherwise.
void set_num_threads(int n);

// Applies the thread count to the calling thread's OpenMP settings: every parallel loop of the core runs on that
// one pool.
void apply_num_threads();

}  // namespace kvcache
