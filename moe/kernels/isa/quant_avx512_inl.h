// AVX-512 quantised dot products, templated on kVnni: included by quant_avx512.cc (F/BW/VL/DQ:
// maddubs + madd) and quant_avx512vnni.cc (+ AVX512-VNNI: vpdpbusd / vpdpwssd). Everything here has
// internal linkage, so the two copies, built with different -m flags, never mix at link time.
//
// Weight rows are read once per call of a kernel, for up to 8 activation rows: a block is unpacked
// into registers once and dotted with every row. Integer sums are exact; the float scaling
// follows quant_ops.h's canonical order, so results equal the scalar kernels bit for bit.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "moe/kernels/isa/quant_ops.h"

namespace moe::kernels {
namespace {

// ---- helpers ---------------------------------------------------------------------------------

// acc + sum over each 4 bytes of u (unsigned) * s (signed), per int32 lane.
template <bool kVnni>
inline __m512i DotU8I8(__m512i acc, __m512i u, __m512i s) {
  if constexpr (kVnni) {
    return _mm512_dpbusd_epi32(acc, u, s);
  } else {
    return _mm512_add_epi32(acc,
                            _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
  }
}

// acc + pairs * scales (int16 x int16 summed over pairs into int32 lanes).
template <bool kVnni>
inline __m512i DotI16(__m512i acc, __m512i pairs, __m512i scales) {
  if constexpr (kVnni) {
    return _mm512_dpwssd_epi32(acc, pairs, scales);
  } else {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, scales));
  }
}

inline int HsumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

inline int HsumI32(__m512i v) {
  return HsumI32(_mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)));
}

// The canonical tree over 16 block accumulators (quant_ops.h).
inline float Tree16(__m512 acc) {
  const __m256 t8 = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
  const __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
  const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
  return _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps(t2, t2, 1)));
}

inline __mmask64 ByteMask(int64_t n) {
  return n >= 64 ? ~__mmask64{0} : n <= 0 ? __mmask64{0} : (__mmask64{1} << n) - 1;
}

// Index vectors, built once.
struct Avx512Consts {
  __m512i quads;       // vpermt2w: the 4 x 16 qs bytes of 4 Q4_0 blocks out of 72 bytes
  __m512i quads_nat;   // lane 4r + g (block 4g + r) -> natural block order
  __m512i pairs_nat;   // Q8_0 reduction order -> natural block order
  __m512i gather18;    // byte offsets of 16 Q4_0 blocks
  __m512i gather34;    // of 16 Q8_0 blocks
  __m512i k4_scale[4];  // Q4_K/Q5_K: sub-block scale of each int16 pair of nibble vector v
  __m256i k4_mins;     // [m0, m0, m1, m1, ...] from [sc0..7, m0..7]
  __m512i k5_bits[4];  // Q5_K: the qh bit of each byte of nibble vector v
  __m512i k6_scale[4];  // Q6_K: sub-block scale of each int16 pair of vector v
  __m512i k6_shl, k6_shr;
  Avx512Consts() {
    alignas(64) int16_t w[32];
    alignas(64) int32_t d[16];
    for (int r = 0; r < 4; ++r)
      for (int t = 0; t < 8; ++t) w[8 * r + t] = static_cast<int16_t>(r < 3 ? 9 * r + 1 + t : 56 + t);
    quads = _mm512_load_si512(w);
    for (int b = 0; b < 16; ++b) d[b] = 4 * (b % 4) + b / 4;
    quads_nat = _mm512_load_si512(d);
    for (int b = 0; b < 16; ++b) d[b] = 8 * ((b / 2) / 4) + 4 * (b % 2) + (b / 2) % 4;
    pairs_nat = _mm512_load_si512(d);
    for (int b = 0; b < 16; ++b) d[b] = 18 * b;
    gather18 = _mm512_load_si512(d);
    for (int b = 0; b < 16; ++b) d[b] = 34 * b;
    gather34 = _mm512_load_si512(d);
    static constexpr int kSub[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    for (int v = 0; v < 4; ++v) {
      for (int p = 0; p < 32; ++p) w[p] = static_cast<int16_t>(kSub[v][p / 16]);
      k4_scale[v] = _mm512_load_si512(w);
      for (int p = 0; p < 32; ++p) w[p] = static_cast<int16_t>(4 * v + p / 8);
      k6_scale[v] = _mm512_load_si512(w);
    }
    for (int p = 0; p < 16; ++p) w[p] = static_cast<int16_t>(8 + p / 2);
    k4_mins = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
    static constexpr int kBit[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    alignas(64) uint8_t bytes[64];
    for (int v = 0; v < 4; ++v) {
      for (int p = 0; p < 64; ++p) bytes[p] = static_cast<uint8_t>(1u << kBit[v][p / 32]);
      k5_bits[v] = _mm512_load_si512(bytes);
    }
    for (int p = 0; p < 32; ++p) w[p] = static_cast<int16_t>(p < 16 ? 4 : 2);
    k6_shl = _mm512_load_si512(w);
    for (int p = 0; p < 32; ++p) w[p] = static_cast<int16_t>(p < 16 ? 0 : 2);
    k6_shr = _mm512_load_si512(w);
  }
};

const Avx512Consts& Consts() {
  static const Avx512Consts c;
  return c;
}

// ---- Q8_0 and Q4_0 -------------------------------------------------------------------------
//
// 16 blocks at a time. Q4_0: 4 blocks (72 bytes) -> one vpermt2w puts their 4 x 16 qs bytes in the
// 4 lanes of a zmm; the low nibbles are values [0,16) of the 4 blocks and the high nibbles values
// [16,32), which the kQuads activation layout matches. Q8_0: 2 blocks per zmm, activations in
// natural order; VNNI takes w + 128 as unsigned (corrected by 128 * block sum of x), otherwise the
// sign moves to x (|w| * sign(x, w)). Per-lane partial sums are then reduced to one int32 per block
// by a transposing unpack/add tree, put in natural order and scaled.

template <bool kVnni, QuantType T, int M>
void Dot32M(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
            float* y, int64_t ldy) {
  constexpr bool kQ4 = T == QuantType::kQ4_0;
  constexpr int64_t kBytes = kQ4 ? qk::kQ4_0Bytes : qk::kQ8_0Bytes;
  const Avx512Consts& c = Consts();
  const int64_t nb = a.k / 32, ng = (nb + 15) / 16;
  const __m512i m4 = _mm512_set1_epi8(0x0F), zero = _mm512_setzero_si512();
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    __m512 acc[M];
    for (int i = 0; i < M; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      const uint8_t* wg = wr + g * 16 * kBytes;
      const int64_t valid = nb - 16 * g < 16 ? nb - 16 * g : 16;
      const __mmask16 vmask = static_cast<__mmask16>((1u << valid) - 1u);
      const __m512i dwi = valid == 16
          ? _mm512_i32gather_epi32(kQ4 ? c.gather18 : c.gather34, wg, 1)
          : _mm512_mask_i32gather_epi32(zero, vmask, kQ4 ? c.gather18 : c.gather34, wg, 1);
      const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dwi));
      __m512i W[8];
      [[maybe_unused]] __m512i Wabs[8];
      [[maybe_unused]] __mmask64 neg[8];
      if constexpr (kQ4) {
        for (int qd = 0; qd < 4; ++qd) {
          const int64_t bq = valid - 4 * qd;
          const uint8_t* p = wg + 4 * qd * kBytes;
          __m512i lo, hi;
          if (bq >= 4) {
            lo = _mm512_loadu_si512(p);
            hi = _mm512_loadu_si512(p + 8);
          } else if (bq > 0) {
            lo = _mm512_maskz_loadu_epi8(ByteMask(18 * bq), p);
            hi = _mm512_maskz_loadu_epi8(ByteMask(18 * bq - 8), p + 8);
          } else {
            lo = hi = zero;
          }
          const __m512i v = _mm512_permutex2var_epi16(lo, c.quads, hi);
          W[2 * qd] = _mm512_and_si512(v, m4);
          W[2 * qd + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
      } else {
        for (int p = 0; p < 8; ++p) {
          const int64_t bp = valid - 2 * p;
          const uint8_t* q = wg + 2 * p * kBytes + 2;
          __m512i v = zero;
          if (bp >= 2) {
            v = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q))),
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + kBytes)), 1);
          } else if (bp == 1) {
            v = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
          }
          if constexpr (kVnni) {
            W[p] = _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
          } else {
            W[p] = v;
            Wabs[p] = _mm512_abs_epi8(v);
            neg[p] = _mm512_movepi8_mask(v);
          }
        }
      }
      for (int i = 0; i < M; ++i) {
        const int8_t* q = a.qs(a_row + i) + g * 512;
        __m512i R;
        if constexpr (kQ4) {
          __m512i P[4];
          for (int qd = 0; qd < 4; ++qd) {
            const __m512i alo = _mm512_loadu_si512(q + 128 * qd);
            const __m512i ahi = _mm512_loadu_si512(q + 128 * qd + 64);
            if constexpr (kVnni) {
              P[qd] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, W[2 * qd], alo),
                                          W[2 * qd + 1], ahi);
            } else {
              P[qd] = _mm512_madd_epi16(_mm512_add_epi16(_mm512_maddubs_epi16(W[2 * qd], alo),
                                                         _mm512_maddubs_epi16(W[2 * qd + 1], ahi)),
                                        _mm512_set1_epi16(1));
            }
          }
          const __m512i u0 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[0], P[1]),
                                              _mm512_unpackhi_epi32(P[0], P[1]));
          const __m512i u1 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[2], P[3]),
                                              _mm512_unpackhi_epi32(P[2], P[3]));
          R = _mm512_add_epi32(_mm512_unpacklo_epi64(u0, u1), _mm512_unpackhi_epi64(u0, u1));
          R = _mm512_permutexvar_epi32(c.quads_nat, R);
        } else {
          __m512i P[8];
          for (int p = 0; p < 8; ++p) {
            const __m512i x = _mm512_loadu_si512(q + 64 * p);
            if constexpr (kVnni) {
              P[p] = _mm512_dpbusd_epi32(zero, W[p], x);
            } else {
              const __m512i xs = _mm512_mask_sub_epi8(x, neg[p], zero, x);
              P[p] = _mm512_madd_epi16(_mm512_maddubs_epi16(Wabs[p], xs), _mm512_set1_epi16(1));
            }
          }
          __m512i U[4];
          for (int u = 0; u < 4; ++u)
            U[u] = _mm512_add_epi32(_mm512_unpacklo_epi32(P[2 * u], P[2 * u + 1]),
                                    _mm512_unpackhi_epi32(P[2 * u], P[2 * u + 1]));
          const __m512i v0 =
              _mm512_add_epi32(_mm512_unpacklo_epi64(U[0], U[1]), _mm512_unpackhi_epi64(U[0], U[1]));
          const __m512i v1 =
              _mm512_add_epi32(_mm512_unpacklo_epi64(U[2], U[3]), _mm512_unpackhi_epi64(U[2], U[3]));
          R = _mm512_add_epi32(_mm512_shuffle_i64x2(v0, v1, _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_i64x2(v0, v1, _MM_SHUFFLE(3, 1, 3, 1)));
          R = _mm512_permutexvar_epi32(c.pairs_nat, R);
        }
        // Offset corrections: Q4_0 stores q + 8; VNNI's Q8_0 used w + 128.
        if constexpr (kQ4 || kVnni) {
          const __m512i sums = _mm512_loadu_si512(a.sums(a_row + i) + 16 * g);
          R = _mm512_sub_epi32(R, _mm512_slli_epi32(sums, kQ4 ? 3 : 7));
        }
        const __m512 s = _mm512_mul_ps(dw, _mm512_loadu_ps(a.d(a_row + i) + 16 * g));
        acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(_mm512_cvtepi32_ps(R), s));
      }
    }
    for (int i = 0; i < M; ++i) y[i * ldy + j] = Tree16(acc[i]);
  }
}

// ---- Q4_K and Q5_K ---------------------------------------------------------------------------
//
// 64 qs bytes per zmm: the low nibbles are values [0,32) and [64,96) of a 128-value half, the high
// nibbles [32,64) and [96,128) (kNibblePairs activation layout). maddubs gives int16 pair sums,
// which vpdpwssd (or madd + add) scales by the 6-bit sub-block scale into int32 lanes.

template <bool kVnni, bool kHigh, int M>
void DotQ45KM(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
              float* y, int64_t ldy) {
  constexpr int64_t kBytes = kHigh ? qk::kQ5_KBytes : qk::kQ4_KBytes;
  const Avx512Consts& c = Consts();
  const int64_t nb = a.k / qk::kQK;
  const __m512i m4 = _mm512_set1_epi8(0x0F), sixteen = _mm512_set1_epi8(16);
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    float acc[M] = {};
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = wr + b * kBytes;
      const uint8_t* qs = blk + (kHigh ? 48 : 16);
      const __m512i q0 = _mm512_loadu_si512(qs), q1 = _mm512_loadu_si512(qs + 64);
      __m512i W[4] = {_mm512_and_si512(q0, m4), _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4),
                      _mm512_and_si512(q1, m4), _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4)};
      if constexpr (kHigh) {
        const __m512i qh =
            _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16)));
        for (int v = 0; v < 4; ++v)
          W[v] = _mm512_mask_add_epi8(W[v], _mm512_test_epi8_mask(qh, c.k5_bits[v]), W[v], sixteen);
      }
      uint8_t sc[8], mn[8];
      UnpackScaleMinK4(blk + 4, sc, mn);
      uint64_t sc64, mn64;
      std::memcpy(&sc64, sc, 8);
      std::memcpy(&mn64, mn, 8);
      const __m256i sm = _mm256_cvtepu8_epi16(
          _mm_set_epi64x(static_cast<long long>(mn64), static_cast<long long>(sc64)));
      const __m512i sm512 = _mm512_zextsi256_si512(sm);
      __m512i S[4];
      for (int v = 0; v < 4; ++v) S[v] = _mm512_permutexvar_epi16(c.k4_scale[v], sm512);
      const __m256i mins = _mm256_permutexvar_epi16(c.k4_mins, sm);
      const float d = LoadF16(blk), dmin = LoadF16(blk + 2);
      for (int i = 0; i < M; ++i) {
        const int8_t* q = a.qs(a_row + i) + b * qk::kQK;
        __m512i isum = _mm512_setzero_si512();
        for (int v = 0; v < 4; ++v)
          isum = DotI16<kVnni>(isum, _mm512_maddubs_epi16(W[v], _mm512_loadu_si512(q + 64 * v)),
                               S[v]);
        const __m256i bs =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums(a_row + i) + 16 * b));
        const int msum = HsumI32(_mm256_madd_epi16(mins, bs));
        const float dx = a.d(a_row + i)[b];
        acc[i] = acc[i] + ((d * dx) * static_cast<float>(HsumI32(isum)) -
                           (dmin * dx) * static_cast<float>(msum));
      }
    }
    for (int i = 0; i < M; ++i) y[i * ldy + j] = acc[i];
  }
}

// ---- Q6_K ------------------------------------------------------------------------------------
//
// Per 128-value half, 64 ql bytes give values [0,64) (low nibbles) and [64,128) (high nibbles) in
// natural order; the two high bits come from qh shifted per 256-bit half. q is unsigned (0..63):
// isum - 32 * (scales . 16-value sums of x) removes the offset.

template <bool kVnni, int M>
void DotQ6KM(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
             float* y, int64_t ldy) {
  const Avx512Consts& c = Consts();
  const int64_t nb = a.k / qk::kQK;
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    float acc[M] = {};
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = wr + b * qk::kQ6_KBytes;
      __m512i W[4];
      for (int h = 0; h < 2; ++h) {
        const __m512i l = _mm512_loadu_si512(blk + 64 * h);
        const __m512i qh = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h)));
        W[2 * h] = _mm512_or_si512(_mm512_and_si512(l, m4),
                                   _mm512_and_si512(_mm512_sllv_epi16(qh, c.k6_shl), m30));
        W[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                       _mm512_and_si512(_mm512_srlv_epi16(qh, c.k6_shr), m30));
      }
      const __m256i sc =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
      const __m512i sc512 = _mm512_zextsi256_si512(sc);
      __m512i S[4];
      for (int v = 0; v < 4; ++v) S[v] = _mm512_permutexvar_epi16(c.k6_scale[v], sc512);
      const float d = LoadF16(blk + 208);
      for (int i = 0; i < M; ++i) {
        const int8_t* q = a.qs(a_row + i) + b * qk::kQK;
        __m512i isum = _mm512_setzero_si512();
        for (int v = 0; v < 4; ++v)
          isum = DotI16<kVnni>(isum, _mm512_maddubs_epi16(W[v], _mm512_loadu_si512(q + 64 * v)),
                               S[v]);
        const __m256i bs =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums(a_row + i) + 16 * b));
        const int msum = HsumI32(_mm256_madd_epi16(sc, bs));
        const float dx = a.d(a_row + i)[b];
        acc[i] = acc[i] + (d * dx) * static_cast<float>(HsumI32(isum) - 32 * msum);
      }
    }
    for (int i = 0; i < M; ++i) y[i * ldy + j] = acc[i];
  }
}

// ---- dispatch on m -------------------------------------------------------------------------

#define MOE_QUANT_DISPATCH_M(KERNEL, ...)                                      \
  switch (m) {                                                                 \
    case 1: return KERNEL<__VA_ARGS__, 1>(w, wrb, rows, a, a_row, y, ldy);     \
    case 2: return KERNEL<__VA_ARGS__, 2>(w, wrb, rows, a, a_row, y, ldy);     \
    case 3: return KERNEL<__VA_ARGS__, 3>(w, wrb, rows, a, a_row, y, ldy);     \
    case 4: return KERNEL<__VA_ARGS__, 4>(w, wrb, rows, a, a_row, y, ldy);     \
    case 5: return KERNEL<__VA_ARGS__, 5>(w, wrb, rows, a, a_row, y, ldy);     \
    case 6: return KERNEL<__VA_ARGS__, 6>(w, wrb, rows, a, a_row, y, ldy);     \
    case 7: return KERNEL<__VA_ARGS__, 7>(w, wrb, rows, a, a_row, y, ldy);     \
    default: return KERNEL<__VA_ARGS__, 8>(w, wrb, rows, a, a_row, y, ldy);    \
  }

template <bool kVnni, QuantType T>
void Dot32(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row, int m,
           float* y, int64_t ldy) {
  MOE_QUANT_DISPATCH_M(Dot32M, kVnni, T)
}

template <bool kVnni, bool kHigh>
void DotQ45K(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
             int m, float* y, int64_t ldy) {
  MOE_QUANT_DISPATCH_M(DotQ45KM, kVnni, kHigh)
}

template <bool kVnni>
void DotQ6K(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row, int m,
            float* y, int64_t ldy) {
  MOE_QUANT_DISPATCH_M(DotQ6KM, kVnni)
}

#undef MOE_QUANT_DISPATCH_M

template <bool kVnni>
QuantOps MakeAvx512QuantOps(std::string_view name) {
  return QuantOps{name,
                  Isa::kAvx512,
                  {ActLayout::kNatural, ActLayout::kQuads, ActLayout::kNibblePairs,
                   ActLayout::kNibblePairs, ActLayout::kNatural},
                  {Dot32<kVnni, QuantType::kQ8_0>, Dot32<kVnni, QuantType::kQ4_0>,
                   DotQ45K<kVnni, false>, DotQ45K<kVnni, true>, DotQ6K<kVnni>}};
}

}  // namespace
}  // namespace moe::kernels
