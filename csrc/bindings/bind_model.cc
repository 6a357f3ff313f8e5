#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <algorithm>
#include <numeric>
#include <optional>

#include "../llama_model.h"
#include "../model.h"
#include "bindings.h"
#include "gil_release.h"
#include "convert.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {

// tokens (B, T) over cache rows `rows` (default 0..B-1; a throwaway cache without one) -> logits (B, T, V), or
// (B, V) of each row's last token with last_only (a prompt's logits alone are B x T x V floats).
py::array_t<float> forward(const CausalLM& model, const py::array& tokens, KVCache* cache,
                           const std::optional<std::vector<int>>& rows_arg, bool last_only) {
  int rows = 0, T = 0;
  // before the dtype: NumPy makes [] and [[]] float64 arrays, which are empty rather than of the wrong type
  if (tokens.size() == 0) throw py::value_error("forward needs at least one token; got an empty array");
  std::vector<int> ids = token_matrix(tokens, rows, T);
  std::unique_ptr<KVCache> scratch;
  std::vector<int> cache_rows(rows);
  std::iota(cache_rows.begin(), cache_rows.end(), 0);
  if (cache == nullptr) {  // no cache given: a throwaway one just big enough for this call
    if (rows_arg) throw py::value_error("rows are cache rows: give a cache with them");
    if (T > model.n_ctx()) {
      throw py::value_error("sequence of " + std::to_string(T) + " tokens is longer than n_ctx=" +
                            std::to_string(model.n_ctx()));
    }
    scratch = std::make_unique<KVCache>(model.new_cache(rows, T));
    cache = scratch.get();
  } else {
    model.check_owns(*cache);
    if (rows_arg) {
      if (static_cast<int>(rows_arg->size()) != rows) {
        throw py::value_error(std::to_string(rows_arg->size()) + " cache rows given for a token batch of " +
                              std::to_string(rows) + " rows");
      }
      cache_rows = *rows_arg;
      std::vector<int> sorted = cache_rows;
      std::sort(sorted.begin(), sorted.end());
      if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
        throw py::value_error("cache rows must be distinct: two input rows cannot write one cache row");
      }
    } else if (rows != cache->batch_size()) {
      throw py::value_error("token batch of " + std::to_string(rows) + " rows does not match the cache's batch_size " +
                            std::to_string(cache->batch_size()));
    }
  }
  Workspace ws;
  {
    GilRelease release;
    model.forward(ids.data(), rows, T, cache_rows.data(), *cache, ws, /*all_logits=*/!last_only);
  }
  const py::ssize_t V = model.n_vocab();
  py::array_t<float> out = last_only ? py::array_t<float>({static_cast<py::ssize_t>(rows), V})
                                     : py::array_t<float>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(T), V});
  std::copy(ws.logits.data(), ws.logits.data() + out.size(), out.mutable_data());
  return out;
}

// Zero-copy NumPy views of every parameter, keyed by Hugging Face name (without "transformer.").
py::dict state_dict(py::object self) {
  GPT2Model& model = self.cast<GPT2Model&>();
  py::dict out;
  for (const ParamSlot& slot : model.weights().slots()) {
    std::vector<py::ssize_t> shape(slot.shape.begin(), slot.shape.end());
    py::array_t<float> view(shape, *slot.ptr, self);  // base = model: the view keeps it alive
    py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    out[py::str(slot.name)] = view;
  }
  return out;
}

// A dict of name -> float32 C-contiguous arrays, as views the load reads while the dict keeps them alive.
TensorMap tensor_map(const py::dict& tensors) {
  TensorMap out;
  for (const auto& [key, value] : tensors) {
    const std::string name = py::cast<std::string>(key);
    if (!py::isinstance<py::array_t<float>>(value)) {
      throw py::type_error("tensor '" + name + "' must be a float32 NumPy array, got " +
                           py::str(py::type::of(value)).cast<std::string>());
    }
    const auto array = py::reinterpret_borrow<py::array>(value);
    if (array.dtype().kind() != 'f' || array.itemsize() != 4 || !(array.flags() & py::array::c_style)) {
      throw py::type_error("tensor '" + name + "' must be a C-contiguous float32 array");
    }
    out[name] = HostTensor{static_cast<const float*>(array.data()),
                           std::vector<int64_t>(array.shape(), array.shape() + array.ndim())};
  }
  return out;
}

}  // namespace

void register_model(py::module_& m) {
  auto base = py::class_<CausalLM, std::shared_ptr<CausalLM>>(m, "CausalLM", "a model family's forward over a KV cache")
      .def_property_readonly("n_vocab", &CausalLM::n_vocab)
      .def_property_readonly("n_ctx", &CausalLM::n_ctx)
      .def_property_readonly("weights_nbytes", &CausalLM::weights_nbytes,
                             "bytes a decode step reads: the matrices in their storage type, norms and biases float32")
      .def("new_cache",
           [](const CausalLM& m, int batch_size, int max_seq_len, const std::string& dtype, int window, int sinks,
              int evict_chunk) {
             return m.new_cache(batch_size, max_seq_len, kv_type(dtype), CacheWindow{sinks, window, evict_chunk});
           },
           py::arg("batch_size"), py::arg("max_seq_len"), py::arg("dtype") = "float32", py::kw_only(),
           py::arg("window") = 0, py::arg("sinks") = 0, py::arg("evict_chunk") = 1, py::keep_alive<0, 1>(),
           "window = 0: a dense cache; otherwise a sliding window of `window` positions after `sinks` kept ones "
           "(window + sinks = max_seq_len), evicting evict_chunk positions at once when a row is full")
      .def("forward", &forward, py::arg("tokens"), py::arg("cache") = nullptr, py::arg("rows") = py::none(),
           py::arg("last_only") = false);
  refuse_direct_creation(base, "CausalLM", "load a model");

  auto llama = py::class_<LlamaModel, CausalLM, std::shared_ptr<LlamaModel>>(m, "LlamaModel",
                                                                            "LLaMA forward pass over a KV cache")
      .def_static("from_tensors",
                  [](const LlamaConfig& config, const py::dict& tensors, const std::string& weights_dtype) {
                    const WeightType type = weight_type(weights_dtype);
                    const TensorMap map = tensor_map(tensors);  // views into arrays the dict keeps alive
                    GilRelease release;
                    return std::make_shared<LlamaModel>(LlamaWeights::from_tensors(config, map, type));
                  },
                  py::arg("config"), py::arg("tensors"), py::arg("weights_dtype") = "float32",
                  "Build from float32 arrays named as transformers' LlamaForCausalLM state_dict.")
      .def_static("expected_tensors", &LlamaWeights::expected_tensors, py::arg("config"))
      .def_property_readonly("config", &LlamaModel::config)
      .def_property_readonly("weights_dtype",
                             [](const LlamaModel& m) { return weight_type_name(m.weights().weight_type()); });
  refuse_direct_creation(llama, "LlamaModel", "load one with kvcache.Llama.from_pretrained()");

  auto cls = py::class_<GPT2Model, CausalLM, std::shared_ptr<GPT2Model>>(m, "Model", "GPT-2 forward pass over a KV cache")
      .def_static("load",
                  [](const std::vector<std::string>& paths, const GPT2Config& config,
                     const std::string& weights_dtype) {
                    const WeightType type = weight_type(weights_dtype);
                    GilRelease release;
                    return std::make_shared<GPT2Model>(GPT2Weights::load(paths, config, type));
                  },
                  py::arg("paths"), py::arg("config"), py::arg("weights_dtype") = "float32",
                  "Load a Hugging Face GPT-2 checkpoint's weights: [model.safetensors], or its shards.")
      .def_static("random",
                  [](const GPT2Config& config, uint64_t seed, const std::string& weights_dtype) {
                    const WeightType type = weight_type(weights_dtype);
                    GilRelease release;
                    return std::make_shared<GPT2Model>(GPT2Weights::random(config, seed, type));
                  },
                  py::arg("config"), py::arg("seed") = 0, py::arg("weights_dtype") = "float32")
      .def_property_readonly("config", &GPT2Model::config)
      .def_property_readonly("tied", [](const GPT2Model& m) { return m.weights().tied(); })
      .def_property_readonly("weights_dtype", [](const GPT2Model& m) { return weight_type_name(m.weights().weight_type()); })
      .def_property_readonly("parameters_nbytes", [](const GPT2Model& m) { return m.weights().nbytes(); },
                             "bytes of all parameters as float32")
      .def("state_dict", &state_dict);
  refuse_direct_creation(cls, "Model", "load one with Model.load() or Model.random()");
}

}  // namespace kvcache::bindings
