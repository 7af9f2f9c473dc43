// Runtime CPU feature detection and the ISA level kernels dispatch on. Never assume the user's CPU
// equals the build machine's: ISA-specific code lives in its own translation units and is chosen
// here at run time. MOE_ISA=scalar|avx2|avx512 caps the level (for tests and comparisons).
#pragma once

#include <string_view>

namespace moe {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
};

const CpuFeatures& GetCpuFeatures();
// Best level this CPU supports, capped by MOE_ISA when set (an unknown value is an Error).
Isa ActiveIsa();
std::string_view IsaName(Isa isa);

// bf16 matrix products (AVX512-BF16 vdpbf16ps) can run here: the CPU has AVX512-BF16 and MOE_ISA
// does not cap the level below avx512.
bool HasBf16Matmul();
// Error tagged `tag` that names what is missing, unless HasBf16Matmul().
void CheckBf16Matmul(std::string_view tag);

}  // namespace moe
