#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "../config.h"
#include "bindings.h"
#include "convert.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {
py::tuple fields(const GPT2Config& c) {
  return py::make_tuple(c.n_vocab, c.n_ctx, c.n_embd, c.n_head, c.n_layer, c.eps, c.add_cross_attention);
}

// Our names, and transformers' GPT2Config names for the same fields (its attribute_map's too).
std::vector<ConfigKeywords::Field> fields_and_aliases() {
  return {{"n_vocab", {"vocab_size"}},
          {"n_ctx", {"n_positions", "max_position_embeddings"}},
          {"n_embd", {"hidden_size"}},
          {"n_head", {"num_attention_heads"}},
          {"n_layer", {"num_hidden_layers"}},
          {"eps", {"layer_norm_epsilon"}},
          {"add_cross_attention", {}}};
}
}  // namespace

void register_config(py::module_& m) {
  py::class_<GPT2Config> cls(m, "GPT2Config", py::is_final(),
                             "Shape of a GPT-2 family model (names of Hugging Face's config.json).");
  cls.def(py::init([](const py::args& args, const py::kwargs& kwargs) {
             const ConfigKeywords kw("GPT2Config", fields_and_aliases(), args, kwargs);
             const GPT2Config d;
             GPT2Config c{kw.get_int("n_vocab", d.n_vocab),
                          kw.get_int("n_ctx", d.n_ctx),
                          kw.get_int("n_embd", d.n_embd),
                          kw.get_int("n_head", d.n_head),
                          kw.get_int("n_layer", d.n_layer),
                          kw.get_float("eps", d.eps),
                          kw.get_bool("add_cross_attention", d.add_cross_attention)};
             c.validate();
             return c;
           }),
           "GPT2Config(*, n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12, eps=1e-5, "
           "add_cross_attention=False), keywords only. transformers' names are taken too: vocab_size, n_positions "
           "(or max_position_embeddings), hidden_size, num_attention_heads, num_hidden_layers, layer_norm_epsilon; "
           "one field under two names must have one value.")
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
