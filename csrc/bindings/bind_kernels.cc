// The fast kernels and their naive twins, exposed so tests can compare them on the same inputs, and the machine
// probes of the benchmarks: kvcache_kernels._kernels, an extension apart from the engine's _core, built only with
// -DKVCACHE_KERNEL_TESTS=ON.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../kernels/attention.h"
#include "../kernels/float16.h"
#include "../kernels/gelu.h"
#include "../kernels/gemv.h"
#include "../kernels/isa.h"
#include "../kernels/matmul.h"
#include "../kernels/panel_gemm.h"
#include "../kernels/probes.h"
#include "../kernels/stream_split.h"
#include "../quantize.h"
#include "convert.h"
#include "../threading.h"
#include "bindings.h"
#include "gil_release.h"

namespace py = pybind11;

namespace kvcache::bindings {

namespace {

using Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

// This module links its own copy of the core, so its own thread count (threading.h): every threaded call takes the
// engine's first, so that kvcache.set_num_threads sets the count for both. (A copy forked after its threads ran
// refuses more than one, as the engine does.)
void apply_engine_threads() {
  const int n = py::module_::import("kvcache._core").attr("get_num_threads")().cast<int>();
  if (n != get_num_threads()) set_num_threads(n);
  apply_num_threads();
}

void check_dims(bool ok, const char* what) {
  if (!ok) throw py::value_error(std::string("kernel arguments: ") + what);
}

py::list available_isas() {
  py::list names;
  for (auto isa : {kernels::Isa::kPortable, kernels::Isa::kAvx2, kernels::Isa::kAvx512}) {
    if (kernels::isa_available(isa)) names.append(kernels::isa_name(isa));
  }
  return names;
}

// "best", or the name of a build this machine runs (a test that asks for one it cannot run is told so).
kernels::Isa parse_isa(const std::string& name) {
  if (name == "best") return kernels::kBestIsa;
  const std::optional<kernels::Isa> isa = kernels::isa_from_name(name);
  if (!isa) throw py::value_error("isa must be 'best', 'portable', 'avx2' or 'avx512'; got '" + name + "'");
  if (!kernels::isa_available(*isa)) {
    throw py::value_error("isa '" + name + "' is not available on this machine; available: " +
                          py::str(available_isas()).cast<std::string>());
  }
  return *isa;
}

// An output-major (OC, K) float32 weight stored as the model stores it for `dtype`, with its storage: float32 in
// panels, 16/8 bits output-major through the engine's own quantiser.
struct StoredMatrix {
  Matrix matrix;
  std::vector<float> panels;
  std::vector<uint16_t> bf16;
  std::vector<Half> f16;
  std::vector<int8_t> int8;
  std::vector<float> scales;
};

StoredMatrix store(const float* weight, long rows, long cols, const std::string& dtype) {
  StoredMatrix s;
  const WeightType type = weight_type(dtype);
  if (type == WeightType::F32) {
    s.panels.resize(kernels::packed_size(cols, rows));
    kernels::pack_panels_from_output_major(s.panels.data(), weight, cols, rows);
    s.matrix = {type, s.panels.data(), nullptr, Layout::Panels};
  } else if (type == WeightType::BF16) {
    s.bf16.resize(rows * cols);
    quantize_bf16(s.bf16.data(), weight, rows * cols);
    s.matrix = {type, s.bf16.data(), nullptr};
  } else if (type == WeightType::F16) {
    s.f16.resize(rows * cols);
    if (quantize_f16(s.f16.data(), weight, rows * cols) >= 0) {
      throw py::value_error("kernel arguments: a weight is beyond float16's range");
    }
    s.matrix = {type, s.f16.data(), nullptr};
  } else {
    s.int8.resize(rows * cols);
    s.scales.resize(rows);
    quantize_int8(s.int8.data(), s.scales.data(), weight, rows, cols);
    s.matrix = {type, s.int8.data(), s.scales.data()};
  }
  return s;
}

// out (N, OC) = inp (N, K) @ weight^T + bias for an output-major weight (OC, K), as the model computes it.
Array linear(Array inp, Array weight, py::object bias, bool naive, const std::string& dtype, const std::string& isa) {
  check_dims(inp.ndim() == 2 && weight.ndim() == 2 && inp.shape(1) == weight.shape(1), "need (N, K) and (OC, K)");
  const int N = inp.shape(0), K = inp.shape(1), OC = weight.shape(0);
  const kernels::Isa max_isa = parse_isa(isa);
  const bool has_bias = !bias.is_none();
  Array b = has_bias ? Array::ensure(bias) : Array();
  if (has_bias) check_dims(b && b.ndim() == 1 && b.shape(0) == OC, "bias must be (OC)");
  Array out({N, OC});
  if (naive) {
    kernels::matmul_naive(out.mutable_data(), inp.data(), weight.data(), has_bias ? b.data() : nullptr, N, K, OC, false);
    return out;
  }
  StoredMatrix w = store(weight.data(), OC, K, dtype);
  apply_engine_threads();
  std::vector<float> scratch(kernels::matmul_scratch_size(w.matrix, N, K));
  kernels::matmul(out.mutable_data(), inp.data(), w.matrix, has_bias ? b.data() : nullptr, N, K, OC, false,
                  scratch.data(), max_isa);
  return out;
}

// The float32 values an output-major weight has once stored as `dtype` (what the fast kernels multiply by).
Array stored_values(Array weight, const std::string& dtype) {
  check_dims(weight.ndim() == 2, "weight must be 2-D");
  StoredMatrix w = store(weight.data(), weight.shape(0), weight.shape(1), dtype);
  Array out({weight.shape(0), weight.shape(1)});
  kernels::dequantize_rows(out.mutable_data(), w.matrix, 0, weight.shape(0), weight.shape(1));
  return out;
}

// x as a KV cache of element type E stores it (16-bit types rounded by the engine's conversion).
template <class E>
std::vector<E> store_as(const Array& x) {
  std::vector<E> out(x.size());
  kernels::store_row(out.data(), x.data(), static_cast<int>(x.size()));
  return out;
}

// f(const E* keys, const E* values) for keys and values stored as a KV cache of `dtype` stores them.
template <class F>
void with_stored_kv(const std::string& dtype, const Array& keys, const Array& values, F&& f) {
  switch (kv_type(dtype)) {
    case KVType::F32: return f(keys.data(), values.data());
    case KVType::F16: return f(store_as<Half>(keys).data(), store_as<Half>(values).data());
    case KVType::BF16: return f(store_as<uint16_t>(keys).data(), store_as<uint16_t>(values).data());
  }
}

// The float32 values a KV cache of `dtype` holds for x (what attention computes with), read back with the
// vector conversion (vector = true) or the scalar one.
Array stored_kv(Array x, const std::string& dtype, bool vector) {
  Array out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const int n = static_cast<int>(x.size());
  with_stored_kv(dtype, x, x, [&](const auto* p, const auto*) {
    if (vector) {
      kernels::load_row(out.mutable_data(), p, n);
    } else {
      for (int i = 0; i < n; ++i) out.mutable_data()[i] = kernels::widen(p, i);
    }
  });
  return out;
}

Array attend(Array q, Array keys, Array values, bool naive, const std::string& cache_dtype, const std::string& isa) {
  check_dims(q.ndim() == 1 && keys.ndim() == 2 && values.ndim() == 2 && keys.shape(1) == q.shape(0) &&
                 values.shape(0) == keys.shape(0) && values.shape(1) == q.shape(0) && keys.shape(0) > 0,
             "need q (HS), keys and values (len, HS)");
  const int len = keys.shape(0), HS = q.shape(0);
  const kernels::Isa max_isa = parse_isa(isa);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  Array out(HS);
  std::vector<float> scores(len);
  if (naive) {
    check_dims(cache_dtype == "float32", "the naive twin takes float32 keys and values");
    kernels::attend_naive(out.mutable_data(), q.data(), keys.data(), values.data(), len, HS, scale, scores.data());
    return out;
  }
  with_stored_kv(cache_dtype, keys, values, [&](const auto* k, const auto* v) {
    kernels::attend(out.mutable_data(), q.data(), k, v, len, HS, scale, scores.data(), max_isa);
  });
  return out;
}

// T queries at positions start .. start + T - 1 over keys / values (start + T, HS): the prefill path.
Array attend_block(Array q, Array keys, Array values, int start, const std::string& cache_dtype) {
  check_dims(q.ndim() == 2 && keys.ndim() == 2 && values.ndim() == 2 && keys.shape(1) == q.shape(1) &&
                 values.shape(1) == q.shape(1) && start >= 0 && keys.shape(0) == start + q.shape(0) &&
                 values.shape(0) == keys.shape(0) && q.shape(0) > 0,
             "need q (T, HS), keys and values (start + T, HS)");
  const int T = q.shape(0), HS = q.shape(1), L = keys.shape(0);
  Array out({T, HS});
  std::vector<float> scratch(kernels::attend_block_scratch(T, L, HS));
  with_stored_kv(cache_dtype, keys, values, [&](const auto* k, const auto* v) {
    kernels::attend_block(out.mutable_data(), HS, q.data(), HS, k, v, start, T, HS,
                          1.0f / std::sqrt(static_cast<float>(HS)), scratch.data());
  });
  return out;
}

// How parallel_stream dealt `items` work items in chunks of `chunk`: how many times each was taken, and by which
// thread. slow_thread (if >= 0) sleeps 2 ms per chunk, so the others must take chunks from its share.
py::tuple stream_split(int items, int chunk, int slow_thread) {
  check_dims(items >= 0, "items must be >= 0");
  apply_engine_threads();
  std::vector<std::atomic<int>> visits(items);
  py::array_t<int> taken(items), owner(items);
  int* who = owner.mutable_data();
  {
    GilRelease release;
    kernels::parallel_stream(items, chunk, [&](int begin, int end) {
      const int t = omp_get_thread_num();
      if (t == slow_thread) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      for (int i = begin; i < end; ++i) {
        visits[i].fetch_add(1);
        who[i] = t;
      }
    });
  }
  for (int i = 0; i < items; ++i) taken.mutable_data()[i] = visits[i].load();
  return py::make_tuple(taken, owner);
}

}  // namespace

void register_kernels(py::module_& k) {
  k.def("linear", &linear, py::arg("inp"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("naive") = false,
        py::arg("weights_dtype") = "float32", py::arg("isa") = "best",
        "(N, K) @ weight^T + bias for an output-major weight (OC, K), stored as the model stores weights_dtype "
        "first; isa='avx2' or 'portable' caps the build of the kernels that have wider ones (float32 panels: "
        "AVX-512 VL, AVX2, portable; int8 and float16 for N <= 16: AVX2, portable)");
  k.def("available_isas", &available_isas, "the kernel builds this machine runs, from 'portable' up (isa.h)");
  k.def("stored_values", &stored_values, py::arg("weight"), py::arg("weights_dtype"),
        "the float32 values of an output-major weight once stored as weights_dtype (int8: one scale per row)");
  k.def("probe_read_bandwidth",
        [](Array data, int repeats) {
          apply_engine_threads();
          GilRelease release;
          return kernels::probe_read_bandwidth(data.data(), data.size(), repeats);
        },
        py::arg("data"), py::arg("repeats") = 5, "bytes/s of a threaded read of `data` (best of repeats)");
  k.def("probe_fma_peak",
        [](double seconds) {
          apply_engine_threads();
          GilRelease release;
          return kernels::probe_fma_peak(seconds);
        },
        py::arg("seconds") = 0.5, "float32 FLOP/s of independent FMA chains on every thread");
  k.def("gelu",
        [](Array x, bool naive) {
          Array out({x.size()});
          std::copy(x.data(), x.data() + x.size(), out.mutable_data());
          apply_engine_threads();
          (naive ? kernels::gelu_naive : kernels::gelu)(out.mutable_data(), static_cast<long>(x.size()));
          return out;
        },
        py::arg("x"), py::arg("naive") = false, "GELU (tanh form) of a float32 array, flattened");
  k.def("attend_block", &attend_block, py::arg("q"), py::arg("keys"), py::arg("values"), py::arg("start"),
        py::arg("cache_dtype") = "float32", "the prefill path over keys and values stored as cache_dtype");
  k.def("attend", &attend, py::arg("q"), py::arg("keys"), py::arg("values"), py::arg("naive") = false,
        py::arg("cache_dtype") = "float32", py::arg("isa") = "best",
        "the decode path over keys and values stored as cache_dtype; isa='portable' runs the portable build");
  k.def("stream_split", &stream_split, py::arg("items"), py::arg("chunk"), py::arg("slow_thread") = -1,
        "(times taken, thread) per item as decode products deal their work among threads (stream_split.h)");
  k.def("stored_kv", &stored_kv, py::arg("x"), py::arg("cache_dtype"), py::arg("vector") = true,
        "the float32 values a KV cache of cache_dtype holds for x, read back by the vector or the scalar path");
}

}  // namespace kvcache::bindings
