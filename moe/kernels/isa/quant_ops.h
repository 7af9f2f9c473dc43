// Internals of the quantised products (moe/kernels/quant.h): the ggml block layouts, the 8-bit
// activation formats, and the per-ISA dot-product tables (scalar, AVX2, AVX-512, AVX-512 VNNI)
// chosen at run time like RowOps.
//
// Every table computes the same numbers bit for bit. The integer sums are exact, and the float
// scaling follows one canonical order, which the scalar kernels spell out (quant_scalar.cc):
//   Q8_0, Q4_0 (32-value blocks b):  acc[b % 16] += float(isum_b) * (dw_b * dx_b), then
//       t[i] = acc[i] + acc[i + 8], t[i] += t[i + 4], t[i] += t[i + 2], y = t[0] + t[1]
//   K-quants (256-value super-blocks b):
//       t_b = (dw_b * dx_b) * float(isum_b) - (dmin_b * dx_b) * float(msum_b)   (Q4_K, Q5_K)
//       t_b = (dw_b * dx_b) * float(isum_b - 32 * msum_b)                        (Q6_K)
//       acc[b % 4] += t_b, then y = (acc[0] + acc[2]) + (acc[1] + acc[3])
// with no fused multiply-adds (these files build with -ffp-contract=off). The interleaved
// accumulators let SIMD code reduce several blocks (or several rows) with one transposing add tree.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "moe/core/cpu.h"
#include "moe/core/dtype.h"
#include "moe/kernels/isa/prefetch.h"
#include "moe/kernels/quant.h"

namespace moe::kernels {

// ---- ggml block layouts (byte offsets; blocks are packed back to back, 2-byte aligned at best) ----
//
// Q8_0 (34 B / 32 values):  f16 d @0, int8 qs[32] @2.                       v[i] = qs[i] * d
// Q4_0 (18 B / 32 values):  f16 d @0, u8 qs[16] @2.   v[i] = ((qs[i] & 15) - 8) * d,
//                                                     v[i + 16] = ((qs[i] >> 4) - 8) * d   (i < 16)
// Q4_K (144 B / 256): f16 d @0, f16 dmin @2, u8 scales[12] @4, u8 qs[128] @16.
//   Sub-block s (32 values) has a 6-bit scale sc_s and min m_s packed in scales (ScaleMinK4).
//   Chunk c (64 values, c < 4) uses qs[32c, 32c + 32): value 64c + l (l < 32) is the low nibble of
//   qs[32c + l] in sub-block 2c, value 64c + 32 + l its high nibble in sub-block 2c + 1.
//   v = d * sc_s * q - dmin * m_s.
// Q5_K (176 B / 256): f16 d @0, f16 dmin @2, scales[12] @4, u8 qh[32] @16, u8 qs[128] @48.
//   As Q4_K plus a fifth bit: value 64c + l takes bit 2c of qh[l], value 64c + 32 + l bit 2c + 1.
// Q6_K (210 B / 256): u8 ql[128] @0, u8 qh[64] @128, int8 scales[16] @192, f16 d @208.
//   Half h (128 values) uses ql[64h, 64h + 64) and qh[32h, 32h + 32); for l < 32 and j < 4:
//   value 128h + 32j + l = (j even ? ql[64h + l + 32(j/2)] & 15 : ql[64h + l + 32(j/2)] >> 4)
//                         | ((qh[32h + l] >> 2j) & 3) << 4, minus 32; scale scales[(128h+32j+l)/16].
//   v = d * sc * (q - 32).
namespace qk {
inline constexpr int64_t kQ8_0Bytes = DTypeBlockBytes(DType::kQ8_0),
                         kQ4_0Bytes = DTypeBlockBytes(DType::kQ4_0),
                         kQ4_KBytes = DTypeBlockBytes(DType::kQ4_K),
                         kQ5_KBytes = DTypeBlockBytes(DType::kQ5_K),
                         kQ6_KBytes = DTypeBlockBytes(DType::kQ6_K);
static_assert(kQ8_0Bytes == 34 && kQ4_0Bytes == 18 && kQ4_KBytes == 144 && kQ5_KBytes == 176 &&
              kQ6_KBytes == 210);  // the byte offsets below assume ggml's layouts
inline constexpr int kQK = 256;  // values per K-quant super-block
}  // namespace qk

inline float LoadF16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return FromF16(h);
}

// 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of Q4_K / Q5_K.
inline void ScaleMinK4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// All eight at once: byte s of *sc is sc_s, byte s of *m is m_s (little-endian).
inline void UnpackScaleMinK4(const uint8_t* q, uint64_t* sc, uint64_t* m) {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, q, 4);
  std::memcpy(&u1, q + 4, 4);
  std::memcpy(&u2, q + 8, 4);
  const uint32_t sc_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
  const uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | (((u0 >> 6) & 0x03030303u) << 4);
  const uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | (((u1 >> 6) & 0x03030303u) << 4);
  *sc = sc_lo | static_cast<uint64_t>(sc_hi) << 32;
  *m = m_lo | static_cast<uint64_t>(m_hi) << 32;
}

// ---- 8-bit activation formats --------------------------------------------------------------------
//
// Each row of x is quantised symmetrically to int8 in [-127, 127] (never -128, so the AVX2 sign
// trick is exact) with one f32 scale per block: dx = amax / 127, q = round_half_even(x * 127/amax).
//   32-value blocks (for Q8_0 / Q4_0 weights): qs, d per block and the int32 sum of each block's qs
//     (the offset correction of Q4_0's q - 8 and VNNI's unsigned Q8_0). Rows are zero-padded to a
//     multiple of 512 values (16 blocks), the group the SIMD kernels reduce at once.
//   256-value blocks (ggml's Q8_K, for the K-quants): qs, d per block and int16 sums of every 16 qs;
//     the d's are also stored transposed per group of 8 rows ([blocks][8]), so a kernel working on
//     several rows loads the scales of one block for all of them at once.
// The order of qs inside a block may be permuted to match how a kernel unpacks its weights:
enum class ActLayout : uint8_t {
  kNatural,
  // Per group of 4 32-blocks: values [0,16) of the 4 blocks, then values [16,32) of the 4 blocks
  // (the low and high nibbles of 64 consecutive Q4_0 qs bytes once the d's are squeezed out).
  kQuads,
  // Per 128 values: [0,32) [64,96) [32,64) [96,128) (low then high nibbles of 64 Q4_K qs bytes).
  kNibblePairs,
};

struct QuantActs {
  int64_t k = 0;          // values per row
  int64_t k_padded = 0;   // qs bytes per row
  int64_t blocks = 0;     // scales per row (k_padded / 32, or k / 256)
  int64_t row_bytes = 0;  // bytes between rows (a multiple of 64)
  int block = 32;         // 32 or 256
  ActLayout layout = ActLayout::kNatural;
  uint8_t* base = nullptr;
  float* dt = nullptr;    // 256-value blocks: [ceil(m / 8)][blocks][8], zero for missing rows

  const int8_t* qs(int64_t i) const { return reinterpret_cast<const int8_t*>(base + i * row_bytes); }
  const float* d(int64_t i) const {
    return reinterpret_cast<const float*>(base + i * row_bytes + k_padded);
  }
  // 32-value blocks: the sum of each block's qs.
  const int32_t* sums(int64_t i) const {
    return reinterpret_cast<const int32_t*>(base + i * row_bytes + k_padded + 4 * blocks);
  }
  // 256-value blocks: the sum of every 16 qs (16 per block).
  const int16_t* bsums(int64_t i) const {
    return reinterpret_cast<const int16_t*>(base + i * row_bytes + k_padded + 4 * blocks);
  }
  // 256-value blocks: d of block b for rows 8g..8g+7 at [8 * b, 8 * b + 8).
  const float* d8(int64_t g) const { return dt + g * blocks * 8; }
};

// Owns the buffer of a QuantActs.
class QuantActsBuffer {
 public:
  QuantActsBuffer() = default;
  ~QuantActsBuffer();
  QuantActsBuffer(const QuantActsBuffer&) = delete;
  QuantActsBuffer& operator=(const QuantActsBuffer&) = delete;
  // Shapes the buffer for m rows of k values (k a multiple of block) and returns its view.
  QuantActs& Reset(int64_t m, int64_t k, int block, ActLayout layout);
  QuantActs& acts() { return acts_; }

 private:
  QuantActs acts_;
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

// Activation blocks whose largest |x| is below this quantise to 0 (their 127 / amax would
// overflow f32).
inline constexpr float kMinActAmax = 1e-30f;

// Memory position of the 16 values starting at e (a multiple of 16) of a row under a layout.
inline int64_t ActChunkPos(ActLayout layout, int64_t e) {
  switch (layout) {
    case ActLayout::kNatural: return e;
    case ActLayout::kQuads: {
      const int64_t g = e / 128, r = (e / 32) % 4, t = e % 32;
      return g * 128 + (t < 16 ? 0 : 64) + r * 16;
    }
    case ActLayout::kNibblePairs: {
      static constexpr int64_t kChunk[4] = {0, 2, 1, 3};
      return e / 128 * 128 + kChunk[(e / 32) % 4] * 32 + e % 32;
    }
  }
  return e;
}

// Quantises rows [row_begin, row_end) of x [*, k] into a (shaped by Reset; Reset zeroes dt). Every
// table's version writes the same bytes (for its layout).
using QuantizeActsFn = void (*)(const float* x, int64_t row_begin, int64_t row_end,
                                const QuantActs& a);
void QuantizeActsScalar(const float* x, int64_t row_begin, int64_t row_end, const QuantActs& a);

// ---- per-ISA tables ------------------------------------------------------------------------------

// y[i * ldy + j] = (weight row j) . (activation row a_row + i) for j < rows, i < m (1 <= m <= 8);
// weight row j starts at w + j * w_row_bytes; a_row is a multiple of 8.
using QuantDotFn = void (*)(const uint8_t* w, int64_t w_row_bytes, int64_t rows,
                            const QuantActs& a, int64_t a_row, int m, float* y, int64_t ldy);

inline constexpr int kQuantMaxM = 8;

struct QuantOps {
  std::string_view name;  // "scalar", "avx2", "avx512", "avx512vnni"
  Isa isa;
  ActLayout layout[kNumQuantTypes];
  QuantDotFn dot[kNumQuantTypes];
  QuantizeActsFn quantize_acts;
};

const QuantOps& ScalarQuantOps();
const QuantOps& Avx2QuantOps();
const QuantOps& Avx512QuantOps();      // AVX-512 F/BW/VL/DQ: maddubs + madd
const QuantOps& Avx512VnniQuantOps();  // + AVX512-VNNI: vpdpbusd / vpdpwssd
// Every table this CPU supports within ActiveIsa() (MOE_ISA), scalar first.
std::vector<const QuantOps*> AvailableQuantOps();
// The last of AvailableQuantOps().
const QuantOps& ActiveQuantOps();

// y[i * ldy + j] = (weight row j) . (activation row i) for j in [j_begin, j_end), i < m, with the
// activations already quantised (acts shaped for t's block size and ops' layout): the serial body
// of QuantMatMul, for callers that split work over several matrices themselves.
void QuantDotRows(const QuantOps& ops, QuantType t, const uint8_t* w, int64_t row_bytes,
                  int64_t j_begin, int64_t j_end, const QuantActs& acts, int64_t m, float* y,
                  int64_t ldy);

// QuantMatMul with a given table (tests and benchmarks compare tables with it).
void QuantMatMulWith(const QuantOps& ops, QuantType t, const void* w, int64_t n, int64_t k,
                     const float* x, int64_t m, float* y, Context& ctx);

}  // namespace moe::kernels
