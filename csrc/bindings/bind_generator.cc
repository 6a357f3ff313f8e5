#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../generate.h"
#include "bindings.h"
#include "gil_release.h"
#include "convert.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {

GenerateOptions make_options(int max_new_tokens, bool do_sample, float temperature, int top_k, float top_p,
                             uint64_t seed, int eos_token_id, bool use_cache, KVType cache_type,
                             int num_return_sequences) {
  GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  o.sampling = SamplingParams{do_sample, temperature, top_k, top_p};
  o.seed = seed;
  o.eos_token_id = eos_token_id;
  o.use_cache = use_cache;
  o.cache_type = cache_type;
  o.num_return_sequences = num_return_sequences;
  return o;
}

}  // namespace

void register_generator(py::module_& m) {
  const py::call_guard<GilRelease> released;
  py::class_<Generator> cls(m, "Generator", py::is_final(),
                            "Step-by-step decoding: prefill, then one token per row per step.");
  cls.def(py::init([](const CausalLM& model, std::vector<std::vector<int>> prompts, int max_new_tokens,
                       bool do_sample, float temperature, int top_k, float top_p, uint64_t seed, int eos_token_id,
                       bool use_cache, const std::string& cache_dtype, int num_return_sequences, KVCache* cache) {
             auto options = make_options(max_new_tokens, do_sample, temperature, top_k, top_p, seed, eos_token_id,
                                         use_cache, kv_type(cache_dtype), num_return_sequences);
             GilRelease release;
             return std::make_unique<Generator>(model, std::move(prompts), options, cache);
           }),
           py::arg("model"), py::arg("prompts"), py::kw_only(), py::arg("max_new_tokens"),
           py::arg("do_sample") = false, py::arg("temperature") = 1.0f, py::arg("top_k") = 0,
           py::arg("top_p") = 1.0f, py::arg("seed") = 0, py::arg("eos_token_id") = -1, py::arg("use_cache") = true,
           py::arg("cache_dtype") = "float32", py::arg("num_return_sequences") = 1, py::arg("cache") = nullptr,
           // the generator reads the model and writes a given cache at every step: both outlive it
           py::keep_alive<1, 2>(), py::keep_alive<1, 14>())
      .def("step", &Generator::step, py::call_guard<GilRelease>())
      // step by step, so that Ctrl-C (any pending signal) stops a long generation between two steps
      .def("run", [](Generator& g) {
        while (true) {
          bool more = false;
          {
            GilRelease release;
            more = g.step();
          }
          if (!more) return;
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        }
      })
      // A reader waits for a step running on another thread, and waits without the GIL so that the rest of the
      // program runs meanwhile. (A property's guard must sit on its cpp_function: def_property drops it.)
      .def_property_readonly("done", py::cpp_function(&Generator::done, released))
      .def_property_readonly("last_tokens", py::cpp_function(&Generator::last_tokens, released))
      .def_property_readonly("sequences", py::cpp_function(&Generator::sequences, released))
      .def_property_readonly("prefilled_tokens", py::cpp_function(&Generator::prefilled_tokens, released),
                             "tokens the prefill computed: each prompt once, however many rows it fans out to")
      .def_property_readonly("cache_nbytes", [](const Generator& g) { return g.cache().nbytes(); });
  refuse_bare_new(cls, "Generator", "call Generator(model, prompts, max_new_tokens=...)");
}

}  // namespace kvcache::bindings
