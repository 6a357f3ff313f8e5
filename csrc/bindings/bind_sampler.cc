#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <random>

#include "../sampler.h"
#include "bindings.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {

// A seed in [0, 2**64): TypeError for non-integers, ValueError outside the range (PyLong's own overflow check).
uint64_t seed_value(const py::object& seed) {
  if (!py::isinstance<py::int_>(seed) || py::isinstance<py::bool_>(seed)) {
    throw py::type_error("seed must be an int or None, got " + py::str(py::type::of(seed).attr("__name__")).cast<std::string>() +
                         " " + py::repr(seed).cast<std::string>());
  }
  const unsigned long long value = PyLong_AsUnsignedLongLong(seed.ptr());
  if (PyErr_Occurred()) {
    PyErr_Clear();
    throw py::value_error("seed must be in [0, 2**64), got " + py::repr(seed).cast<std::string>());
  }
  return value;
}

// 1-D logits -> one id; 2-D -> one id per row. seed None draws a fresh seed.
py::object sample(const py::array& logits, float temperature, int top_k, float top_p, float min_p, float typical_p,
                  py::object seed, bool do_sample) {
  SamplingParams params{do_sample, temperature, top_k, top_p, min_p, typical_p};
  params.validate();
  if (logits.ndim() != 1 && logits.ndim() != 2) {
    throw py::value_error("logits must be 1-D (vocab) or 2-D (rows, vocab), got " + std::to_string(logits.ndim()) +
                          " dimensions");
  }
  auto values = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(logits);
  if (!values) throw py::type_error("logits must be a numeric array");
  const int V = static_cast<int>(values.shape(values.ndim() - 1));
  const int rows = values.ndim() == 2 ? static_cast<int>(values.shape(0)) : 1;
  if (V == 0) throw py::value_error("logits are empty");
  const uint64_t s = seed.is_none() ? std::random_device{}() : seed_value(seed);
  std::mt19937_64 rng(s);
  Sampler sampler(V);
  py::list ids;
  for (int r = 0; r < rows; ++r) {
    ids.append(sampler.sample(values.data() + static_cast<std::size_t>(r) * V, params, uniform_coin(rng)));
  }
  return values.ndim() == 1 ? ids[0] : py::object(ids);
}

// (rows, vocab) logits -> the scores the sampler draws from: logit / temperature where its filters keep a token,
// -inf where they remove it (speculative decoding needs the whole distribution, not one draw).
py::array_t<float> filtered_scores(const py::array_t<float, py::array::c_style | py::array::forcecast>& logits,
                                   float temperature, int top_k, float top_p, float min_p, float typical_p) {
  SamplingParams params{true, temperature, top_k, top_p, min_p, typical_p};
  params.validate();
  if (logits.ndim() != 2 || logits.shape(1) == 0) throw py::value_error("logits must be 2-D (rows, vocab)");
  const int rows = static_cast<int>(logits.shape(0));
  const int V = static_cast<int>(logits.shape(1));
  py::array_t<float> out({rows, V});
  {
    py::gil_scoped_release release;
    Sampler sampler(V);
    for (int r = 0; r < rows; ++r) {
      const std::size_t at = static_cast<std::size_t>(r) * V;
      sampler.sample(logits.data() + at, params, 0.0f, out.mutable_data() + at);
    }
  }
  return out;
}

}  // namespace

void register_sampler(py::module_& m) {
  m.def("sample", &sample, py::arg("logits"), py::kw_only(), py::arg("temperature") = 1.0f, py::arg("top_k") = 0,
        py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f, py::arg("typical_p") = 1.0f, py::arg("seed") = py::none(),
        py::arg("do_sample") = true,
        "Draw token ids with the engine's sampler (temperature, then top-k, top-p, min-p, typical-p).");
  m.def("filtered_scores", &filtered_scores, py::arg("logits"), py::kw_only(), py::arg("temperature") = 1.0f,
        py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f, py::arg("typical_p") = 1.0f,
        "(rows, vocab) logits -> the scores sampling draws from: logit / temperature, -inf where filtered out.");
}

}  // namespace kvcache::bindings
