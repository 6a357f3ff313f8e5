#include "threading.h"

#include <omp.h>

#include <atomic>
#include <string>

#include "errors.h"

namespace kvcache {

namespace {
std::atomic<int> num_threads{0};  // 0: not set yet, use every core
}

int get_num_threads() {
  int n = num_threads.load();
  return n > 0 ? n : omp_get_num_procs();
}

void set_num_threads(int n) {
  require(n >= 1, "num_threads must be >= 1, got " + std::to_string(n));
  num_threads.store(n);
}

void apply_num_threads() { omp_set_num_threads(get_num_threads()); }

}  // namespace kvcache
