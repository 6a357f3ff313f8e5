#include "isa.h"

namespace kvcache::kernels {

namespace {
bool cpu_runs_avx2() {
#if defined(KVCACHE_AVX2_KERNELS)
  // F16C too, for attention_avx2.cc and float16 decode (gemv_avx2.cc): every CPU with AVX2 has it, but it is a
  // separate feature bit (a VM or qemu's -cpu Haswell,-f16c can leave it out)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool cpu_runs_avx512() {
#if defined(KVCACHE_AVX512_KERNELS)
  // GCC's cpu check also reads XCR0, so an OS that does not save the 32 registers reports neither feature
  return cpu_runs_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}
}  // namespace

bool isa_available(Isa isa) {
  static const bool avx2 = cpu_runs_avx2(), avx512 = cpu_runs_avx512();
  switch (isa) {
    case Isa::kPortable: return true;
    case Isa::kAvx2: return avx2;
    case Isa::kAvx512: return avx512;
  }
  return false;
}

namespace {
constexpr Isa kIsas[] = {Isa::kPortable, Isa::kAvx2, Isa::kAvx512};
}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kPortable: return "portable";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

std::optional<Isa> isa_from_name(const std::string& name) {
  for (Isa isa : kIsas) {
    if (name == isa_name(isa)) return isa;
  }
  return std::nullopt;
}

Isa usable_isa(Isa limit) {
  if (limit >= Isa::kAvx512 && isa_available(Isa::kAvx512)) return Isa::kAvx512;
  if (limit >= Isa::kAvx2 && isa_available(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kPortable;
}

}  // namespace kvcache::kernels
