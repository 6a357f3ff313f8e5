#include "convert.h"

#include <climits>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

namespace py = pybind11;

namespace kvcache::bindings {

namespace {
template <class I>
std::vector<int> checked_ids(const py::array& tokens) {
  auto ids = py::array_t<I, py::array::c_style | py::array::forcecast>::ensure(tokens);
  std::vector<int> out(ids.size());
  const I* data = ids.data();
  for (py::ssize_t i = 0; i < ids.size(); ++i) {
    // the vocabulary's bounds are checked by the model; here only that the id survives the narrowing to int
    if (data[i] > static_cast<I>(INT_MAX) || (std::is_signed_v<I> && data[i] < static_cast<I>(INT_MIN))) {
      throw py::value_error("token id " + std::to_string(data[i]) + " is outside the vocabulary");
    }
    out[i] = static_cast<int>(data[i]);
  }
  return out;
}
}  // namespace

std::vector<int> token_matrix(const py::array& tokens, int& rows, int& T) {
  if (tokens.dtype().kind() != 'i' && tokens.dtype().kind() != 'u') {
    throw py::type_error("token ids must be an integer array, got dtype " + py::str(tokens.dtype()).cast<std::string>());
  }
  if (tokens.ndim() != 2) {
    throw py::value_error("token ids must be a 2-D array (batch, seq_len), got " + std::to_string(tokens.ndim()) +
                          " dimensions");
  }
  rows = static_cast<int>(tokens.shape(0));
  T = static_cast<int>(tokens.shape(1));
  // unsigned ids as unsigned: 2**64 - 5 read as a signed integer would be -5
  return tokens.dtype().kind() == 'u' ? checked_ids<unsigned long long>(tokens) : checked_ids<long long>(tokens);
}

int int_argument(const py::handle& value, const char* name) {
  // ints and NumPy integers (anything with __index__), but not bools, Python's or NumPy's (both types are named
  // "bool"): True is no count
  const std::string type_name = py::str(py::type::of(value).attr("__name__"));
  if (type_name == "bool" || PyIndex_Check(value.ptr()) == 0) {
    throw py::type_error(std::string(name) + " must be an int, got " + type_name + " " +
                         py::repr(value).cast<std::string>());
  }
  const py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
  const long long v = index ? PyLong_AsLongLong(index.ptr()) : 0;
  if (PyErr_Occurred() != nullptr || v < INT_MIN || v > INT_MAX) {
    PyErr_Clear();
    throw py::value_error(std::string(name) + " must fit a 32-bit int, got " + py::repr(value).cast<std::string>());
  }
  return static_cast<int>(v);
}

float float_argument(const py::handle& value, const char* name) {
  const std::string type_name = py::str(py::type::of(value).attr("__name__"));
  if (type_name == "bool" || py::isinstance<py::str>(value) || !py::hasattr(value, "__float__")) {
    throw py::type_error(std::string(name) + " must be a number, got " + type_name + " " +
                         py::repr(value).cast<std::string>());
  }
  const double number = py::float_(py::reinterpret_borrow<py::object>(value)).cast<double>();
  // the core takes float32: 1e50 would become inf and 1e-50 zero, and messages would name those, not the value given
  if (std::isfinite(number) && (std::fabs(number) > std::numeric_limits<float>::max() ||
                                (number != 0.0 && static_cast<float>(number) == 0.0f))) {
    throw py::value_error(std::string(name) + " must fit a float32, got " + py::repr(value).cast<std::string>());
  }
  return static_cast<float>(number);
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

std::string kv_type_name(KVType type) { return kv_type_label(type); }

}  // namespace kvcache::bindings
