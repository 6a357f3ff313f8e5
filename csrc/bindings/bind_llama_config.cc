#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "../errors.h"
#include "../llama_config.h"
#include "bindings.h"
#include "convert.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {

// config.json's rope_scaling: None, or {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
// "original_max_position_embeddings"}. Any other type would compute other angles: refused by name.
RopeScaling rope_scaling_from(const py::object& value) {
  RopeScaling s;
  if (value.is_none()) return s;
  if (!py::isinstance<py::dict>(value)) {
    throw py::type_error("rope_scaling must be None or a dict, got " + py::str(py::type::of(value)).cast<std::string>());
  }
  const py::dict d = value.cast<py::dict>();
  py::object kind = py::none();
  if (d.contains("rope_type")) {
    kind = d["rope_type"];
  } else if (d.contains("type")) {
    kind = d["type"];
  }
  const std::string name = kind.is_none() ? "(none given)" : py::str(kind).cast<std::string>();
  if (name == "default") return s;
  if (name != "llama3") {
    throw py::value_error("rope_scaling of type '" + name + "' is not supported (supported: None, 'llama3')");
  }
  s.kind = RopeScaling::Kind::Llama3;
  auto number = [&](const char* key, float fallback) {
    return d.contains(key) ? float_argument(d[key], key) : fallback;
  };
  s.factor = number("factor", s.factor);
  s.low_freq_factor = number("low_freq_factor", s.low_freq_factor);
  s.high_freq_factor = number("high_freq_factor", s.high_freq_factor);
  if (d.contains("original_max_position_embeddings")) {
    s.original_max_position_embeddings =
        int_argument(d["original_max_position_embeddings"], "original_max_position_embeddings");
  }
  return s;
}

py::object rope_scaling_dict(const RopeScaling& s) {
  if (s.kind == RopeScaling::Kind::None) return py::none();
  py::dict d;
  d["rope_type"] = "llama3";
  d["factor"] = s.factor;
  d["low_freq_factor"] = s.low_freq_factor;
  d["high_freq_factor"] = s.high_freq_factor;
  d["original_max_position_embeddings"] = s.original_max_position_embeddings;
  return d;
}

}  // namespace

void register_llama_config(py::module_& m) {
  py::class_<LlamaConfig> cls(m, "LlamaConfig", py::is_final(),
                              "Shape of a LLaMA-family model (n_kv_head < n_head: grouped-query attention).");
  cls.def(py::init([](const py::object& n_vocab, const py::object& n_ctx, const py::object& n_embd,
                       const py::object& n_head, const py::object& n_kv_head, const py::object& n_layer,
                       const py::object& head_dim, const py::object& n_ff, const py::object& eps,
                       const py::object& rope_theta, const py::object& rope_scaling, bool attention_bias,
                       bool mlp_bias, bool tie_word_embeddings) {
             LlamaConfig c;
             c.n_vocab = int_argument(n_vocab, "n_vocab");
             c.n_ctx = int_argument(n_ctx, "n_ctx");
             c.n_embd = int_argument(n_embd, "n_embd");
             c.n_head = int_argument(n_head, "n_head");
             c.n_kv_head = n_kv_head.is_none() ? c.n_head : int_argument(n_kv_head, "n_kv_head");
             c.n_layer = int_argument(n_layer, "n_layer");
             if (head_dim.is_none()) {
               require(c.n_head > 0 && c.n_embd % c.n_head == 0,
                       "config: n_embd (" + std::to_string(c.n_embd) + ") must be divisible by n_head (" +
                           std::to_string(c.n_head) + ") when head_dim is not given");
               c.head_dim = c.n_embd / c.n_head;
             } else {
               c.head_dim = int_argument(head_dim, "head_dim");
             }
             c.n_ff = int_argument(n_ff, "n_ff");
             c.eps = float_argument(eps, "eps");
             c.rope_theta = float_argument(rope_theta, "rope_theta");
             c.rope_scaling = rope_scaling_from(rope_scaling);
             c.attention_bias = attention_bias;
             c.mlp_bias = mlp_bias;
             c.tie_word_embeddings = tie_word_embeddings;
             c.validate();
             return c;
           }),
           py::kw_only(), py::arg("n_vocab") = 32000, py::arg("n_ctx") = 2048, py::arg("n_embd") = 4096,
           py::arg("n_head") = 32, py::arg("n_kv_head") = py::none(), py::arg("n_layer") = 32,
           py::arg("head_dim") = py::none(), py::arg("n_ff") = 11008, py::arg("eps") = 1e-6,
           py::arg("rope_theta") = 10000.0, py::arg("rope_scaling") = py::none(), py::arg("attention_bias") = false,
           py::arg("mlp_bias") = false, py::arg("tie_word_embeddings") = false)
      .def_readonly("n_vocab", &LlamaConfig::n_vocab)
      .def_readonly("n_ctx", &LlamaConfig::n_ctx)
      .def_readonly("n_embd", &LlamaConfig::n_embd)
      .def_readonly("n_head", &LlamaConfig::n_head)
      .def_readonly("n_kv_head", &LlamaConfig::n_kv_head)
      .def_readonly("n_layer", &LlamaConfig::n_layer)
      .def_readonly("head_dim", &LlamaConfig::head_dim)
      .def_readonly("n_ff", &LlamaConfig::n_ff)
      .def_readonly("eps", &LlamaConfig::eps)
      .def_readonly("rope_theta", &LlamaConfig::rope_theta)
      .def_property_readonly("rope_scaling", [](const LlamaConfig& c) { return rope_scaling_dict(c.rope_scaling); })
      .def_readonly("attention_bias", &LlamaConfig::attention_bias)
      .def_readonly("mlp_bias", &LlamaConfig::mlp_bias)
      .def_readonly("tie_word_embeddings", &LlamaConfig::tie_word_embeddings)
      .def_property_readonly("rope_inv_freq", &LlamaConfig::rope_inv_freq)
      .def("__repr__", [](const LlamaConfig& c) {
        std::string s = "LlamaConfig(n_vocab=" + std::to_string(c.n_vocab) + ", n_ctx=" + std::to_string(c.n_ctx) +
                        ", n_embd=" + std::to_string(c.n_embd) + ", n_head=" + std::to_string(c.n_head) +
                        ", n_kv_head=" + std::to_string(c.n_kv_head) + ", n_layer=" + std::to_string(c.n_layer) +
                        ", head_dim=" + std::to_string(c.head_dim) + ", n_ff=" + std::to_string(c.n_ff) +
                        ", eps=" + float_text(c.eps) + ", rope_theta=" + float_text(c.rope_theta);
        if (c.rope_scaling.kind == RopeScaling::Kind::Llama3) s += ", rope_scaling='llama3'";
        if (c.attention_bias) s += ", attention_bias=True";
        if (c.mlp_bias) s += ", mlp_bias=True";
        if (c.tie_word_embeddings) s += ", tie_word_embeddings=True";
        return s + ")";
      });
  refuse_bare_new(cls, "LlamaConfig", "call LlamaConfig(...)");
}

}  // namespace kvcache::bindings
