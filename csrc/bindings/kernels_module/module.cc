// kvcache_kernels._kernels: the kernel test bindings and the machine probes (bind_kernels.cc), for the tests and the
// benchmarks. Not the engine: a separate extension, built only with -DKVCACHE_KERNEL_TESTS=ON (CMakeLists.txt).
#include <pybind11/pybind11.h>

#include "../bindings.h"

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "kvcache's fast kernels and their naive reference twins, and the machine probes (tests, benchmarks)";
  pybind11::module_::import("kvcache._core");  // the engine, whose thread count every threaded call takes
  kvcache::bindings::register_kernels(m);
}
