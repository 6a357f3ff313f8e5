#include "threading.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "errors.h"

namespace kvcache {

namespace {
std::atomic<int> num_threads{0};  // 0: not set yet, use the default

// GNU OpenMP's thread pool does not survive fork(): a child whose parent had started it waits forever on the
// parent's threads at its first parallel region (multiprocessing forks by default on Linux). Such a child runs
// on one thread, where libgomp starts no pool. A parent that never ran a parallel loop on more than one thread
// has no pool, and its children keep the whole choice.
std::atomic<bool> pool_started{false};
std::atomic<bool> forked_after_pool{false};

void after_fork_in_child() {
  if (pool_started.load()) {
    forked_after_pool.store(true);
    num_threads.store(1);
  }
}

const bool fork_handler_registered = pthread_atfork(nullptr, nullptr, after_fork_in_child) == 0;

// OMP_NUM_THREADS when it is set to a count (its first one, as OpenMP reads "4,2"): the variable users of PyTorch
// and NumPy already set to share a machine. Otherwise, or when it is not a count in [1, kMaxThreads], every core.
int default_num_threads() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  if (env != nullptr) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && (*end == '\0' || *end == ',') && n >= 1 && n <= kMaxThreads) return static_cast<int>(n);
  }
  return std::min(omp_get_num_procs(), kMaxThreads);
}
}  // namespace

int get_num_threads() {
  static const int default_threads = default_num_threads();  // read once: the environment is the process's start
  const int n = num_threads.load();
  return n > 0 ? n : default_threads;
}

void set_num_threads(int n) {
  require(n >= 1 && n <= kMaxThreads,
          "num_threads must be in [1, " + std::to_string(kMaxThreads) + "], got " + std::to_string(n));
  require(n == 1 || !forked_after_pool.load(),
          "num_threads must be 1 in this process, got " + std::to_string(n) + ": it was forked after its parent "
          "ran kvcache on several threads, and OpenMP's threads do not survive fork() (start processes with "
          "multiprocessing's 'spawn' or 'forkserver' method to use more)");
  num_threads.store(n);
}

void apply_num_threads() {
  const int n = get_num_threads();
  if (n > 1 && fork_handler_registered) pool_started.store(true, std::memory_order_relaxed);
  omp_set_num_threads(n);
}

}  // namespace kvcache
