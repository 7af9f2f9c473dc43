#include "moe/core/dtype.h"

#include <cmath>

#include "moe/core/error.h"

namespace moe {

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF64: return "F64";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kQ8_0: return "Q8_0";
    case DType::kQ4_0: return "Q4_0";
    case DType::kQ4_K: return "Q4_K";
    case DType::kQ5_K: return "Q5_K";
    case DType::kQ6_K: return "Q6_K";
    case DType::kQ4_0x16: return "Q4_0x16";
    case DType::kQ8_0x16: return "Q8_0x16";
    case DType::kQ4_Kx16: return "Q4_Kx16";
    case DType::kQ5_Kx16: return "Q5_Kx16";
    case DType::kQ6_Kx16: return "Q6_Kx16";
  }
  return "?";
}

bool IsQuantized(DType t) { return DTypeBlockValues(t) > 1; }

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF64: return 8;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    default: break;
  }
  Fail("dtype", "{} is block-quantised: it has no per-element size", DTypeName(t));
}

float FromF16(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(man), -24);  // zero or subnormal
    if (sign) f = -f;
    return f;
  }
  uint32_t u;
  if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 112u) << 23) | (man << 13);
  }
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t ToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // overflow -> inf (rounds past 65504)
  if (a < 0x38800000u) {                        // subnormal half or zero
    // value = a_float; half subnormal unit = 2^-24
    const float af = std::fabs(f);
    const float scaled = af * 16777216.0f;  // / 2^-24
    const float r = std::nearbyint(scaled);  // round-half-even in default mode
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t exp = (a >> 23) - 112u;
  uint32_t man = a & 0x7fffffu;
  uint32_t h = (exp << 10) | (man >> 13);
  const uint32_t rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return sign | static_cast<uint16_t>(h);
}

}  // namespace moe
