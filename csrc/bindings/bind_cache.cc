#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../kv_cache.h"
#include "bindings.h"
#include "convert.h"

namespace py = pybind11;

namespace kvcache::bindings {

void register_cache(py::module_& m) {
  auto cls = py::class_<KVCache>(m, "KVCache",
                      "Contiguous preallocated KV cache, (layers, 2, batch, kv_heads, max_seq_len, head_dim) of float32, "
                      "float16 or bfloat16. Make one with model.new_cache().")
      .def_property_readonly("nbytes", &KVCache::nbytes,
                             "2 x layers x batch x n_kv_head x max_seq_len x head_dim x bytes (4 for float32, 2 for 16 "
                             "bits)")
      .def_property_readonly("n_kv_head", &KVCache::n_kv_head, "key/value heads stored per layer")
      .def_property_readonly("head_dim", &KVCache::head_dim)
      .def_property_readonly("shape",
                             [](const KVCache& c) {
                               return py::make_tuple(c.n_layer(), 2, c.batch_size(), c.n_kv_head(), c.max_seq_len(),
                                                     c.head_dim());
                             },
                             "(layers, 2, batch, n_kv_head, max_seq_len, head_dim): the buffer's layout")
      .def("get_max_cache_shape", &KVCache::max_seq_len, "positions each row can hold (transformers' name)")
      .def_property_readonly("dtype", [](const KVCache& c) { return kv_type_name(c.type()); })
      .def_property_readonly("max_seq_len", &KVCache::max_seq_len)
      .def_property_readonly("batch_size", &KVCache::batch_size)
      .def_property_readonly("n_layer", &KVCache::n_layer)
      .def_property_readonly("seq_lens", &KVCache::seq_lens, "positions held by each batch row")
      .def("get_seq_length", [](const KVCache& c, const py::object& row_arg) {
             const int row = int_argument(row_arg, "row");
             if (row < 0 || row >= c.batch_size()) throw py::index_error("row " + std::to_string(row) + " out of range");
             return c.seq_len(row);
           }, py::arg("row") = 0)
      .def("reset", &KVCache::reset, "Forget every position; the memory is kept for reuse.")
      .def("crop", [](KVCache& c, const py::object& n) { c.crop(int_argument(n, "max_length")); }, py::arg("max_length"),
           "Keep only the first max_length positions of every row.")
      .def("__repr__", [](const KVCache& c) {
        return "KVCache(batch_size=" + std::to_string(c.batch_size()) + ", max_seq_len=" +
               std::to_string(c.max_seq_len()) + ", dtype='" + kv_type_name(c.type()) +
               "', n_kv_head=" + std::to_string(c.n_kv_head()) + ", nbytes=" + std::to_string(c.nbytes()) + ")";
      });
  refuse_direct_creation(cls, "KVCache", "make one with GPT2.new_cache()");
}

}  // namespace kvcache::bindings
