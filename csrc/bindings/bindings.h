// Registration functions of the pybind11 module, one per bound concept (CTranslate2 style).
#pragma once

#include <pybind11/pybind11.h>

namespace kvcache::bindings {

void register_errors(pybind11::module_& m);
void register_config(pybind11::module_& m);
void register_cache(pybind11::module_& m);
void register_model(pybind11::module_& m);
void register_generator(pybind11::module_& m);
void register_sampler(pybind11::module_& m);
void register_kernels(pybind11::module_& m);

}  // namespace kvcache::bindings
