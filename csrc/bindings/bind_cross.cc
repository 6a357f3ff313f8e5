// The encoder-decoder face of GPT-2 with cross-attention: Model.set_encoder_states, and the cross cache's size on
// KVCache. Added to the classes that bind_model.cc and bind_cache.cc register.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <string>

#include "../cross_cache.h"
#include "../model.h"
#include "bindings.h"
#include "gil_release.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {

// states: a C-contiguous float32 (B, S, C) array (GPT2._set_encoder_states converts any float array to one).
void set_encoder_states(const GPT2Model& model, KVCache& cache, const py::array& states) {
  if (states.dtype().kind() != 'f' || states.itemsize() != 4 || !(states.flags() & py::array::c_style)) {
    throw py::type_error("encoder_hidden_states must be a C-contiguous float32 array, got dtype " +
                         py::str(states.dtype()).cast<std::string>());
  }
  if (states.ndim() != 3) {
    throw py::value_error("encoder_hidden_states must be 3-D (batch, encoder positions, n_embd), got " +
                          std::to_string(states.ndim()) + " dimensions");
  }
  for (int d = 0; d < 3; ++d) {
    if (states.shape(d) > INT_MAX) throw py::value_error("encoder_hidden_states is too large for the engine");
  }
  const auto* data = static_cast<const float*>(states.data());
  GilRelease release;  // the array stays alive: the caller's reference holds it
  model.set_encoder_states(cache, data, static_cast<int>(states.shape(0)), static_cast<int>(states.shape(1)),
                           static_cast<int>(states.shape(2)));
}

}  // namespace

void register_cross(py::module_& m) {
  auto model = py::reinterpret_borrow<py::class_<GPT2Model, CausalLM, std::shared_ptr<GPT2Model>>>(m.attr("Model"));
  model.def("set_encoder_states", &set_encoder_states, py::arg("cache"), py::arg("encoder_hidden_states"),
            "Compute every layer's cross-attention keys and values of encoder states (B, S, n_embd), float32, once, "
            "into the cache (replacing any there); forwards over the cache then attend over them.");

  auto cache = py::reinterpret_borrow<py::class_<KVCache>>(m.attr("KVCache"));
  cache.def_property_readonly("cross_nbytes", [](const KVCache& c) { return c.cross() ? c.cross()->nbytes() : 0; },
                              "bytes of the cross-attention keys and values: 2 x layers x batch x n_head x "
                              "encoder positions x head_dim x 4 (float32); 0 without encoder states")
      .def_property_readonly("cross_len", [](const KVCache& c) { return c.cross() ? c.cross()->seq_len() : 0; },
                             "encoder positions the cross-attention attends over (S); 0 without encoder states");
}

}  // namespace kvcache::bindings
