// AVX2 quantised dot products (maddubs + madd). Compiled with -mavx2 -mfma -mf16c; called only when
// the CPU has them. One block (32 values) per ymm; the float scaling follows quant_ops.h's
// canonical order, so results equal the scalar kernels bit for bit.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "moe/kernels/isa/quant_ops.h"

namespace moe::kernels {
namespace {

inline int HsumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// The canonical tree over 16 block accumulators: lo holds blocks b % 16 < 8, hi the others.
inline float Tree16(__m256 lo, __m256 hi) {
  const __m256 t8 = _mm256_add_ps(lo, hi);
  const __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
  const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
  return _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps(t2, t2, 1)));
}

// f16 -> f32 in a register (exact, equal to FromF16, without the call).
inline float F16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Canonical reduction of the 4 super-block accumulators of the K-quants.
inline float Tree4(const float acc[4]) { return (acc[0] + acc[2]) + (acc[1] + acc[3]); }

inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// ---- Q8_0 and Q4_0: 8 blocks at a time ------------------------------------------------------------
//
// Each block's 8 int32 lane sums are reduced to one int32 per block by a hadd tree, in natural
// order, then scaled. Q8_0 uses the sign trick (|w| * sign(x, w)); x never holds -128.

template <QuantType T>
void Dot32(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row, int m,
           float* y, int64_t ldy) {
  constexpr bool kQ4 = T == QuantType::kQ4_0;
  constexpr int64_t kBytes = kQ4 ? qk::kQ4_0Bytes : qk::kQ8_0Bytes;
  const int64_t nb = a.k / 32, ng = (nb + 7) / 8;
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 acc[kQuantMaxM][2];
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    for (int i = 0; i < m; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      const uint8_t* wg = wr + g * 8 * kBytes;
      const int64_t valid = nb - 8 * g < 8 ? nb - 8 * g : 8;
      alignas(16) uint16_t dh[8] = {};
      __m256i W[8];
      for (int r = 0; r < 8; ++r) {
        if (r >= valid) {
          W[r] = _mm256_setzero_si256();
          continue;
        }
        const uint8_t* blk = wg + r * kBytes;
        std::memcpy(&dh[r], blk, 2);
        if constexpr (kQ4) {
          const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
          W[r] = _mm256_and_si256(
              _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), m4);
        } else {
          W[r] = Load256(blk + 2);
        }
      }
      const __m256 dw = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dh)));
      for (int i = 0; i < m; ++i) {
        const int8_t* q = a.qs(a_row + i) + g * 256;
        __m256i P[8];
        for (int r = 0; r < 8; ++r) {
          const __m256i x = Load256(q + 32 * r);
          if constexpr (kQ4) {
            P[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(W[r], x), ones);
          } else {
            P[r] = _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_abs_epi8(W[r]), _mm256_sign_epi8(x, W[r])), ones);
          }
        }
        const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(P[0], P[1]),
                                             _mm256_hadd_epi32(P[2], P[3]));
        const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(P[4], P[5]),
                                             _mm256_hadd_epi32(P[6], P[7]));
        __m256i R = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                                     _mm256_permute2x128_si256(h0, h1, 0x31));
        if constexpr (kQ4) R = _mm256_sub_epi32(R, _mm256_slli_epi32(Load256(a.sums(a_row + i) + 8 * g), 3));
        const __m256 s = _mm256_mul_ps(dw, _mm256_loadu_ps(a.d(a_row + i) + 8 * g));
        __m256& ac = acc[i][g & 1];
        ac = _mm256_add_ps(ac, _mm256_mul_ps(_mm256_cvtepi32_ps(R), s));
      }
    }
    for (int i = 0; i < m; ++i) y[i * ldy + j] = Tree16(acc[i][0], acc[i][1]);
  }
}

// ---- Q4_K and Q5_K -------------------------------------------------------------------------------

// Moves bit `bit` of every byte of v to bit 4 (other bits garbage above/below are masked by 0x10).
template <int kBit>
inline __m256i HighBit(__m256i v) {
  const __m256i m10 = _mm256_set1_epi8(0x10);
  if constexpr (kBit <= 4) {
    return _mm256_and_si256(_mm256_slli_epi16(v, 4 - kBit), m10);
  } else {
    return _mm256_and_si256(_mm256_srli_epi16(v, kBit - 4), m10);
  }
}

template <int kC>
inline void UnpackQ5Chunk(__m256i qh, __m256i W[8]) {
  W[2 * kC] = _mm256_or_si256(W[2 * kC], HighBit<2 * kC>(qh));
  W[2 * kC + 1] = _mm256_or_si256(W[2 * kC + 1], HighBit<2 * kC + 1>(qh));
}

template <bool kHigh>
void DotQ45K(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
             int m, float* y, int64_t ldy) {
  constexpr int64_t kBytes = kHigh ? qk::kQ5_KBytes : qk::kQ4_KBytes;
  const int64_t nb = a.k / qk::kQK;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    float acc[kQuantMaxM][4] = {};
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = wr + b * kBytes;
      const uint8_t* qs = blk + (kHigh ? 48 : 16);
      __m256i W[8];
      for (int c = 0; c < 4; ++c) {
        const __m256i v = Load256(qs + 32 * c);
        W[2 * c] = _mm256_and_si256(v, m4);
        W[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      }
      if constexpr (kHigh) {
        const __m256i qh = Load256(blk + 16);
        UnpackQ5Chunk<0>(qh, W);
        UnpackQ5Chunk<1>(qh, W);
        UnpackQ5Chunk<2>(qh, W);
        UnpackQ5Chunk<3>(qh, W);
      }
      uint64_t sc64, mn64;
      UnpackScaleMinK4(blk + 4, &sc64, &mn64);
      __m256i S[8];
      for (int s = 0; s < 8; ++s) S[s] = _mm256_set1_epi16(static_cast<int16_t>((sc64 >> (8 * s)) & 0xFF));
      const __m128i m8 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(mn64)));
      const __m256i mins = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_unpacklo_epi16(m8, m8)), _mm_unpackhi_epi16(m8, m8), 1);
      const float d = F16(blk), dmin = F16(blk + 2);
      for (int i = 0; i < m; ++i) {
        const int8_t* q = a.qs(a_row + i) + b * qk::kQK;
        __m256i isum = _mm256_setzero_si256();
        for (int s = 0; s < 8; ++s)
          isum = _mm256_add_epi32(
              isum, _mm256_madd_epi16(_mm256_maddubs_epi16(W[s], Load256(q + 32 * s)), S[s]));
        const int msum = HsumI32(_mm256_madd_epi16(mins, Load256(a.bsums(a_row + i) + 16 * b)));
        const float dx = a.d(a_row + i)[b];
        acc[i][b % 4] = acc[i][b % 4] + ((d * dx) * static_cast<float>(HsumI32(isum)) -
                                         (dmin * dx) * static_cast<float>(msum));
      }
    }
    for (int i = 0; i < m; ++i) y[i * ldy + j] = Tree4(acc[i]);
  }
}

// ---- Q6_K ------------------------------------------------------------------------------------------

void DotQ6K(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row, int m,
            float* y, int64_t ldy) {
  const int64_t nb = a.k / qk::kQK;
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    float acc[kQuantMaxM][4] = {};
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = wr + b * qk::kQ6_KBytes;
      __m256i W[8];
      for (int h = 0; h < 2; ++h) {
        const __m256i l0 = Load256(blk + 64 * h), l1 = Load256(blk + 64 * h + 32);
        const __m256i qh = Load256(blk + 128 + 32 * h);
        W[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                       _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
        W[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                       _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
        W[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                       _mm256_and_si256(qh, m30));
        W[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
      }
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192));
      __m256i S[8];
      for (int v = 0; v < 8; ++v) {
        // int16 scales of sub-blocks 2v (lanes 0..7) and 2v + 1 (lanes 8..15).
        const __m128i pick = _mm_set_epi8(
            static_cast<char>(2 * v + 1), static_cast<char>(2 * v + 1), static_cast<char>(2 * v + 1),
            static_cast<char>(2 * v + 1), static_cast<char>(2 * v + 1), static_cast<char>(2 * v + 1),
            static_cast<char>(2 * v + 1), static_cast<char>(2 * v + 1), static_cast<char>(2 * v),
            static_cast<char>(2 * v), static_cast<char>(2 * v), static_cast<char>(2 * v),
            static_cast<char>(2 * v), static_cast<char>(2 * v), static_cast<char>(2 * v),
            static_cast<char>(2 * v));
        S[v] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
      }
      const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
      const float d = F16(blk + 208);
      for (int i = 0; i < m; ++i) {
        const int8_t* q = a.qs(a_row + i) + b * qk::kQK;
        __m256i isum = _mm256_setzero_si256();
        for (int v = 0; v < 8; ++v)
          isum = _mm256_add_epi32(
              isum, _mm256_madd_epi16(_mm256_maddubs_epi16(W[v], Load256(q + 32 * v)), S[v]));
        const int msum = HsumI32(_mm256_madd_epi16(sc16, Load256(a.bsums(a_row + i) + 16 * b)));
        const float dx = a.d(a_row + i)[b];
        acc[i][b % 4] = acc[i][b % 4] + (d * dx) * static_cast<float>(HsumI32(isum) - 32 * msum);
      }
    }
    for (int i = 0; i < m; ++i) y[i * ldy + j] = Tree4(acc[i]);
  }
}

}  // namespace

const QuantOps& Avx2QuantOps() {
  static const QuantOps ops{
      "avx2",
      Isa::kAvx2,
      {ActLayout::kNatural, ActLayout::kNatural, ActLayout::kNatural, ActLayout::kNatural,
       ActLayout::kNatural},
      {Dot32<QuantType::kQ8_0>, Dot32<QuantType::kQ4_0>, DotQ45K<false>, DotQ45K<true>, DotQ6K},
      QuantizeActsScalar};
  return ops;
}

}  // namespace moe::kernels
