#include <pybind11/pybind11.h>

#include "../errors.h"
#include "bindings.h"

namespace py = pybind11;

namespace kvcache::bindings {

// std::invalid_argument already becomes ValueError in pybind11; only the missing-file case needs a translator.
void register_errors(py::module_&) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const FileError& e) {
      PyErr_SetString(PyExc_FileNotFoundError, e.what());
    }
  });
}

}  // namespace kvcache::bindings
