#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

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

// Our names, and transformers' LlamaConfig names for the same fields.
std::vector<ConfigKeywords::Field> fields_and_aliases() {
  return {{"n_vocab", {"vocab_size"}},
          {"n_ctx", {"max_position_embeddings"}},
          {"n_embd", {"hidden_size"}},
          {"n_head", {"num_attention_heads"}},
          {"n_kv_head", {"num_key_value_heads"}},
          {"n_layer", {"num_hidden_layers"}},
          {"head_dim", {}},
          {"n_ff", {"intermediate_size"}},
          {"eps", {"rms_norm_eps"}},
          {"rope_theta", {}},
          {"rope_scaling", {}},
          {"attention_bias", {}},
          {"mlp_bias", {}},
          {"tie_word_embeddings", {}}};
}

}  // namespace

void register_llama_config(py::module_& m) {
  py::class_<LlamaConfig> cls(m, "LlamaConfig", py::is_final(),
                              "Shape of a LLaMA-family model (n_kv_head < n_head: grouped-query attention).");
  cls.def(py::init([](const py::args& args, const py::kwargs& kwargs) {
             const ConfigKeywords kw("LlamaConfig", fields_and_aliases(), args, kwargs);
             LlamaConfig c;  // the defaults: Llama 2 7B's shape
             c.n_vocab = kw.get_int("n_vocab", c.n_vocab);
             c.n_ctx = kw.get_int("n_ctx", c.n_ctx);
             c.n_embd = kw.get_int("n_embd", c.n_embd);
             c.n_head = kw.get_int("n_head", c.n_head);
             const py::object n_kv_head = kw.get("n_kv_head");
             c.n_kv_head = n_kv_head.is_none() ? c.n_head : int_argument(n_kv_head, kw.name("n_kv_head").c_str());
             c.n_layer = kw.get_int("n_layer", c.n_layer);
             const py::object head_dim = kw.get("head_dim");
             if (head_dim.is_none()) {
               require(c.n_head > 0 && c.n_embd % c.n_head == 0,
                       "config: n_embd (" + std::to_string(c.n_embd) + ") must be divisible by n_head (" +
                           std::to_string(c.n_head) + ") when head_dim is not given");
               c.head_dim = c.n_embd / c.n_head;
             } else {
               c.head_dim = int_argument(head_dim, "head_dim");
             }
             c.n_ff = kw.get_int("n_ff", c.n_ff);
             c.eps = kw.get_float("eps", c.eps);
             c.rope_theta = kw.get_float("rope_theta", c.rope_theta);
             c.rope_scaling = rope_scaling_from(kw.get("rope_scaling"));
             c.attention_bias = kw.get_bool("attention_bias", c.attention_bias);
             c.mlp_bias = kw.get_bool("mlp_bias", c.mlp_bias);
             c.tie_word_embeddings = kw.get_bool("tie_word_embeddings", c.tie_word_embeddings);
             c.validate();
             return c;
           }),
           "LlamaConfig(*, n_vocab=32000, n_ctx=2048, n_embd=4096, n_head=32, n_kv_head=None (= n_head), n_layer=32, "
           "head_dim=None (= n_embd / n_head), n_ff=11008, eps=1e-6, rope_theta=10000.0, rope_scaling=None, "
           "attention_bias=False, mlp_bias=False, tie_word_embeddings=False), keywords only. transformers' names are "
           "taken too: vocab_size, max_position_embeddings, hidden_size, num_attention_heads, num_key_value_heads, "
           "num_hidden_layers, intermediate_size, rms_norm_eps; one field under two names must have one value.")
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
      // Pickling rebuilds through the constructor and its checks, as GPT2Config's does.
      .def("__reduce__",
           [](const LlamaConfig& c) {
             const py::object partial = py::module_::import("functools").attr("partial");
             const py::object rebuild = partial(
                 py::type::of<LlamaConfig>(), py::arg("n_vocab") = c.n_vocab, py::arg("n_ctx") = c.n_ctx,
                 py::arg("n_embd") = c.n_embd, py::arg("n_head") = c.n_head, py::arg("n_kv_head") = c.n_kv_head,
                 py::arg("n_layer") = c.n_layer, py::arg("head_dim") = c.head_dim, py::arg("n_ff") = c.n_ff,
                 py::arg("eps") = c.eps, py::arg("rope_theta") = c.rope_theta,
                 py::arg("rope_scaling") = rope_scaling_dict(c.rope_scaling),
                 py::arg("attention_bias") = c.attention_bias, py::arg("mlp_bias") = c.mlp_bias,
                 py::arg("tie_word_embeddings") = c.tie_word_embeddings);
             return py::make_tuple(rebuild, py::tuple());
           })
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
