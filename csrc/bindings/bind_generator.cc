#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../generate.h"
#include "bindings.h"
#include "gil_release.h"
#include "convert.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {

GenerateOptions make_options(int max_new_tokens, SamplingParams sampling, ProcessorParams processing, uint64_t seed,
                             bool use_cache, KVType cache_type, int num_return_sequences, bool keep_scores,
                             bool keep_logits) {
  GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  o.sampling = sampling;
  o.processing = std::move(processing);
  o.seed = seed;
  o.use_cache = use_cache;
  o.cache_type = cache_type;
  o.num_return_sequences = num_return_sequences;
  o.keep_scores = keep_scores;
  o.keep_logits = keep_logits;
  return o;
}

// One of the generator's (rows, n_vocab) readers, read without the GIL (it waits for a running step), as float32;
// (0, n_vocab) when nothing was kept.
py::array_t<float> as_rows(const Generator& g, std::vector<float> (Generator::*read)() const) {
  std::vector<float> values;
  {
    GilRelease release;
    values = (g.*read)();
  }
  const int n_vocab = g.n_vocab();
  const auto rows = static_cast<py::ssize_t>(values.size() / static_cast<std::size_t>(n_vocab));
  py::array_t<float> out({rows, static_cast<py::ssize_t>(n_vocab)});
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

}  // namespace

void register_generator(py::module_& m) {
  const py::call_guard<GilRelease> released;
  py::class_<Generator> cls(m, "Generator", py::is_final(),
                            "Step-by-step decoding: prefill, then one token per row per step.");
  cls.def(py::init([](const CausalLM& model, std::vector<std::vector<int>> prompts, int max_new_tokens,
                       bool do_sample, float temperature, int top_k, float top_p, float min_p, float typical_p,
                       float repetition_penalty, int no_repeat_ngram_size, int min_new_tokens,
                       std::vector<int> eos_token_ids, uint64_t seed, bool use_cache, const std::string& cache_dtype,
                       int num_return_sequences, bool keep_scores, bool keep_logits, KVCache* cache,
                       std::vector<std::vector<int>> contexts) {
             auto options = make_options(
                 max_new_tokens, SamplingParams{do_sample, temperature, top_k, top_p, min_p, typical_p},
                 ProcessorParams{repetition_penalty, no_repeat_ngram_size, min_new_tokens, std::move(eos_token_ids)},
                 seed, use_cache, kv_type(cache_dtype), num_return_sequences, keep_scores, keep_logits);
             GilRelease release;
             return std::make_unique<Generator>(model, std::move(prompts), options, cache, std::move(contexts));
           }),
           py::arg("model"), py::arg("prompts"), py::kw_only(), py::arg("max_new_tokens"),
           py::arg("do_sample") = false, py::arg("temperature") = 1.0f, py::arg("top_k") = 0,
           py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f, py::arg("typical_p") = 1.0f,
           py::arg("repetition_penalty") = 1.0f, py::arg("no_repeat_ngram_size") = 0, py::arg("min_new_tokens") = 0,
           py::arg("eos_token_ids") = std::vector<int>{}, py::arg("seed") = 0, py::arg("use_cache") = true,
           py::arg("cache_dtype") = "float32", py::arg("num_return_sequences") = 1, py::arg("keep_scores") = false,
           py::arg("keep_logits") = false, py::arg("cache") = nullptr,
           py::arg("contexts") = std::vector<std::vector<int>>{},
           // the generator reads the model and writes a given cache at every step: both outlive it
           py::keep_alive<1, 2>(), py::keep_alive<1, 21>())
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
      .def_property_readonly("last_scores", [](const Generator& g) { return as_rows(g, &Generator::last_scores); },
                             "(rows, n_vocab) scores of the last step (keep_scores): what each row's token was "
                             "chosen from")
      .def_property_readonly("last_logits", [](const Generator& g) { return as_rows(g, &Generator::last_logits); },
                             "(rows, n_vocab) raw logits of the last step (keep_logits)")
      .def("finish_row", &Generator::finish_row, py::arg("row"), py::call_guard<GilRelease>(),
           "end a row now: it produces nothing more")
      .def_property_readonly("cache_nbytes", [](const Generator& g) { return g.cache().nbytes(); });
  refuse_bare_new(cls, "Generator", "call Generator(model, prompts, max_new_tokens=...)");
}

}  // namespace kvcache::bindings
