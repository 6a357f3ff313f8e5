// The core's validated safetensors reader for Python's loaders (the LLaMA family's, llama_loading.py): each
// tensor as a read-only NumPy view of its stored values, float32, float16 or bfloat16 (as uint16 bits); and the
// tensor names of a file, which checkpoint_files.py checks against a shard index.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "../errors.h"
#include "../safetensors.h"
#include "bindings.h"
#include "gil_release.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {

py::dict read_safetensors(const std::string& path) {
  std::shared_ptr<SafeTensorsFile> file;
  {
    GilRelease release;
    file = std::make_shared<SafeTensorsFile>(path);
  }
  // the views' base: a capsule that keeps the map alive as long as any view
  const py::capsule owner(new std::shared_ptr<SafeTensorsFile>(file),
                          [](void* p) { delete static_cast<std::shared_ptr<SafeTensorsFile>*>(p); });
  py::dict out;
  for (const std::string& name : file->names()) {
    const TensorInfo& info = file->info(name);
    py::dtype dtype;
    if (info.dtype == DType::F32) {
      dtype = py::dtype::of<float>();
    } else if (info.dtype == DType::F16) {
      dtype = py::dtype("float16");
    } else if (info.dtype == DType::BF16) {
      dtype = py::dtype::of<uint16_t>();
    } else {
      fail("'" + path + "': tensor '" + name + "' has unsupported dtype " + info.dtype_name +
           " (supported: F32, F16, BF16)");
    }
    std::vector<py::ssize_t> shape(info.shape.begin(), info.shape.end());
    py::array view(dtype, shape, static_cast<const void*>(file->data(info)), owner);
    py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    out[py::str(name)] = py::make_tuple(info.dtype_name, view);
  }
  return out;
}

}  // namespace

void register_safetensors(py::module_& m) {
  m.def("read_safetensors", &read_safetensors, py::arg("path"),
        "{name: (dtype name, read-only array of the stored values)}; BF16 values as their uint16 bits.");
  m.def(
      "safetensors_names",
      [](const std::string& path) {
        GilRelease release;
        return SafeTensorsFile(path).names();
      },
      py::arg("path"), "The names of every tensor of a file (any dtype), its header checked as for reading.");
}

}  // namespace kvcache::bindings
