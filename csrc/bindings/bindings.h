// Registration functions of the pybind11 module, one per bound concept (CTranslate2 style).
#pragma once

#include <pybind11/pybind11.h>

#include <string>

namespace kvcache::bindings {

// A __new__ that raises TypeError(message), whatever it is called with.
inline pybind11::cpp_function refusing_new(const std::string& message) {
  return pybind11::cpp_function([message](pybind11::args, pybind11::kwargs) { throw pybind11::type_error(message); });
}

// For a class that only the core makes (a cache by new_cache, a model by its loaders): Python's __new__ would
// give an instance with no C++ object behind it, whose methods read uninitialised memory (a crash, or garbage).
// pybind11 makes its instances without __new__, so replacing it changes nothing else.
inline void refuse_direct_creation(pybind11::handle cls, const std::string& name, const std::string& how) {
  pybind11::setattr(cls, "__new__", refusing_new(name + " cannot be created directly; " + how));
}

// For a class Python does construct: Cls(...) runs pybind11's own __new__, then __init__, and pybind11 checks that
// __init__ made the C++ object. A bare Cls.__new__(Cls) skips __init__, and pybind11 then hands the methods raw,
// uninitialised memory (garbage fields, a garbage mutex). So the refusal goes straight into the class dict:
// setattr would also point the type's construction slot at it and refuse Cls(...) too. The class must be
// py::is_final(), since a subclass would take the refusal as its constructor.
inline void refuse_bare_new(pybind11::handle cls, const std::string& name, const std::string& how) {
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  const pybind11::cpp_function refusal = refusing_new(name + ".__new__ alone makes no " + name + "; " + how);
  if (PyDict_SetItemString(type->tp_dict, "__new__", refusal.ptr()) != 0) throw pybind11::error_already_set();
  PyType_Modified(type);
}

void register_errors(pybind11::module_& m);
void register_config(pybind11::module_& m);
void register_llama_config(pybind11::module_& m);
void register_cache(pybind11::module_& m);
void register_model(pybind11::module_& m);
// After register_cache and register_model: adds the encoder-decoder methods to their classes.
void register_cross(pybind11::module_& m);
void register_generator(pybind11::module_& m);
void register_sampler(pybind11::module_& m);
void register_safetensors(pybind11::module_& m);

// Not the engine's: the kernel test bindings and machine probes, the whole of kvcache_kernels._kernels (a separate
// extension, built with -DKVCACHE_KERNEL_TESTS=ON; csrc/bindings/kernels_module/).
void register_kernels(pybind11::module_& m);

}  // namespace kvcache::bindings
