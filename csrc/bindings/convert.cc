#include "convert.h"

#include <climits>
#include <string>

namespace py = pybind11;

namespace kvcache::bindings {

std::vector<int> token_matrix(const py::array& tokens, int& rows, int& T) {
  if (tokens.dtype().kind() != 'i' && tokens.dtype().kind() != 'u') {
    throw py::type_error("token ids must be an integer array, got dtype " + py::str(tokens.dtype()).cast<std::string>());
  }
  if (tokens.ndim() != 2) {
    throw py::value_error("token ids must be a 2-D array (batch, seq_len), got " + std::to_string(tokens.ndim()) +
                          " dimensions");
  }
  auto ids = py::array_t<long long, py::array::c_style | py::array::forcecast>::ensure(tokens);
  rows = static_cast<int>(ids.shape(0));
  T = static_cast<int>(ids.shape(1));
  std::vector<int> out(ids.size());
  const long long* data = ids.data();
  for (py::ssize_t i = 0; i < ids.size(); ++i) {
    if (data[i] < INT_MIN || data[i] > INT_MAX) {
      throw py::value_error("token id " + std::to_string(data[i]) + " is outside the vocabulary");
    }
    out[i] = static_cast<int>(data[i]);
  }
  return out;
}

WeightType weight_type(const std::string& name) {
  if (name == "float32") return WeightType::F32;
  if (name == "bfloat16") return WeightType::BF16;
  if (name == "int8") return WeightType::I8;
  throw py::value_error("weights_dtype must be 'float32', 'bfloat16' or 'int8', got '" + name + "'");
}

std::string weight_type_name(WeightType type) {
  switch (type) {
    case WeightType::F32: return "float32";
    case WeightType::BF16: return "bfloat16";
    case WeightType::I8: return "int8";
  }
  return "?";
}

KVType kv_type(const std::string& name) {
  if (name == "float32") return KVType::F32;
  if (name == "float16") return KVType::F16;
  if (name == "bfloat16") return KVType::BF16;
  throw py::value_error("cache dtype must be 'float32', 'float16' or 'bfloat16', got '" + name + "'");
}

std::string kv_type_name(KVType type) {
  switch (type) {
    case KVType::F32: return "float32";
    case KVType::F16: return "float16";
    case KVType::BF16: return "bfloat16";
  }
  return "?";
}

}  // namespace kvcache::bindings
