// Exceptions of the core. The bindings map them onto Python's: FileError -> FileNotFoundError,
// std::invalid_argument (bad input, corrupt file) -> ValueError.
#pragma once

#include <stdexcept>
#include <string>

namespace kvcache {

// A file that is missing or cannot be opened.
struct FileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& message) { throw std::invalid_argument(message); }

inline void require(bool condition, const std::string& message) {
  if (!condition) fail(message);
}

}  // namespace kvcache
