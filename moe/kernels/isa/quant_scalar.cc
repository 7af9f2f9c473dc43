// Scalar quantised dot products. These define the arithmetic every SIMD table reproduces bit for
// bit (quant_ops.h): exact integer sums per block, then the float scaling in a fixed order.
#include <cstdint>

#include "moe/kernels/isa/quant_ops.h"

namespace moe::kernels {
namespace {

// Canonical reduction of the 4 super-block accumulators of the K-quants.
inline float Tree4(const float acc[4]) { return (acc[0] + acc[2]) + (acc[1] + acc[3]); }

// Canonical reduction of the 16 block accumulators of the 32-value formats.
inline float Tree16(float acc[16]) {
  float t[8];
  for (int i = 0; i < 8; ++i) t[i] = acc[i] + acc[i + 8];
  for (int i = 0; i < 4; ++i) t[i] = t[i] + t[i + 4];
  for (int i = 0; i < 2; ++i) t[i] = t[i] + t[i + 2];
  return t[0] + t[1];
}

// Signed value t (0..31) of a 32-block.
template <QuantType T>
inline int BlockValue(const uint8_t* blk, int t) {
  if constexpr (T == QuantType::kQ8_0) {
    return static_cast<int8_t>(blk[2 + t]);
  } else {
    return (t < 16 ? (blk[2 + t] & 0xF) : (blk[2 + t - 16] >> 4)) - 8;
  }
}

template <QuantType T>
void Dot32(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row, int m,
           float* y, int64_t ldy) {
  constexpr int64_t kBytes = T == QuantType::kQ8_0 ? qk::kQ8_0Bytes : qk::kQ4_0Bytes;
  const int64_t nb = a.k / 32;
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    for (int i = 0; i < m; ++i) {
      const int8_t* q = a.qs(a_row + i);
      const float* dx = a.d(a_row + i);
      float acc[16] = {};
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = wr + b * kBytes;
        int isum = 0;
        for (int t = 0; t < 32; ++t) isum += BlockValue<T>(blk, t) * q[b * 32 + t];
        const float s = LoadF16(blk) * dx[b];
        acc[b % 16] = acc[b % 16] + static_cast<float>(isum) * s;
      }
      y[i * ldy + j] = Tree16(acc);
    }
  }
}

// Q4_K (kHigh = false) and Q5_K (kHigh = true).
template <bool kHigh>
void DotQ45K(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
             int m, float* y, int64_t ldy) {
  constexpr int64_t kBytes = kHigh ? qk::kQ5_KBytes : qk::kQ4_KBytes;
  const int64_t nb = a.k / qk::kQK;
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    for (int i = 0; i < m; ++i) {
      const int8_t* q = a.qs(a_row + i);
      const float* dx = a.d(a_row + i);
      const int16_t* bsums = a.bsums(a_row + i);
      float acc[4] = {};
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = wr + b * kBytes;
        const uint8_t* qh = blk + 16;
        const uint8_t* qs = blk + (kHigh ? 48 : 16);
        const int8_t* qb = q + b * qk::kQK;
        uint64_t sc64, mn64;
        UnpackScaleMinK4(blk + 4, &sc64, &mn64);
        int sc[8], mn[8];
        for (int s = 0; s < 8; ++s) {
          sc[s] = static_cast<int>((sc64 >> (8 * s)) & 0xFF);
          mn[s] = static_cast<int>((mn64 >> (8 * s)) & 0xFF);
        }
        int isum = 0, msum = 0;
        for (int c = 0; c < 4; ++c) {
          int lo = 0, hi = 0;
          for (int l = 0; l < 32; ++l) {
            int wl = qs[32 * c + l] & 0xF, wh = qs[32 * c + l] >> 4;
            if constexpr (kHigh) {
              wl += ((qh[l] >> (2 * c)) & 1) << 4;
              wh += ((qh[l] >> (2 * c + 1)) & 1) << 4;
            }
            lo += wl * qb[64 * c + l];
            hi += wh * qb[64 * c + 32 + l];
          }
          isum += sc[2 * c] * lo + sc[2 * c + 1] * hi;
        }
        for (int s = 0; s < 8; ++s) msum += mn[s] * (bsums[b * 16 + 2 * s] + bsums[b * 16 + 2 * s + 1]);
        const float d = LoadF16(blk), dmin = LoadF16(blk + 2);
        acc[b % 4] = acc[b % 4] + ((d * dx[b]) * static_cast<float>(isum) -
                                   (dmin * dx[b]) * static_cast<float>(msum));
      }
      y[i * ldy + j] = Tree4(acc);
    }
  }
}

void DotQ6K(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row, int m,
            float* y, int64_t ldy) {
  const int64_t nb = a.k / qk::kQK;
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    for (int i = 0; i < m; ++i) {
      const int8_t* q = a.qs(a_row + i);
      const float* dx = a.d(a_row + i);
      const int16_t* bsums = a.bsums(a_row + i);
      float acc[4] = {};
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = wr + b * qk::kQ6_KBytes;
        const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
        const int8_t* qb = q + b * qk::kQK;
        int sub[16] = {};
        for (int h = 0; h < 2; ++h) {
          const uint8_t* ql = blk + 64 * h;
          const uint8_t* qh = blk + 128 + 32 * h;
          for (int l = 0; l < 32; ++l) {
            const int q1 = (ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4);
            const int q2 = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            const int q3 = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            const int q4 = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            const int e = 128 * h + l;
            sub[e / 16] += q1 * qb[e];
            sub[(e + 32) / 16] += q2 * qb[e + 32];
            sub[(e + 64) / 16] += q3 * qb[e + 64];
            sub[(e + 96) / 16] += q4 * qb[e + 96];
          }
        }
        int isum = 0, msum = 0;
        for (int s = 0; s < 16; ++s) {
          isum += sc[s] * sub[s];
          msum += sc[s] * bsums[b * 16 + s];
        }
        const float d = LoadF16(blk + 208);
        acc[b % 4] = acc[b % 4] + (d * dx[b]) * static_cast<float>(isum - 32 * msum);
      }
      y[i * ldy + j] = Tree4(acc);
    }
  }
}

}  // namespace

const QuantOps& ScalarQuantOps() {
  static const QuantOps ops{
      "scalar",
      Isa::kScalar,
      {ActLayout::kNatural, ActLayout::kNatural, ActLayout::kNatural, ActLayout::kNatural,
       ActLayout::kNatural},
      {Dot32<QuantType::kQ8_0>, Dot32<QuantType::kQ4_0>, DotQ45K<false>, DotQ45K<true>, DotQ6K},
      QuantizeActsScalar};
  return ops;
}

}  // namespace moe::kernels
