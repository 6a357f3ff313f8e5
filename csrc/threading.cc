#include "threading.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "errors.h"

namespace kvcache {

namespace {
std::atomic<int> num_threads{0};  // 0: not set yet, use the default

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
  num_threads.store(n);
}

void apply_num_threads() { omp_set_num_threads(get_num_threads()); }

}  // namespace kvcache
