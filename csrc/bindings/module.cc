// kvcache._core: a thin pybind11 layer over the C++ core. No logic lives here beyond argument conversion.
#include <pybind11/pybind11.h>

#include "../threading.h"
#include "bindings.h"
#include "convert.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "C++ core of kvcache: GPT-2 and LLaMA with a contiguous, preallocated KV cache";
  kvcache::bindings::register_errors(m);
  kvcache::bindings::register_config(m);
  kvcache::bindings::register_llama_config(m);
  kvcache::bindings::register_cache(m);
  kvcache::bindings::register_model(m);
  kvcache::bindings::register_cross(m);
  kvcache::bindings::register_generator(m);
  kvcache::bindings::register_sampler(m);
  kvcache::bindings::register_safetensors(m);
  m.def("set_num_threads", [](const py::object& n) { kvcache::set_num_threads(kvcache::bindings::int_argument(n, "n")); },
        py::arg("n"), "Threads used by the kernels, 1-256 (default: OMP_NUM_THREADS, else every core).");
  m.def("get_num_threads", &kvcache::get_num_threads);
  m.attr("MAX_THREADS") = kvcache::kMaxThreads;
}
