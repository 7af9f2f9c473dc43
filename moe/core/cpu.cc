#include "moe/core/cpu.h"

#include <cstdlib>
#include <string>

#include "moe/core/error.h"

namespace moe {

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    c.avx2 = __builtin_cpu_supports("avx2");
    c.fma = __builtin_cpu_supports("fma");
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512dq = __builtin_cpu_supports("avx512dq");
    c.avx512vnni = __builtin_cpu_supports("avx512vnni");
#if defined(__clang__) && __clang_major__ < 15
    c.avx512bf16 = false;
#else
    c.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
    c.f16c = c.avx2;  // every AVX2 CPU we target has F16C
#endif
    return c;
  }();
  return f;
}

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

Isa ActiveIsa() {
  static const Isa isa = [] {
    const CpuFeatures& f = GetCpuFeatures();
    Isa best = Isa::kScalar;
    if (f.avx2 && f.fma) best = Isa::kAvx2;
    if (best == Isa::kAvx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) best = Isa::kAvx512;
    if (const char* env = std::getenv("MOE_ISA"); env && *env) {
      const std::string v = env;
      Isa cap;
      if (v == "scalar") cap = Isa::kScalar;
      else if (v == "avx2") cap = Isa::kAvx2;
      else if (v == "avx512") cap = Isa::kAvx512;
      else Fail("cpu", "MOE_ISA='{}' is not one of scalar, avx2, avx512", v);
      if (static_cast<int>(cap) < static_cast<int>(best)) best = cap;
    }
    return best;
  }();
  return isa;
}

bool HasBf16Matmul() { return GetCpuFeatures().avx512bf16 && ActiveIsa() == Isa::kAvx512; }

void CheckBf16Matmul(std::string_view tag) {
  MOE_CHECK(GetCpuFeatures().avx512bf16, tag,
            "bf16 matrix products need a CPU with AVX512-BF16 (vdpbf16ps); this CPU does not have it");
  MOE_CHECK(ActiveIsa() == Isa::kAvx512, tag,
            "bf16 matrix products need the avx512 ISA level, but it is {} here (MOE_ISA='{}')",
            IsaName(ActiveIsa()), std::getenv("MOE_ISA") ? std::getenv("MOE_ISA") : "");
}

}  // namespace moe
