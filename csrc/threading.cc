#include "threading.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <string>

#include "errors.h"

namespace kvcache {

namespace {
std::atomic<int> num_threads{0};  // 0: not set yet, use every core
}

int get_num_threads() {
  int n = num_threads.load();
  return n > 0 ? n : std::min(omp_get_num_procs(), kMaxThreads);
}

void set_num_threads(int n) {
  require(n >= 1 && n <= kMaxThreads,
          "num_threads must be in [1, " + std::to_string(kMaxThreads) + "], got " + std::to_string(n));
  num_threads.store(n);
}

void apply_num_threads() { omp_set_num_threads(get_num_threads()); }

}  // namespace kvcache
