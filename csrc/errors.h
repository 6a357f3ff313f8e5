// Exceptions of the core. The bindings map them onto Python's: FileError -> FileNotFoundError,
// std::invalid_argument (bad input, corrupt file) -> ValueError.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <cstdint>
#include <string>
#include <vector>

namespace kvcache {

// A file that is missing or cannot be opened.
struct FileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& message) { throw std::invalid_argument(message); }

inline void require(bool condition, const std::string& message) {
  if (!condition) fail(message);
}

// A float as the shortest decimal that reads back to it (1e-05, 0.9, inf), for messages: std::to_string's fixed
// six decimals turned a tiny top_p into "0.000000" and eps 1e-5 into "0.000010".
inline std::string float_text(float value) {
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, static_cast<double>(value));
    if (std::strtof(text, nullptr) == value) break;
  }
  return text;
}

// A tensor shape as [d0, d1, ...], for messages.
inline std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A config field that must be > 0: "config: <name> must be positive, got <value>".
inline void require_positive(int value, const char* name) {
  require(value > 0, std::string("config: ") + name + " must be positive, got " + std::to_string(value));
}

}  // namespace kvcache
