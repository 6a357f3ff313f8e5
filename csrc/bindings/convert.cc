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

bool bool_argument(const py::handle& value, const char* name) {
  const std::string type_name = py::str(py::type::of(value).attr("__name__"));
  if (type_name != "bool") {
    throw py::type_error(std::string(name) + " must be a bool, got " + type_name + " " +
                         py::repr(value).cast<std::string>());
  }
  return value.cast<bool>();
}

ConfigKeywords::ConfigKeywords(std::string type, std::vector<Field> fields, const py::args& args,
                               const py::kwargs& kwargs)
    : type_(std::move(type)) {
  std::map<std::string, std::string> field_of;  // every accepted name -> its field
  std::string accepted;
  for (const Field& f : fields) {
    given_[f.name];
    field_of[f.name] = f.name;
    accepted += std::string(accepted.empty() ? "" : ", ") + f.name;
    for (std::size_t i = 0; i < f.aliases.size(); ++i) {
      field_of[f.aliases[i]] = f.name;
      accepted += std::string(i == 0 ? " (or " : ", ") + f.aliases[i] + (i + 1 == f.aliases.size() ? ")" : "");
    }
  }
  if (!args.empty()) {
    throw py::type_error(type_ + "() takes keyword arguments only, got " + std::to_string(args.size()) +
                         " positional; it takes " + accepted);
  }
  for (const auto& [key, value] : kwargs) {
    const std::string name = py::str(key);
    const auto it = field_of.find(name);
    if (it == field_of.end()) {
      throw py::type_error(type_ + "() got an unexpected keyword argument '" + name + "'; it takes " + accepted);
    }
    given_[it->second].emplace_back(name, py::reinterpret_borrow<py::object>(value));
  }
}

const std::vector<std::pair<std::string, py::object>>& ConfigKeywords::given(const char* field) const {
  return given_.at(field);
}

void ConfigKeywords::conflict(const char* field) const {
  std::string names;
  for (const auto& [name, value] : given(field)) {
    names += (names.empty() ? "" : " and ") + name + "=" + py::repr(value).cast<std::string>();
  }
  throw py::value_error(type_ + "(): " + names + " name one field (" + field +
                        ") with different values; give it once");
}

template <class T, class Convert>
T ConfigKeywords::typed(const char* field, T fallback, Convert convert) const {
  const auto& values = given(field);
  if (values.empty()) return fallback;
  const T value = convert(values[0].second, values[0].first.c_str());
  for (std::size_t i = 1; i < values.size(); ++i) {
    if (!(convert(values[i].second, values[i].first.c_str()) == value)) conflict(field);
  }
  return value;
}

int ConfigKeywords::get_int(const char* field, int fallback) const { return typed(field, fallback, int_argument); }

float ConfigKeywords::get_float(const char* field, float fallback) const {
  return typed(field, fallback, float_argument);
}

bool ConfigKeywords::get_bool(const char* field, bool fallback) const {
  return typed(field, fallback, bool_argument);
}

py::object ConfigKeywords::get(const char* field) const {
  const auto& values = given(field);
  if (values.empty()) return py::none();
  for (std::size_t i = 1; i < values.size(); ++i) {
    if (!values[i].second.equal(values[0].second)) conflict(field);
  }
  return values[0].second;
}

std::string ConfigKeywords::name(const char* field) const {
  const auto& values = given(field);
  return values.empty() ? field : values[0].first;
}

WeightType weight_type(const std::string& name) {
  if (name == "float32") return WeightType::F32;
  if (name == "bfloat16") return WeightType::BF16;
  if (name == "float16") return WeightType::F16;
  if (name == "int8") return WeightType::I8;
  throw py::value_error("weights_dtype must be 'float32', 'bfloat16', 'float16' or 'int8', got '" + name + "'");
}

std::string weight_type_name(WeightType type) {
  switch (type) {
    case WeightType::F32: return "float32";
    case WeightType::BF16: return "bfloat16";
    case WeightType::F16: return "float16";
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
