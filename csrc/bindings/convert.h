// Conversions from Python arguments, with the checks that make bad input a clear exception.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../kernels/matrix.h"
#include "../kv_cache.h"

namespace kvcache::bindings {

// A 2-D integer array (rows, T) -> row-major int32 ids. Raises TypeError for non-integer arrays and ValueError for
// other ranks or ids that do not fit an int.
std::vector<int> token_matrix(const pybind11::array& tokens, int& rows, int& T);

// A Python int (not a bool) that fits an int32: TypeError / ValueError naming `name` otherwise.
int int_argument(const pybind11::handle& value, const char* name);
// A real number (int, float or a NumPy scalar; not a bool or a str) as a float: TypeError naming `name` otherwise.
float float_argument(const pybind11::handle& value, const char* name);

// A Python bool (or NumPy's): 1 or "yes" would say nothing clear about a model's layers. TypeError naming `name`.
bool bool_argument(const pybind11::handle& value, const char* name);

// The keyword arguments of a config's constructor: each field under our name or one of transformers' for it
// (GPT2Config(n_positions=...) is n_ctx), so that a transformers config's fields can be passed as they are named
// there. TypeError for a positional argument or an unknown name (naming it and listing the accepted ones),
// ValueError for one field given under two names with different values. Hidden like pybind11's own types, which it
// holds (a class of default visibility holding them draws -Wattributes).
class [[gnu::visibility("hidden")]] ConfigKeywords {
 public:
  struct Field {
    const char* name;                  // ours: the attribute
    std::vector<const char*> aliases;  // transformers' names for it
  };
  ConfigKeywords(std::string type, std::vector<Field> fields, const pybind11::args& args,
                 const pybind11::kwargs& kwargs);

  // The field's value, converted under the name it was given by (messages name that), or `fallback`.
  int get_int(const char* field, int fallback) const;
  float get_float(const char* field, float fallback) const;
  bool get_bool(const char* field, bool fallback) const;
  // The value as given (None when absent), for a field the constructor converts itself; name(field) is the name
  // it was given by.
  pybind11::object get(const char* field) const;
  std::string name(const char* field) const;

 private:
  template <class T, class Convert>
  T typed(const char* field, T fallback, Convert convert) const;
  const std::vector<std::pair<std::string, pybind11::object>>& given(const char* field) const;
  [[noreturn]] void conflict(const char* field) const;

  std::string type_;
  std::map<std::string, std::vector<std::pair<std::string, pybind11::object>>> given_;  // field -> (name, value)
};

// "float32" | "bfloat16" | "float16" | "int8" -> WeightType; ValueError naming the choices otherwise.
WeightType weight_type(const std::string& name);
std::string weight_type_name(WeightType type);

// "float32" | "float16" | "bfloat16" -> KVType; ValueError naming the choices otherwise.
KVType kv_type(const std::string& name);
std::string kv_type_name(KVType type);

}  // namespace kvcache::bindings
