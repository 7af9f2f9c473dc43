// Element types. Compute is f32 (f64 for gradient checks); bf16 is a storage type. The Q* types are
// the block-quantised weight formats of GGUF/ggml (moe/kernels/quant.h): the last dimension of a
// tensor is stored as blocks of DTypeBlockValues values in DTypeBlockBytes bytes each.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace moe {

// kQ8_0x16, kQ4_0x16, kQ4_Kx16, kQ5_Kx16, kQ6_Kx16: Q8_0, Q4_0 and the K-quants regrouped in tiles
// of 16 rows for the decode kernels (moe/kernels/quant_repack.h), in-memory layouts of inference
// weights only (never read from or written to a file); a [rows, cols] matrix of one has the bytes
// of the original, and rows come in multiples of 16.
enum class DType : uint8_t {
  kF32, kF64, kBF16, kF16, kQ8_0, kQ4_0, kQ4_K, kQ5_K, kQ6_K,
  kQ4_0x16, kQ4_Kx16, kQ5_Kx16, kQ6_Kx16, kQ8_0x16
};

std::string_view DTypeName(DType t);
bool IsQuantized(DType t);
// Bytes per element of a plain type; Error for a block-quantised one (use the block sizes).
size_t DTypeSize(DType t);
// Values and bytes per block: 1 and DTypeSize(t) for plain types; 32/34 (Q8_0), 32/18 (Q4_0),
// 256/144 (Q4_K), 256/176 (Q5_K), 256/210 (Q6_K) — the ggml layouts, which moe/kernels/quant.h
// builds on (its tables take their sizes from here).
constexpr int64_t DTypeBlockValues(DType t) {
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ8_0x16:
    case DType::kQ4_0:
    case DType::kQ4_0x16: return 32;
    case DType::kQ4_K:
    case DType::kQ4_Kx16:
    case DType::kQ5_K:
    case DType::kQ5_Kx16:
    case DType::kQ6_K:
    case DType::kQ6_Kx16: return 256;
    default: return 1;
  }
}
constexpr int64_t DTypeBlockBytes(DType t) {
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ8_0x16: return 34;
    case DType::kQ4_0:
    case DType::kQ4_0x16: return 18;
    case DType::kQ4_K:
    case DType::kQ4_Kx16: return 144;
    case DType::kQ5_K:
    case DType::kQ5_Kx16: return 176;
    case DType::kQ6_K:
    case DType::kQ6_Kx16: return 210;
    default: return static_cast<int64_t>(DTypeSize(t));
  }
}

// bfloat16 storage: the top 16 bits of an IEEE f32.
struct bf16 {
  uint16_t bits = 0;
};

// Round to nearest even; NaN stays NaN (quiet).
inline bf16 ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

inline float FromBf16(bf16 h) {
  uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE half -> f32 (exact), f32 -> half (round to nearest even).
float FromF16(uint16_t h);
uint16_t ToF16(float f);

template <typename T>
constexpr DType DTypeOf();
template <>
constexpr DType DTypeOf<float>() { return DType::kF32; }
template <>
constexpr DType DTypeOf<double>() { return DType::kF64; }
template <>
constexpr DType DTypeOf<bf16>() { return DType::kBF16; }

}  // namespace moe
