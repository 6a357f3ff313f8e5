// The 49 float32 matrix products of one GPT-2 124M decode step (12 layers x c_attn, attn_proj, c_fc, mlp_proj,
// then the lm_head), on the engine's panel kernel alone: no attention, no layernorm, no Python. The README's "C++
// benchmark" figures were taken with these products and this timing (plus switches, not kept, for the kernel
// variants compared). Batch sizes are stepped in rounds, with the read-bandwidth probe between them, so that
// their ratios are taken under the same share of a shared machine.
//
// Build from the repository root (x86-64, GCC; two command lines, bash expands the braces), then run:
//   g++ -O3 -std=c++17 -fopenmp -mavx2 -mfma -mf16c -mavx512f -mavx512vl -Icsrc -DKVCACHE_AVX512_KERNELS -c
//       csrc/kernels/panel_gemm_avx512.cc
//   g++ -O3 -std=c++17 -fopenmp -mavx2 -mfma -mf16c -Icsrc -DKVCACHE_AVX2_KERNELS -DKVCACHE_AVX512_KERNELS
//       -o step_products benchmarks/step_products.cc csrc/huge_pages.cc panel_gemm_avx512.o
//       csrc/kernels/{isa,panel_gemm,panel_gemm_avx2,gemv,gemv_avx2,probes}.cc
//   OMP_NUM_THREADS=2 ./step_products 1 6 8      # batch sizes (default: 1 8)
//   OMP_NUM_THREADS=2 ./step_products --isa=avx2 1 6 8   # the AVX2 build where the CPU runs AVX-512 (isa.h)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "huge_pages.h"
#include "kernels/isa.h"
#include "kernels/panel_gemm.h"
#include "kernels/probes.h"

namespace {

using kvcache::kernels::packed_size;
using kvcache::kernels::panel_gemm;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// n floats on 2 MiB transparent huge pages, as the engine keeps its weights (with 4 KiB pages a step reads 5-15%
// slower), written after the advice so that the pages are huge from the first touch.
float* huge_floats(std::size_t n, float value) {
  const std::size_t huge = std::size_t{2} << 20;
  const std::size_t bytes = (n * sizeof(float) + huge - 1) / huge * huge;
  auto* p = static_cast<float*>(std::aligned_alloc(huge, bytes));
  if (p == nullptr) {
    std::perror("aligned_alloc");
    std::exit(1);
  }
  kvcache::advise_huge_pages(p, bytes);
  std::fill(p, p + n, value);
  return p;
}

struct Product {
  int K, OC;
  float* weights;  // packed panels; the values do not change the time
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> batches;
  kvcache::kernels::Isa max_isa = kvcache::kernels::kBestIsa;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--isa=", 0) == 0) {
      const auto isa = kvcache::kernels::isa_from_name(arg.substr(6));
      if (!isa) {
        std::fprintf(stderr, "--isa= takes portable, avx2 or avx512; got %s\n", arg.substr(6).c_str());
        return 2;
      }
      max_isa = *isa;
      continue;
    }
    batches.push_back(std::atoi(argv[i]));
  }
  if (batches.empty()) batches = {1, 8};
  for (int b : batches) {
    if (b < 1 || b > 16) {
      std::fprintf(stderr, "batch sizes are decode row counts, 1-16; got %d\n", b);
      return 2;
    }
  }
  constexpr int C = 768, kLayers = 12, kVocab = 50257, kRounds = 30;
  std::vector<Product> products;
  for (int l = 0; l < kLayers; ++l) {
    for (auto [K, OC] : {std::pair{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}}) products.push_back({K, OC, nullptr});
  }
  products.push_back({C, kVocab, nullptr});
  double bytes = 0.0, flops_per_row = 0.0;
  for (Product& p : products) {
    p.weights = huge_floats(packed_size(p.K, p.OC), 0.01f);
    bytes += sizeof(float) * static_cast<double>(packed_size(p.K, p.OC));
    flops_per_row += 2.0 * p.K * p.OC;
  }
  float* inp = huge_floats(16 * 4 * C, 0.02f);
  float* out = huge_floats(16 * packed_size(1, kVocab), 0.0f);
  const std::size_t probe_floats = (std::size_t{1} << 30) / sizeof(float);
  float* probe_buffer = huge_floats(probe_floats, 1.0f);

  std::vector<std::vector<double>> seconds(batches.size());
  std::vector<double> bandwidth;
  for (int round = 0; round < kRounds; ++round) {
    for (std::size_t j = 0; j < batches.size(); ++j) {
      const double start = now();
      for (const Product& p : products) {
        panel_gemm(out, inp, p.weights, nullptr, batches[j], p.K, p.OC, false, nullptr, max_isa);
      }
      seconds[j].push_back(now() - start);
    }
    if (round % 5 == 0) bandwidth.push_back(kvcache::kernels::probe_read_bandwidth(probe_buffer, probe_floats, 1));
  }
  std::printf("%d threads, %s kernels, %.0f MB of weights; read-bandwidth probe %.1f GB/s (median of %zu)\n",
              omp_get_max_threads(), kvcache::kernels::isa_name(kvcache::kernels::usable_isa(max_isa)), bytes / 1e6,
              median(bandwidth) / 1e9, bandwidth.size());
  const double first = median(seconds[0]);
  for (std::size_t j = 0; j < batches.size(); ++j) {
    const double s = median(seconds[j]);
    std::printf("batch %2d: %6.2f ms  %5.1f GB/s  %6.1f GFLOP/s  %.3fx the time of batch %d\n", batches[j], s * 1e3,
                bytes / s / 1e9, flops_per_row * batches[j] / s / 1e9, s / first, batches[0]);
  }
  return 0;
}
