#include <pybind11/pybind11.h>

#include <string>

#include "../config.h"
#include "bindings.h"
#include "convert.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {
py::tuple fields(const GPT2Config& c) {
  return py::make_tuple(c.n_vocab, c.n_ctx, c.n_embd, c.n_head, c.n_layer, c.eps, c.add_cross_attention);
}

// A Python bool (or NumPy's): 1 or "yes" would say nothing clear about a model's layers.
bool bool_argument(const py::handle& value, const char* name) {
  const std::string type_name = py::str(py::type::of(value).attr("__name__"));
  if (type_name != "bool") {
    throw py::type_error(std::string(name) + " must be a bool, got " + type_name + " " +
                         py::repr(value).cast<std::string>());
  }
  return value.cast<bool>();
}
}  // namespace

void register_config(py::module_& m) {
  py::class_<GPT2Config> cls(m, "GPT2Config", py::is_final(),
                             "Shape of a GPT-2 family model (names of Hugging Face's config.json).");
  cls.def(py::init([](const py::object& n_vocab, const py::object& n_ctx, const py::object& n_embd,
                       const py::object& n_head, const py::object& n_layer, const py::object& eps,
                       const py::object& add_cross_attention) {
             GPT2Config c{int_argument(n_vocab, "n_vocab"), int_argument(n_ctx, "n_ctx"),
                          int_argument(n_embd, "n_embd"),   int_argument(n_head, "n_head"),
                          int_argument(n_layer, "n_layer"), float_argument(eps, "eps"),
                          bool_argument(add_cross_attention, "add_cross_attention")};
             c.validate();
             return c;
           }),
           py::kw_only(), py::arg("n_vocab") = 50257, py::arg("n_ctx") = 1024, py::arg("n_embd") = 768,
           py::arg("n_head") = 12, py::arg("n_layer") = 12, py::arg("eps") = 1e-5,
           py::arg("add_cross_attention") = false)
      .def_readonly("n_vocab", &GPT2Config::n_vocab)
      .def_readonly("n_ctx", &GPT2Config::n_ctx)
      .def_readonly("n_embd", &GPT2Config::n_embd)
      .def_readonly("n_head", &GPT2Config::n_head)
      .def_readonly("n_layer", &GPT2Config::n_layer)
      .def_readonly("eps", &GPT2Config::eps)
      .def_readonly("add_cross_attention", &GPT2Config::add_cross_attention,
                    "a cross-attention block in every layer, over encoder states (encoder-decoder decoders)")
      .def_property_readonly("head_dim", &GPT2Config::head_dim)
      .def(
          "__eq__",
          [](const GPT2Config& a, const GPT2Config& b) {
            return a.n_vocab == b.n_vocab && a.n_ctx == b.n_ctx && a.n_embd == b.n_embd && a.n_head == b.n_head &&
                   a.n_layer == b.n_layer && a.eps == b.eps && a.add_cross_attention == b.add_cross_attention;
          },
          py::is_operator())  // comparing with another type gives NotImplemented, hence False, not TypeError
      // immutable, so hashable (a dict key, a cache key) with equal configs hashing alike
      .def("__hash__", [](const GPT2Config& c) { return py::hash(fields(c)); })
      // Pickling (multiprocessing, copy.deepcopy) rebuilds through the constructor, so a pickle, which is data from
      // outside, meets the constructor's checks: functools.partial(GPT2Config, n_vocab=..., ...) called with no
      // arguments. (pybind11's py::pickle would go through the bare __new__, which is refused below.)
      .def("__reduce__",
           [](const GPT2Config& c) {
             const py::object partial = py::module_::import("functools").attr("partial");
             const py::object rebuild = partial(py::type::of<GPT2Config>(), py::arg("n_vocab") = c.n_vocab,
                                                py::arg("n_ctx") = c.n_ctx, py::arg("n_embd") = c.n_embd,
                                                py::arg("n_head") = c.n_head, py::arg("n_layer") = c.n_layer,
                                                py::arg("eps") = c.eps,
                                             py::arg("add_cross_attention") = c.add_cross_attention);
             return py::make_tuple(rebuild, py::tuple());
           })
      .def("__repr__", [](const GPT2Config& c) {
        return "GPT2Config(n_vocab=" + std::to_string(c.n_vocab) + ", n_ctx=" + std::to_string(c.n_ctx) +
               ", n_embd=" + std::to_string(c.n_embd) + ", n_head=" + std::to_string(c.n_head) +
               ", n_layer=" + std::to_string(c.n_layer) + ", eps=" + py::str("{:g}").format(c.eps).cast<std::string>() +
               (c.add_cross_attention ? ", add_cross_attention=True" : "") + ")";
      });
  refuse_bare_new(cls, "GPT2Config", "call GPT2Config(...)");
}

}  // namespace kvcache::bindings
