#include "matrix_store.h"

#include "errors.h"
#include "huge_pages.h"
#include "kernels/panel_gemm.h"
#include "quantize.h"
#include "threading.h"

namespace kvcache {

namespace {
// The element of the job's checkpoint tensor(s) at position `index` of its output-major copy, as
// "'name' [i, j]".
std::string element_text(const MatrixJob& j, long index) {
  long out = index / j.inputs(), in = index % j.inputs();
  std::string name = "?";
  for (const auto& [tensor, outputs] : j.tensors) {
    name = tensor;
    if (out < outputs) break;
    out -= outputs;
  }
  if (j.transpose) std::swap(out, in);  // Conv1D stores (in, out)
  return "'" + name + "' [" + std::to_string(out) + ", " + std::to_string(in) + "]";
}
}  // namespace

void MatrixStore::build(const std::vector<MatrixJob>& jobs, WeightType type,
                        const std::function<void(const float*, std::size_t)>& done) {
  apply_num_threads();  // its packing loops run on the core's threads, as a forward does
  std::size_t f32_elements = 0, elements = 0, channels = 0;
  for (const MatrixJob& j : jobs) {
    f32_elements += kernels::packed_size(j.inputs(), j.outputs());
    elements += j.rows * j.cols;
    channels += j.outputs();
  }
  if (type == WeightType::F32) {
    f32_ = xt::xtensor<float, 1>::from_shape({f32_elements});
    advise_huge_pages(f32_.data(), f32_.size() * sizeof(float));
  }
  if (type == WeightType::BF16) {
    bf16_ = xt::xtensor<uint16_t, 1>::from_shape({elements});
    advise_huge_pages(bf16_.data(), bf16_.size() * sizeof(uint16_t));
  }
  if (type == WeightType::F16) {
    f16_ = xt::xtensor<uint16_t, 1>::from_shape({elements});
    advise_huge_pages(f16_.data(), f16_.size() * sizeof(uint16_t));
  }
  if (type == WeightType::I8) {
    int8_ = xt::xtensor<int8_t, 1>::from_shape({elements});
    advise_huge_pages(int8_.data(), int8_.size());
    scales_ = xt::xtensor<float, 1>::from_shape({channels});
  }

  std::vector<float> staging;  // an output-major float32 copy, before a reduced-precision one is made from it
  std::size_t at = 0, at_f32 = 0, at_scale = 0;
  for (const MatrixJob& j : jobs) {
    const long n = j.rows * j.cols, out_rows = j.outputs(), in_cols = j.inputs();
    const float* output_major = j.source;
    if (type == WeightType::F32) {
      float* dst = f32_.data() + at_f32;
      at_f32 += kernels::packed_size(in_cols, out_rows);
      if (j.transpose) {
        kernels::pack_panels(dst, j.source, in_cols, out_rows);
      } else {
        kernels::pack_panels_from_output_major(dst, j.source, in_cols, out_rows);
      }
      *j.matrix = {type, dst, nullptr, Layout::Panels};
    } else if (j.transpose) {
      staging.resize(n);
      float* dst = staging.data();
#pragma omp parallel for schedule(static)
      for (long o = 0; o < out_rows; ++o) {
        for (long i = 0; i < in_cols; ++i) dst[o * in_cols + i] = j.source[i * out_rows + o];
      }
      output_major = dst;
    }
    switch (type) {
      case WeightType::F32:
        break;  // packed above
      case WeightType::BF16:
        quantize_bf16(bf16_.data() + at, output_major, n);
        *j.matrix = {type, bf16_.data() + at, nullptr};
        break;
      case WeightType::F16: {
        Half* dst = reinterpret_cast<Half*>(f16_.data() + at);
        const long beyond = quantize_f16(dst, output_major, n);
        if (beyond >= 0) {
          fail("tensor " + element_text(j, beyond) + " is " + float_text(output_major[beyond]) +
               ", beyond float16's range (+-65504): weights_dtype='float16' cannot hold this checkpoint (load it "
               "as 'bfloat16' or 'float32')");
        }
        *j.matrix = {type, dst, nullptr};
        break;
      }
      case WeightType::I8:
        quantize_int8(int8_.data() + at, scales_.data() + at_scale, output_major, out_rows, in_cols);
        *j.matrix = {type, int8_.data() + at, scales_.data() + at_scale};
        at_scale += out_rows;
        break;
    }
    at += n;
    if (done) done(j.source, n * sizeof(float));
  }
  type_ = type;
}

}  // namespace kvcache
