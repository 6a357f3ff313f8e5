// Registration functions of the pybind11 module, one per bound concept (CTranslate2 style).
#pragma once

#include <pybind11/pybind11.h>

#include <string>

namespace kvcache::bindings {

// For a class that only the core makes (a cache by new_cache, a model by its loaders): Python's __new__ would
// give an instance with no C++ object behind it, whose methods read uninitialised memory (a crash, or garbage).
// pybind11 makes its instances without __new__, so replacing it changes nothing else.
inline void refuse_direct_creation(pybind11::handle cls, const std::string& name, const std::string& how) {
  pybind11::setattr(cls, "__new__", pybind11::cpp_function([name, how](pybind11::args, pybind11::kwargs) {
                      throw pybind11::type_error(name + " cannot be created directly; " + how);
                    }));
}

void register_errors(pybind11::module_& m);
void register_config(pybind11::module_& m);
void register_cache(pybind11::module_& m);
void register_model(pybind11::module_& m);
void register_generator(pybind11::module_& m);
void register_sampler(pybind11::module_& m);
void register_kernels(pybind11::module_& m);

}  // namespace kvcache::bindings
