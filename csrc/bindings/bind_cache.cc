#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstring>

#include "../kv_cache.h"
#include "bindings.h"
#include "convert.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {

// NumPy's type for the cache's elements: float32, float16, or the raw bits of bfloat16 (NumPy has no bfloat16).
py::dtype element_dtype(const KVCache& c) {
  if (c.type() == KVType::F32) return py::dtype::of<float>();
  if (c.type() == KVType::F16) return py::dtype("float16");
  return py::dtype::of<uint16_t>();
}

// A read-only view of the buffer (base = the cache: the view keeps it alive); for bfloat16, a float32 copy.
py::object read_only_view(const py::object& self, const KVCache& c, const std::vector<py::ssize_t>& shape,
                          const std::vector<py::ssize_t>& strides, void* base) {
  py::array view(element_dtype(c), shape, strides, base, self);
  py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  if (c.type() != KVType::BF16) return std::move(view);
  // widen the bits: bfloat16 is the top half of a float32
  py::module_ np = py::module_::import("numpy");
  return np.attr("left_shift")(np.attr("asarray")(view, "uint32"), 16).attr("view")("float32");
}

int layer_argument(const KVCache& c, const py::object& layer_arg) {
  const int layer = int_argument(layer_arg, "layer");
  if (layer < 0 || layer >= c.n_layer()) {
    throw py::index_error("layer " + std::to_string(layer) + " out of range for a cache of " +
                          std::to_string(c.n_layer()) + " layers");
  }
  return layer;
}

int row_argument(const KVCache& c, const py::object& row_arg, const char* name = "row") {
  const int row = int_argument(row_arg, name);
  if (row < 0 || row >= c.batch_size()) {
    throw py::index_error(std::string(name) + " " + std::to_string(row) + " out of range for a cache of batch_size " +
                          std::to_string(c.batch_size()));
  }
  return row;
}

// A read-only view (B, NKV, len, HS) of one layer's keys (kv = 0) or values (kv = 1), len = the longest row's
// length; or (NKV, len(row), HS) of one row. bfloat16 caches give a float32 copy instead (NumPy has no bfloat16).
py::object layer_view(py::object self, const py::object& layer_arg, const py::object& row_arg, int kv) {
  KVCache& c = self.cast<KVCache&>();
  const int layer = layer_argument(c, layer_arg);
  const py::ssize_t E = static_cast<py::ssize_t>(c.element_bytes());
  const py::ssize_t HS = c.head_dim(), S = c.max_seq_len(), NKV = c.n_kv_head();
  int first = 0, rows = c.batch_size(), len = 0;
  if (!row_arg.is_none()) {
    first = row_argument(c, row_arg);
    rows = 1;
    len = c.seq_len(first);
  } else {
    for (int r = 0; r < c.batch_size(); ++r) len = std::max(len, c.seq_len(r));
  }
  // rows of one layer and kv are B blocks of (NKV, S, HS), contiguous: the layout is (L, 2, B, NKV, S, HS)
  void* base = c.type() == KVType::F32 ? static_cast<void*>(c.keys<float>(layer, first, 0))
                                       : static_cast<void*>(c.keys<uint16_t>(layer, first, 0));
  if (kv == 1) {
    base = c.type() == KVType::F32 ? static_cast<void*>(c.values<float>(layer, first, 0))
                                   : static_cast<void*>(c.values<uint16_t>(layer, first, 0));
  }
  std::vector<py::ssize_t> shape = {rows, NKV, len, HS};
  std::vector<py::ssize_t> strides = {NKV * S * HS * E, S * HS * E, HS * E, E};
  if (!row_arg.is_none()) {
    shape.erase(shape.begin());
    strides.erase(strides.begin());
  }
  return read_only_view(self, c, shape, strides, base);
}

}  // namespace

void register_cache(py::module_& m) {
  auto cls = py::class_<KVCache>(m, "KVCache",
                      "Contiguous preallocated KV cache, (layers, 2, batch, kv_heads, max_seq_len, head_dim) of float32, "
                      "float16 or bfloat16. Make one with model.new_cache().")
      .def_property_readonly("nbytes", &KVCache::nbytes,
                             "2 x layers x batch x n_kv_head x max_seq_len x head_dim x bytes (4 for float32, 2 for 16 "
                             "bits)")
      .def_property_readonly("n_kv_head", &KVCache::n_kv_head, "key/value heads stored per layer")
      .def_property_readonly("head_dim", &KVCache::head_dim, "channels per key and value head")
      .def_property_readonly("shape",
                             [](const KVCache& c) {
                               return py::make_tuple(c.n_layer(), 2, c.batch_size(), c.n_kv_head(), c.max_seq_len(),
                                                     c.head_dim());
                             },
                             "(layers, 2, batch, n_kv_head, max_seq_len, head_dim): the buffer's layout")
      .def("get_max_cache_shape", &KVCache::max_seq_len, "positions each row can hold (transformers' name)")
      .def_property_readonly("dtype", [](const KVCache& c) { return kv_type_name(c.type()); },
                             "how keys and values are stored: 'float32', 'float16' or 'bfloat16'")
      .def_property_readonly("max_seq_len", &KVCache::max_seq_len, "positions each row can hold")
      .def_property_readonly("batch_size", &KVCache::batch_size, "rows (sequences)")
      .def_property_readonly("n_layer", &KVCache::n_layer, "layers")
      .def_property_readonly("seq_lens", &KVCache::seq_lens, "positions held by each batch row")
      .def_property_readonly("window",
                             [](const KVCache& c) -> py::object {
                               return c.windowed() ? py::object(py::int_(c.window().window)) : py::none();
                             },
                             "positions of the sliding window after the sinks, or None for a dense cache")
      .def_property_readonly("sinks", [](const KVCache& c) { return c.window().sinks; },
                             "first positions of each row never evicted (0 for a dense cache)")
      .def_property_readonly("evict_chunk",
                             [](const KVCache& c) -> py::object {
                               return c.windowed() ? py::object(py::int_(c.window().evict_chunk)) : py::none();
                             },
                             "positions a full row of a windowed cache evicts at once, or None for a dense cache")
      .def("evicted", [](const KVCache& c, const py::object& row) { return c.evicted(row_argument(c, row)); },
           py::arg("row") = 0, "tokens this row has evicted since it was last reset (always 0 for a dense cache)")
      .def("get_seq_length", [](const KVCache& c, const py::object& row_arg) {
             const int row = int_argument(row_arg, "row");
             if (row < 0 || row >= c.batch_size()) throw py::index_error("row " + std::to_string(row) + " out of range");
             return c.seq_len(row);
           }, py::arg("row") = 0, "positions row holds (transformers' name); IndexError for a row outside the batch")
      .def("reset",
           [](KVCache& c, const py::object& row) {
             if (row.is_none()) {
               c.reset();
             } else {
               c.crop_row(row_argument(c, row), 0);
             }
           },
           py::arg("row") = py::none(), "Forget every position (of one row, or all); the memory is kept for reuse. IndexError for a row outside "
           "the batch.")
      .def("crop",
           [](KVCache& c, const py::object& n, const py::object& row) {
             const int max_length = int_argument(n, "max_length");
             if (row.is_none()) {
               c.crop(max_length);
             } else {
               c.crop_row(row_argument(c, row), max_length);
             }
           },
           py::arg("max_length"), py::arg("row") = py::none(),
           "Keep only the first max_length positions of every row (or of one row); shorter rows are unchanged. "
           "ValueError for max_length < 0, IndexError for a row outside the batch.")
      .def("copy_row",
           [](KVCache& c, const py::object& src, const py::object& dst_row, KVCache* dst) {
             KVCache& target = dst == nullptr ? c : *dst;
             const int s = row_argument(c, src, "src");
             const int d = row_argument(target, dst_row, "dst_row");
             py::gil_scoped_release release;
             c.copy_row(s, target, d);
           },
           py::arg("src"), py::arg("dst_row"), py::arg("dst") = nullptr,
           "Row dst_row (of this cache, or of dst: a cache of the same model and dtype) becomes a copy of row src's "
           "filled positions. IndexError for a row outside its cache; ValueError for another model's or dtype's "
           "cache, or one too short to hold the positions.")
      .def("copy", [](const KVCache& c) { py::gil_scoped_release release; return c.clone(); },
           "A new cache holding the same positions (same model, size and dtype).")
      .def("__copy__", [](const KVCache& c) { py::gil_scoped_release release; return c.clone(); })
      .def("__deepcopy__", [](const KVCache& c, const py::object&) { py::gil_scoped_release release; return c.clone(); },
           py::arg("memo"))
      .def("__reduce__", [](const KVCache&) -> py::object {
             throw py::type_error("a KVCache cannot be pickled: it belongs to a model of this process; save a "
                                  "conversation with session.save() and read it back with model.load_session()");
           })
      .def("keys", [](py::object self, const py::object& layer, const py::object& row) {
             return layer_view(std::move(self), layer, row, 0);
           }, py::arg("layer"), py::arg("row") = py::none(),
           "Read-only view of a layer's keys: (batch, n_kv_head, len, head_dim), len the longest row's length "
           "(positions past a shorter row's length are not its own), or (n_kv_head, len, head_dim) of one row. "
           "float32 and float16 caches give views of the live buffer; bfloat16 ones a float32 copy.")
      .def("values", [](py::object self, const py::object& layer, const py::object& row) {
             return layer_view(std::move(self), layer, row, 1);
           }, py::arg("layer"), py::arg("row") = py::none(), "As keys(), for the values.")
      .def("read",
           [](const KVCache& c, const py::object& row_arg, const py::object& start_arg, const py::object& n_arg) {
             const int row = row_argument(c, row_arg);
             const int start = int_argument(start_arg, "start"), n = int_argument(n_arg, "n");
             c.check_positions(row, start, n);  // before the array is shaped by n
             py::array out(element_dtype(c), std::vector<py::ssize_t>{c.n_layer(), 2, c.n_kv_head(), n, c.head_dim()});
             void* data = out.mutable_data();
             py::gil_scoped_release release;
             c.read_positions(row, start, n, data);
             return out;
           },
           py::arg("row"), py::arg("start"), py::arg("n"),
           "Positions [start, start + n) of a row as a new array (layers, 2, n_kv_head, n, head_dim): float32, "
           "float16, or uint16 holding bfloat16's bits. IndexError for a row outside the batch; ValueError for "
           "positions the row does not hold.")
      .def("append",
           [](KVCache& c, const py::object& row_arg, const py::array& data) {
             const int row = row_argument(c, row_arg);
             if (!data.dtype().is(element_dtype(c))) {
               throw py::type_error("a " + kv_type_name(c.type()) + " cache takes " +
                                    py::str(element_dtype(c)).cast<std::string>() + " positions, got " +
                                    py::str(data.dtype()).cast<std::string>());
             }
             if (data.ndim() != 5 || data.shape(0) != c.n_layer() || data.shape(1) != 2 ||
                 data.shape(2) != c.n_kv_head() || data.shape(4) != c.head_dim()) {
               throw py::value_error("positions must be (layers=" + std::to_string(c.n_layer()) + ", 2, n_kv_head=" +
                                     std::to_string(c.n_kv_head()) + ", n, head_dim=" +
                                     std::to_string(c.head_dim()) + "), got shape " +
                                     py::str(py::tuple(py::cast(std::vector<py::ssize_t>(
                                                 data.shape(), data.shape() + data.ndim())))).cast<std::string>());
             }
             const py::array packed = py::module_::import("numpy").attr("ascontiguousarray")(data);
             const int n = static_cast<int>(packed.shape(3));
             const void* in = packed.data();
             py::gil_scoped_release release;
             c.append_positions(row, n, in);
           },
           py::arg("row"), py::arg("positions"),
           "Append positions packed as read() gives them at the row's end.")
      .def("__array__",
           [](py::object self, const py::object& dtype, const py::object& copy) -> py::object {
             KVCache& c = self.cast<KVCache&>();
             const py::ssize_t E = static_cast<py::ssize_t>(c.element_bytes());
             std::vector<py::ssize_t> shape = {c.n_layer(), 2, c.batch_size(), c.n_kv_head(), c.max_seq_len(),
                                               c.head_dim()};
             std::vector<py::ssize_t> strides(6);
             py::ssize_t stride = E;
             for (int i = 5; i >= 0; --i) {
               strides[i] = stride;
               stride *= shape[i];
             }
             void* base = c.type() == KVType::F32 ? static_cast<void*>(c.keys<float>(0, 0, 0))
                                                  : static_cast<void*>(c.keys<uint16_t>(0, 0, 0));
             py::object out = read_only_view(self, c, shape, strides, base);
             if (!dtype.is_none()) {
               out = out.attr("astype")(dtype);  // a new array
             } else if (copy.is(py::bool_(true))) {  // np.array(cache): a snapshot, not the live buffer
               out = out.attr("copy")();
             }
             return out;
           },
           py::arg("dtype") = py::none(), py::arg("copy") = py::none(),
           "The whole buffer (layers, 2, batch, n_kv_head, max_seq_len, head_dim); positions past a row's length "
           "are not its own (zeros or stale). bfloat16 caches give a float32 copy.")
      .def("__repr__", [](const KVCache& c) {
        return "KVCache(batch_size=" + std::to_string(c.batch_size()) + ", max_seq_len=" +
               std::to_string(c.max_seq_len()) + ", dtype='" + kv_type_name(c.type()) +
               "', n_kv_head=" + std::to_string(c.n_kv_head()) +
               (c.windowed() ? ", window=" + std::to_string(c.window().window) + ", sinks=" +
                                   std::to_string(c.window().sinks) + ", evict_chunk=" +
                                   std::to_string(c.window().evict_chunk)
                             : std::string()) +
               ", nbytes=" + std::to_string(c.nbytes()) + ")";
      });
  refuse_direct_creation(cls, "KVCache", "make one with GPT2.new_cache()");
}

}  // namespace kvcache::bindings
