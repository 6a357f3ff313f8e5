// Conversions from Python arguments, with the checks that make bad input a clear exception.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
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

// "float32" | "bfloat16" | "int8" -> WeightType; ValueError naming the choices otherwise.
WeightType weight_type(const std::string& name);
std::string weight_type_name(WeightType type);

// "float32" | "float16" | "bfloat16" -> KVType; ValueError naming the choices otherwise.
KVType kv_type(const std::string& name);
std::string kv_type_name(KVType type);

}  // namespace kvcache::bindings
