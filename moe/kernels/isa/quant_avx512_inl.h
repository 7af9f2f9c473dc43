// AVX-512 quantised dot products, templated on kVnni: included by quant_avx512.cc (F/BW/VL/DQ:
// maddubs + madd) and quant_avx512vnni.cc (+ AVX512-VNNI: vpdpbusd / vpdpwssd). Everything here has
// internal linkage, so the two copies, built with different -m flags, never mix at link time.
//
// A weight row is read once per kernel call for up to 8 activation rows: each block is unpacked
// into registers once and dotted with every row. Integer sums are exact; the float scaling follows
// quant_ops.h's canonical order, so results equal the scalar kernels bit for bit.
//
// The kernels are bound by dependency chains more than by instruction count (a block's integer
// dot, its reduction and its scaling form one long chain), so independent blocks are put side by
// side in program order: two 16-block groups at a time for Q8_0/Q4_0 with one activation row, four
// (eight for Q6_K) super-blocks reduced together with one row, and the rows reduced together with
// several rows.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "moe/kernels/isa/quant_ops.h"

namespace moe::kernels {
namespace {

#define MOE_INLINE inline __attribute__((always_inline))
#define MOE_LAMBDA_INLINE __attribute__((always_inline))

// ---- helpers -------------------------------------------------------------------------------------

// f16 -> f32 in a register (exact, equal to FromF16, without the call).
MOE_INLINE float F16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

MOE_INLINE uint16_t U16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// acc + pairs * scales (int16 x int16 summed over pairs into int32 lanes).
template <bool kVnni>
MOE_INLINE __m512i DotI16(__m512i acc, __m512i pairs, __m512i scales) {
  if constexpr (kVnni) {
    return _mm512_dpwssd_epi32(acc, pairs, scales);
  } else {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, scales));
  }
}

MOE_INLINE __m256i Half(__m512i v) {
  return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

// Lane r = the sum of the 8 lanes of a[r] (exact; any add order gives the same integer).
MOE_INLINE __m256i Reduce8(__m256i a0, __m256i a1, __m256i a2, __m256i a3, __m256i a4, __m256i a5,
                           __m256i a6, __m256i a7) {
  // Per 128-bit half: pairs, then quads of vectors; then the halves are added.
  const __m256i t01 = _mm256_add_epi32(_mm256_unpacklo_epi32(a0, a1), _mm256_unpackhi_epi32(a0, a1));
  const __m256i t23 = _mm256_add_epi32(_mm256_unpacklo_epi32(a2, a3), _mm256_unpackhi_epi32(a2, a3));
  const __m256i t45 = _mm256_add_epi32(_mm256_unpacklo_epi32(a4, a5), _mm256_unpackhi_epi32(a4, a5));
  const __m256i t67 = _mm256_add_epi32(_mm256_unpacklo_epi32(a6, a7), _mm256_unpackhi_epi32(a6, a7));
  const __m256i u0 = _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
  const __m256i u1 = _mm256_add_epi32(_mm256_unpacklo_epi64(t45, t67), _mm256_unpackhi_epi64(t45, t67));
  return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                          _mm256_permute2x128_si256(u0, u1, 0x31));
}

MOE_INLINE __m256i Reduce8(const __m256i a[8]) {
  return Reduce8(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
}

// The canonical trees (quant_ops.h).
MOE_INLINE float Tree16(__m512 acc) {
  const __m256 t8 = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
  const __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
  const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
  return _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps(t2, t2, 1)));
}

MOE_INLINE float Tree4(__m128 acc) {  // (a0 + a2) + (a1 + a3)
  const __m128 t2 = _mm_add_ps(acc, _mm_movehl_ps(acc, acc));
  return _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps(t2, t2, 1)));
}

// Per lane (row): (a0 + a2) + (a1 + a3).
MOE_INLINE __m256 Tree4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  return _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
}

MOE_INLINE __mmask64 ByteMask(int64_t n) {
  return n >= 64 ? ~__mmask64{0} : n <= 0 ? __mmask64{0} : (__mmask64{1} << n) - 1;
}

// Index and mask vectors, built once.
struct Avx512Consts {
  __m512i quads;        // vpermt2w: the 4 x 16 qs bytes of 4 Q4_0 blocks out of 72 bytes
  __m512i quads_d;      // vpermt2w: the d of 4 + 4 Q4_0 blocks from two quads' first 64 bytes
  __m512i quads_nat;    // lane 4r + g (block 4g + r) -> natural block order
  __m512i gather34;     // byte offsets of 16 Q8_0 blocks
  __m512i k4_scale[4];  // Q4_K/Q5_K vpshufb: int16 scale of each pair of nibble vector v
  __m512i k4_pair[2];   // VNNI: [sc of vector 2v | sc of vector 2v + 1] per dword
  __m256i k4_mins;      // [m0, m0, m1, m1, ...] (int16) from a lane [sc0..7, m0..7]
  __m512i k4_shift, k4_lomask, k4_himask, k4_dd;  // UnpackScales4
  __m512i k5_bits[4];   // Q5_K: the qh bit of each byte of nibble vector v
  __m512i k6_scale[2];  // Q6_K vpshufb: int16 scale of each pair, from a broadcast of 8 scales
  __m512i k6_pair;      // VNNI: [sc of lane L | sc of lane L + 4] per dword of 128-bit lane L
  __m512i k6_shl, k6_shr;
  __m256i dsplit;  // [d0, dm0, d1, dm1, ...] -> [d0..d3, dm0..dm3]
  Avx512Consts() {
    alignas(64) int16_t w[32];
    alignas(64) int32_t d[16];
    alignas(64) uint8_t bytes[64];
    for (int r = 0; r < 4; ++r)
      for (int t = 0; t < 8; ++t) w[8 * r + t] = static_cast<int16_t>(r < 3 ? 9 * r + 1 + t : 56 + t);
    quads = _mm512_load_si512(w);
    for (int t = 0; t < 32; ++t) w[t] = static_cast<int16_t>(t < 8 ? (t % 4) * 9 + (t / 4) * 32 : 0);
    quads_d = _mm512_load_si512(w);
    for (int b = 0; b < 16; ++b) d[b] = 4 * (b % 4) + b / 4;
    quads_nat = _mm512_load_si512(d);
    for (int b = 0; b < 16; ++b) d[b] = 34 * b;
    gather34 = _mm512_load_si512(d);
    static constexpr int kSub[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    for (int v = 0; v < 4; ++v) {
      // 128-bit lanes 0, 1 hold pairs of the first 32 bytes (sub-block kSub[v][0]), 2, 3 the rest.
      for (int p = 0; p < 64; ++p)
        bytes[p] = p % 2 ? 0x80 : static_cast<uint8_t>(kSub[v][p / 32]);
      k4_scale[v] = _mm512_load_si512(bytes);
    }
    for (int v = 0; v < 2; ++v) {
      for (int p = 0; p < 64; ++p) {
        const int half = p / 32, byte = p % 4;
        bytes[p] = byte % 2 ? 0x80 : static_cast<uint8_t>(kSub[2 * v + byte / 2][half]);
      }
      k4_pair[v] = _mm512_load_si512(bytes);
    }
    for (int p = 0; p < 32; ++p) bytes[p] = p % 2 ? 0x80 : static_cast<uint8_t>(8 + (p % 16) / 4 + 4 * (p / 16));
    k4_mins = _mm256_load_si256(reinterpret_cast<const __m256i*>(bytes));
    for (int p = 0; p < 16; ++p) d[p] = p % 4 == 3 ? 4 : 0;
    k4_shift = _mm512_load_si512(d);
    for (int p = 0; p < 16; ++p) d[p] = p % 2 ? 0x0f0f0f0f : 0x3f3f3f3f;
    k4_lomask = _mm512_load_si512(d);
    for (int p = 0; p < 16; ++p) d[p] = p % 2 ? 0x30303030 : 0;
    k4_himask = _mm512_load_si512(d);
    for (int p = 0; p < 16; ++p) d[p] = 4 * (p % 4);
    k4_dd = _mm512_load_si512(d);
    static constexpr int kBit[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    for (int v = 0; v < 4; ++v) {
      for (int p = 0; p < 64; ++p) bytes[p] = static_cast<uint8_t>(1u << kBit[v][p / 32]);
      k5_bits[v] = _mm512_load_si512(bytes);
    }
    // Q6_K: vector v covers sub-blocks 4v..4v+3, one per 128-bit lane; the int16 scales of
    // sub-blocks 8h..8h+7 are broadcast to every lane, so lane L picks int16 (4v + L) % 8.
    for (int v = 0; v < 2; ++v) {
      for (int p = 0; p < 64; ++p) bytes[p] = static_cast<uint8_t>(2 * (4 * v + p / 16) + p % 2);
      k6_scale[v] = _mm512_load_si512(bytes);
    }
    for (int p = 0; p < 64; ++p) {
      const int lane = p / 16, byte = p % 4;
      bytes[p] = static_cast<uint8_t>(2 * (lane + 4 * (byte / 2)) + byte % 2);
    }
    k6_pair = _mm512_load_si512(bytes);
    for (int p = 0; p < 32; ++p) w[p] = static_cast<int16_t>(p < 16 ? 4 : 2);
    k6_shl = _mm512_load_si512(w);
    for (int p = 0; p < 32; ++p) w[p] = static_cast<int16_t>(p < 16 ? 0 : 2);
    k6_shr = _mm512_load_si512(w);
    for (int p = 0; p < 8; ++p) d[p] = p < 4 ? 2 * p : 2 * (p - 4) + 1;
    dsplit = _mm256_load_si256(reinterpret_cast<const __m256i*>(d));
  }
};

const Avx512Consts& Consts() {
  static const Avx512Consts c;
  return c;
}

// ---- Q8_0 and Q4_0 ---------------------------------------------------------------------------
//
// 16 blocks (a group) at a time, unpacked into 4 "quads" of 4 blocks: W[2qd] holds values [0,16)
// of blocks 4qd..4qd+3 (one block per 128-bit lane), W[2qd+1] values [16,32) (the kQuads
// activation layout). Q4_0: one vpermt2w puts the 4 x 16 qs bytes of 4 blocks (72 bytes) in a
// zmm whose low nibbles are W[2qd] and high nibbles W[2qd+1]; the 16 d's come from the same loads.
// Q8_0: two 64-byte loads (2 blocks each) and two vshufi64x2. The rearrangement is done once per
// weight group; per activation row, a quad's dot is 2 vpdpbusd and the 4 quads' lane sums reduce
// to one int32 per block with 3 unpack/add steps and one permute. VNNI takes Q8_0 as w + 128
// (unsigned; corrected by 128 * block sum of x), otherwise |w| * sign(x, w).

// Eight zmm registers as a class type (an array of __m512i as a template argument drops its
// alignment attribute, which GCC warns about).
struct Zmm8 {
  __m512i v[8];
  MOE_INLINE __m512i& operator[](int64_t i) { return v[i]; }
  MOE_INLINE const __m512i& operator[](int64_t i) const { return v[i]; }
};

template <bool kVnni, QuantType T>
struct Group32 {
  static constexpr bool kQ4 = T == QuantType::kQ4_0;
  static constexpr int64_t kBytes = kQ4 ? qk::kQ4_0Bytes : qk::kQ8_0Bytes;
  __m512i W[8];
  [[no_unique_address]] std::conditional_t<!kQ4 && !kVnni, Zmm8, char> absw;
  [[no_unique_address]] std::conditional_t<!kQ4 && !kVnni, __mmask64[8], char> neg;
  __m512 dw;

  // Unpacks the `valid` (1..16) blocks at wg; kFull: valid == 16.
  template <bool kFull>
  MOE_INLINE void Load(const uint8_t* wg, int64_t valid, const Avx512Consts& c) {
    const __m512i zero = _mm512_setzero_si512();
    if constexpr (kQ4) {
      const __m512i m4 = _mm512_set1_epi8(0x0F);
      __m512i lo[4];
      for (int qd = 0; qd < 4; ++qd) {
        const uint8_t* p = wg + 4 * qd * kBytes;
        __m512i hi;
        if constexpr (kFull) {
          lo[qd] = _mm512_loadu_si512(p);
          hi = _mm512_loadu_si512(p + 8);
        } else {
          const int64_t bq = valid - 4 * qd;
          lo[qd] = _mm512_maskz_loadu_epi8(ByteMask(18 * bq), p);
          hi = _mm512_maskz_loadu_epi8(ByteMask(18 * bq - 8), p + 8);
        }
        const __m512i v = _mm512_permutex2var_epi16(lo[qd], c.quads, hi);
        W[2 * qd] = _mm512_and_si512(v, m4);
        W[2 * qd + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      }
      // d of blocks 4qd + r is word 9r of lo[qd]: 8 per vpermt2w, in natural order.
      const __m512i d01 = _mm512_permutex2var_epi16(lo[0], c.quads_d, lo[1]);
      const __m512i d23 = _mm512_permutex2var_epi16(lo[2], c.quads_d, lo[3]);
      dw = _mm512_cvtph_ps(_mm256_inserti128_si256(_mm512_castsi512_si256(d01),
                                                   _mm512_castsi512_si128(d23), 1));
    } else {
      for (int qd = 0; qd < 4; ++qd) {
        __m512i pair[2];  // blocks (4qd, 4qd + 1) and (4qd + 2, 4qd + 3), 32 bytes each
        for (int h = 0; h < 2; ++h) {
          const uint8_t* q = wg + (4 * qd + 2 * h) * kBytes + 2;
          const auto* q0 = reinterpret_cast<const __m256i*>(q);
          const auto* q1 = reinterpret_cast<const __m256i*>(q + kBytes);
          if constexpr (kFull) {
            pair[h] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(q0)),
                                         _mm256_loadu_si256(q1), 1);
          } else {
            const int64_t bp = valid - (4 * qd + 2 * h);
            pair[h] = bp >= 2 ? _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(q0)),
                                                   _mm256_loadu_si256(q1), 1)
                      : bp == 1 ? _mm512_zextsi256_si512(_mm256_loadu_si256(q0))
                                : zero;
          }
        }
        for (int h = 0; h < 2; ++h) {
          // 128-bit lanes of the pairs: [b0 0-15, b0 16-31, b1 0-15, b1 16-31]; take lanes 0, 2
          // (h = 0) or 1, 3 (h = 1) of each.
          __m512i v = h == 0 ? _mm512_shuffle_i64x2(pair[0], pair[1], _MM_SHUFFLE(2, 0, 2, 0))
                             : _mm512_shuffle_i64x2(pair[0], pair[1], _MM_SHUFFLE(3, 1, 3, 1));
          if constexpr (kVnni) {
            W[2 * qd + h] = _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
          } else {
            W[2 * qd + h] = v;
            absw[2 * qd + h] = _mm512_abs_epi8(v);
            neg[2 * qd + h] = _mm512_movepi8_mask(v);
          }
        }
      }
      const __m512i dwi =
          kFull ? _mm512_i32gather_epi32(c.gather34, wg, 1)
                : _mm512_mask_i32gather_epi32(zero, static_cast<__mmask16>((1u << valid) - 1u),
                                              c.gather34, wg, 1);
      dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dwi));
    }
  }

  // This group's contribution float(isum_b) * (dw_b * dx_b), lane b, for one activation row
  // (q, sums, dx at the group's first block).
  MOE_INLINE __m512 Row(const int8_t* q, const int32_t* sums, const float* dx,
                        const Avx512Consts& c) const {
    const __m512i zero = _mm512_setzero_si512(), ones = _mm512_set1_epi16(1);
    __m512i P[4];
    for (int qd = 0; qd < 4; ++qd) {
      const __m512i alo = _mm512_loadu_si512(q + 128 * qd);
      const __m512i ahi = _mm512_loadu_si512(q + 128 * qd + 64);
      if constexpr (kVnni) {
        P[qd] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, W[2 * qd], alo), W[2 * qd + 1], ahi);
      } else if constexpr (kQ4) {  // pairs <= 15 * 127 * 2: two of them still fit in int16
        P[qd] = _mm512_madd_epi16(_mm512_add_epi16(_mm512_maddubs_epi16(W[2 * qd], alo),
                                                   _mm512_maddubs_epi16(W[2 * qd + 1], ahi)),
                                  ones);
      } else {
        const __m512i slo = _mm512_mask_sub_epi8(alo, neg[2 * qd], zero, alo);
        const __m512i shi = _mm512_mask_sub_epi8(ahi, neg[2 * qd + 1], zero, ahi);
        P[qd] = _mm512_add_epi32(
            _mm512_madd_epi16(_mm512_maddubs_epi16(absw[2 * qd], slo), ones),
            _mm512_madd_epi16(_mm512_maddubs_epi16(absw[2 * qd + 1], shi), ones));
      }
    }
    // Lane 4r + qd of R: block 4qd + r.
    const __m512i u0 =
        _mm512_add_epi32(_mm512_unpacklo_epi32(P[0], P[1]), _mm512_unpackhi_epi32(P[0], P[1]));
    const __m512i u1 =
        _mm512_add_epi32(_mm512_unpacklo_epi32(P[2], P[3]), _mm512_unpackhi_epi32(P[2], P[3]));
    __m512i R = _mm512_add_epi32(_mm512_unpacklo_epi64(u0, u1), _mm512_unpackhi_epi64(u0, u1));
    R = _mm512_permutexvar_epi32(c.quads_nat, R);
    // Offset corrections: Q4_0 stores q + 8; VNNI's Q8_0 used w + 128.
    if constexpr (kQ4 || kVnni)
      R = _mm512_sub_epi32(R, _mm512_slli_epi32(_mm512_loadu_si512(sums), kQ4 ? 3 : 7));
    const __m512 s = _mm512_mul_ps(dw, _mm512_loadu_ps(dx));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(R), s);
  }
};

template <bool kVnni, QuantType T, int M>
void Dot32M(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
            float* y, int64_t ldy) {
  using G = Group32<kVnni, T>;
  const Avx512Consts& c = Consts();
  const int64_t nb = a.k / 32, nfull = nb / 16;
  int64_t j = 0;
  if constexpr (M == 1) {
    // Rows j and j + half side by side: two streams from memory instead of one, so a thread keeps
    // more misses in flight (one core's bandwidth is bound by its outstanding misses). Each row
    // still adds its groups in order.
    const int8_t* q = a.qs(a_row);
    const int32_t* sums = a.sums(a_row);
    const float* dx = a.d(a_row);
    const int64_t half = rows / 2;
    for (; j < half; ++j) {
      const uint8_t* w0 = w + j * wrb;
      const uint8_t* w1 = w + (j + half) * wrb;
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
      int64_t g = 0;
      for (; g < nfull; ++g) {
        G g0, g1;
        PrefetchAhead(w0 + g * 16 * G::kBytes, 16 * G::kBytes, w + half * wrb);
        PrefetchAhead(w1 + g * 16 * G::kBytes, 16 * G::kBytes, w + rows * wrb);
        g0.template Load<true>(w0 + g * 16 * G::kBytes, 16, c);
        g1.template Load<true>(w1 + g * 16 * G::kBytes, 16, c);
        acc0 = _mm512_add_ps(acc0, g0.Row(q + g * 512, sums + 16 * g, dx + 16 * g, c));
        acc1 = _mm512_add_ps(acc1, g1.Row(q + g * 512, sums + 16 * g, dx + 16 * g, c));
      }
      if (g * 16 < nb) {
        G g0, g1;
        g0.template Load<false>(w0 + g * 16 * G::kBytes, nb - 16 * g, c);
        g1.template Load<false>(w1 + g * 16 * G::kBytes, nb - 16 * g, c);
        acc0 = _mm512_add_ps(acc0, g0.Row(q + g * 512, sums + 16 * g, dx + 16 * g, c));
        acc1 = _mm512_add_ps(acc1, g1.Row(q + g * 512, sums + 16 * g, dx + 16 * g, c));
      }
      y[j] = Tree16(acc0);
      y[j + half] = Tree16(acc1);
    }
    j = 2 * half;
  }
  for (; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    __m512 acc[M];
    for (int i = 0; i < M; ++i) acc[i] = _mm512_setzero_ps();
    int64_t g = 0;
    if constexpr (M == 1) {
      // Two groups in flight: their chains are independent until the adds into acc.
      const int8_t* q = a.qs(a_row);
      const int32_t* sums = a.sums(a_row);
      const float* dx = a.d(a_row);
      for (; g + 2 <= nfull; g += 2) {
        G g0, g1;
        PrefetchAhead(wr + g * 16 * G::kBytes, 32 * G::kBytes, w + rows * wrb);
        g0.template Load<true>(wr + g * 16 * G::kBytes, 16, c);
        g1.template Load<true>(wr + (g + 1) * 16 * G::kBytes, 16, c);
        const __m512 v0 = g0.Row(q + g * 512, sums + 16 * g, dx + 16 * g, c);
        const __m512 v1 = g1.Row(q + (g + 1) * 512, sums + 16 * (g + 1), dx + 16 * (g + 1), c);
        acc[0] = _mm512_add_ps(_mm512_add_ps(acc[0], v0), v1);
      }
    }
    for (; g < nfull; ++g) {
      G grp;
      PrefetchAhead(wr + g * 16 * G::kBytes, 16 * G::kBytes, w + rows * wrb);
      grp.template Load<true>(wr + g * 16 * G::kBytes, 16, c);
      for (int i = 0; i < M; ++i)
        acc[i] = _mm512_add_ps(acc[i], grp.Row(a.qs(a_row + i) + g * 512, a.sums(a_row + i) + 16 * g,
                                               a.d(a_row + i) + 16 * g, c));
    }
    if (g * 16 < nb) {  // partial last group; padding blocks add exactly +0
      G grp;
      grp.template Load<false>(wr + g * 16 * G::kBytes, nb - 16 * g, c);
      for (int i = 0; i < M; ++i)
        acc[i] = _mm512_add_ps(acc[i], grp.Row(a.qs(a_row + i) + g * 512, a.sums(a_row + i) + 16 * g,
                                               a.d(a_row + i) + 16 * g, c));
    }
    for (int i = 0; i < M; ++i) y[i * ldy + j] = Tree16(acc[i]);
  }
}

// ---- K-quants: shared structure ------------------------------------------------------------------
//
// A super-block unpacks to 4 zmm of unsigned quants W (64 values each) and its scales S. Without
// VNNI: S holds 4 zmm of int16 scales (one per maddubs pair) and isum = sum_v madd(maddubs(W_v,
// x_v), S_v). With VNNI: vpdpbusd gives each dword's 4-product sum, which fits in int16 (at most
// 4 * 63 * 127), so the sums of two vectors are packed into int16 pairs and one vpdpwssd scales
// both against S (2 zmm of [scale, scale] pairs): 6 multiplies instead of 8, 2 scale shuffles
// instead of 4 (the multiplies and shuffles share one port pool on Zen 4). Either way isum is
// folded to 8 int32 lanes; msum = mins (or scales) . 16-value sums of x. Rows and super-blocks
// are then reduced 8 at a time by Reduce8 and scaled in vectors.

struct KBlock {
  __m512i W[4];
  __m512i S[4];  // VNNI: S[0], S[1]
  __m256i mins;  // Q4_K/Q5_K: [m0, m0, m1, m1, ...]; Q6_K: the 16 scales
};

template <bool kVnni>
MOE_INLINE __m256i KIsum(const KBlock& k, const int8_t* q) {
  if constexpr (kVnni) {
    const __m512i zero = _mm512_setzero_si512();
    __m512i p[4];
    for (int v = 0; v < 4; ++v) p[v] = _mm512_dpbusd_epi32(zero, k.W[v], _mm512_loadu_si512(q + 64 * v));
    const __mmask32 odd = 0xAAAAAAAAu;
    const __m512i p01 = _mm512_mask_blend_epi16(odd, p[0], _mm512_slli_epi32(p[1], 16));
    const __m512i p23 = _mm512_mask_blend_epi16(odd, p[2], _mm512_slli_epi32(p[3], 16));
    return Half(_mm512_dpwssd_epi32(_mm512_madd_epi16(p01, k.S[0]), p23, k.S[1]));
  } else {
    __m512i s0 = _mm512_madd_epi16(_mm512_maddubs_epi16(k.W[0], _mm512_loadu_si512(q)), k.S[0]);
    __m512i s1 = _mm512_madd_epi16(_mm512_maddubs_epi16(k.W[1], _mm512_loadu_si512(q + 64)), k.S[1]);
    s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(_mm512_maddubs_epi16(k.W[2], _mm512_loadu_si512(q + 128)), k.S[2]));
    s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(_mm512_maddubs_epi16(k.W[3], _mm512_loadu_si512(q + 192)), k.S[3]));
    return Half(_mm512_add_epi32(s0, s1));
  }
}

MOE_INLINE __m256i KMsum(const KBlock& k, const int16_t* bsums) {
  return _mm256_madd_epi16(k.mins, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bsums)));
}

// Q4_K (kHigh = false) / Q5_K. 64 qs bytes per zmm: the low nibbles are values [0,32) and [64,96)
// of a 128-value half, the high nibbles [32,64) and [96,128) (kNibblePairs activation layout).
template <bool kHigh>
MOE_INLINE void UnpackQuantsQ45K(const uint8_t* blk, const Avx512Consts& c, KBlock* k) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const uint8_t* qs = blk + (kHigh ? 48 : 16);
  const __m512i q0 = _mm512_loadu_si512(qs), q1 = _mm512_loadu_si512(qs + 64);
  k->W[0] = _mm512_and_si512(q0, m4);
  k->W[1] = _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4);
  k->W[2] = _mm512_and_si512(q1, m4);
  k->W[3] = _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4);
  if constexpr (kHigh) {
    const __m512i qh =
        _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16)));
    const __m512i sixteen = _mm512_set1_epi8(16);
    for (int v = 0; v < 4; ++v)
      k->W[v] = _mm512_mask_add_epi8(k->W[v], _mm512_test_epi8_mask(qh, c.k5_bits[v]), k->W[v],
                                     sixteen);
  }
}

// The 6-bit scales and mins of up to 4 super-blocks (at blk + u * kBytes, u < count), unpacked in
// vectors: 128-bit lane u of the result holds bytes [sc0..sc7, m0..m7] of super-block u (see
// UnpackScaleMinK4); d and dmin get the f16 scales (0 for missing blocks).
template <int64_t kBytes>
MOE_INLINE __m512i UnpackScales4(const uint8_t* blk, int count, const Avx512Consts& c, __m128* d,
                                 __m128* dmin) {
  // Lane u: dwords [d | dmin, u0, u1, u2] (the first 16 bytes of the block).
  auto lane = [&](int u) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + u * kBytes)); };
  __m512i v = _mm512_zextsi128_si512(lane(0));
  if (count > 1) v = _mm512_inserti32x4(v, lane(1), 1);
  if (count > 2) v = _mm512_inserti32x4(v, lane(2), 2);
  if (count > 3) v = _mm512_inserti32x4(v, lane(3), 3);
  // Out dwords: [u0 & 3f, (u2 & 0f) | (u0 >> 6 & 3) << 4, u1 & 3f, (u2 >> 4 & 0f) | (u1 >> 6 & 3) << 4].
  const __m512i x = _mm512_shuffle_epi32(v, static_cast<_MM_PERM_ENUM>(0xED));  // u0 u2 u1 u2
  const __m512i y = _mm512_shuffle_epi32(v, static_cast<_MM_PERM_ENUM>(0xA5));  // u0 u0 u1 u1
  const __m512i out = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi32(x, c.k4_shift), c.k4_lomask),
                                      _mm512_and_si512(_mm512_srli_epi32(y, 2), c.k4_himask));
  const __m256 f = _mm256_permutevar8x32_ps(
      _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi32(c.k4_dd, v))), c.dsplit);
  *d = _mm256_castps256_ps128(f);
  *dmin = _mm256_extractf128_ps(f, 1);
  return out;
}

// S and mins of super-block u from UnpackScales4's result.
template <bool kVnni, int kU>
MOE_INLINE void ScalesQ45K(__m512i scales4, const Avx512Consts& c, KBlock* k) {
  const __m512i b = _mm512_shuffle_i32x4(scales4, scales4, kU * 0x55);
  if constexpr (kVnni) {
    k->S[0] = _mm512_shuffle_epi8(b, c.k4_pair[0]);
    k->S[1] = _mm512_shuffle_epi8(b, c.k4_pair[1]);
  } else {
    for (int v = 0; v < 4; ++v) k->S[v] = _mm512_shuffle_epi8(b, c.k4_scale[v]);
  }
  k->mins = _mm256_shuffle_epi8(_mm512_castsi512_si256(b), c.k4_mins);
}

template <bool kVnni>
MOE_INLINE void ScalesQ45K(__m512i scales4, int u, const Avx512Consts& c, KBlock* k) {
  switch (u) {
    case 0: return ScalesQ45K<kVnni, 0>(scales4, c, k);
    case 1: return ScalesQ45K<kVnni, 1>(scales4, c, k);
    case 2: return ScalesQ45K<kVnni, 2>(scales4, c, k);
    default: return ScalesQ45K<kVnni, 3>(scales4, c, k);
  }
}

// Q6_K. Per 128-value half, 64 ql bytes give values [0,64) (low nibbles) and [64,128) (high
// nibbles) in natural order; the two high bits come from qh shifted per 256-bit half. q is
// unsigned (0..63); isum - 32 * (scales . 16-value sums of x) removes the offset.
template <bool kVnni>
MOE_INLINE void UnpackQ6K(const uint8_t* blk, const Avx512Consts& c, KBlock* k) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  for (int h = 0; h < 2; ++h) {
    const __m512i l = _mm512_loadu_si512(blk + 64 * h);
    const __m512i qh = _mm512_broadcast_i64x4(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h)));
    k->W[2 * h] = _mm512_or_si512(_mm512_and_si512(l, m4),
                                  _mm512_and_si512(_mm512_sllv_epi16(qh, c.k6_shl), m30));
    k->W[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                      _mm512_and_si512(_mm512_srlv_epi16(qh, c.k6_shr), m30));
  }
  const __m256i sc =
      _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
  const __m512i lo = _mm512_broadcast_i32x4(_mm256_castsi256_si128(sc));
  const __m512i hi = _mm512_broadcast_i32x4(_mm256_extracti128_si256(sc, 1));
  if constexpr (kVnni) {
    // Vectors 0 and 1 are paired: lane L holds sub-blocks L and 4 + L; vectors 2, 3: 8 + L, 12 + L.
    k->S[0] = _mm512_shuffle_epi8(lo, c.k6_pair);
    k->S[1] = _mm512_shuffle_epi8(hi, c.k6_pair);
  } else {
    k->S[0] = _mm512_shuffle_epi8(lo, c.k6_scale[0]);
    k->S[1] = _mm512_shuffle_epi8(lo, c.k6_scale[1]);
    k->S[2] = _mm512_shuffle_epi8(hi, c.k6_scale[0]);
    k->S[3] = _mm512_shuffle_epi8(hi, c.k6_scale[1]);
  }
  k->mins = sc;
}

// Q6_K: isum - 32 * msum, folded before the reduction.
template <bool kVnni>
MOE_INLINE __m256i KIsum6(const KBlock& k, const int8_t* q, const int16_t* bsums) {
  return _mm256_sub_epi32(KIsum<kVnni>(k, q), _mm256_slli_epi32(KMsum(k, bsums), 5));
}

// ---- Q4_K / Q5_K kernels -------------------------------------------------------------------------

template <bool kVnni, bool kHigh>
void DotQ45KM1(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
               float* y) {
  constexpr int64_t kBytes = kHigh ? qk::kQ5_KBytes : qk::kQ4_KBytes;
  const Avx512Consts& c = Consts();
  const int64_t nb = a.k / qk::kQK;
  const int8_t* q = a.qs(a_row);
  const int16_t* bsums = a.bsums(a_row);
  const float* dx = a.d(a_row);
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    __m128 acc = _mm_setzero_ps();
    // Four super-blocks, then one Reduce8 of their 4 isums and 4 msums.
    auto four = [&](int64_t b, int count) MOE_LAMBDA_INLINE {
      PrefetchAhead(wr + b * kBytes, count * kBytes, w + rows * wrb);
      __m128 d, dmin;
      const __m512i scales = UnpackScales4<kBytes>(wr + b * kBytes, count, c, &d, &dmin);
      __m256i part[8];
      for (int u = 0; u < 4; ++u) {
        if (u < count) {
          KBlock k;
          UnpackQuantsQ45K<kHigh>(wr + (b + u) * kBytes, c, &k);
          ScalesQ45K<kVnni>(scales, u, c, &k);
          part[u] = KIsum<kVnni>(k, q + (b + u) * qk::kQK);
          part[4 + u] = KMsum(k, bsums + 16 * (b + u));
        } else {
          part[u] = part[4 + u] = _mm256_setzero_si256();
        }
      }
      const __m256i r = Reduce8(part);  // [isum_b..b+3, msum_b..b+3]
      const __m128 x = _mm_maskz_loadu_ps(static_cast<__mmask8>((1u << count) - 1u), dx + b);
      const __m128 t =
          _mm_sub_ps(_mm_mul_ps(_mm_mul_ps(d, x), _mm_cvtepi32_ps(_mm256_castsi256_si128(r))),
                     _mm_mul_ps(_mm_mul_ps(dmin, x), _mm_cvtepi32_ps(_mm256_extracti128_si256(r, 1))));
      acc = _mm_add_ps(acc, t);
    };
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) four(b, 4);
    if (b < nb) four(b, static_cast<int>(nb - b));
    y[j] = Tree4(acc);
  }
}

// Several rows: per super-block, the isums and msums of the M rows are reduced together and the
// scaling is done for all rows in one vector (lane i = row i); acc[b % 4] as the canonical order.
template <bool kVnni, bool kHigh, int M>
void DotQ45KMN(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
               float* y, int64_t ldy) {
  constexpr int64_t kBytes = kHigh ? qk::kQ5_KBytes : qk::kQ4_KBytes;
  const Avx512Consts& c = Consts();
  const int64_t nb = a.k / qk::kQK;
  const float* d8 = a.d8(a_row / 8);
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    // One super-block u of a group of four whose scales are unpacked.
    auto step = [&](int64_t b, int u, __m512i scales, float d1, float dmin1,
                    __m256& ac) MOE_LAMBDA_INLINE {
      KBlock k;
      UnpackQuantsQ45K<kHigh>(wr + b * kBytes, c, &k);
      ScalesQ45K<kVnni>(scales, u, c, &k);
      __m256i is[8], ms[8];
      for (int i = 0; i < 8; ++i) {
        if (i < M) {
          is[i] = KIsum<kVnni>(k, a.qs(a_row + i) + b * qk::kQK);
          ms[i] = KMsum(k, a.bsums(a_row + i) + 16 * b);
        } else {
          is[i] = ms[i] = _mm256_setzero_si256();
        }
      }
      __m256 fi, fm;
      if constexpr (M <= 4) {
        const __m256i r = Reduce8(is[0], is[1], is[2], is[3], ms[0], ms[1], ms[2], ms[3]);
        fi = _mm256_zextps128_ps256(_mm_cvtepi32_ps(_mm256_castsi256_si128(r)));
        fm = _mm256_zextps128_ps256(_mm_cvtepi32_ps(_mm256_extracti128_si256(r, 1)));
      } else {
        fi = _mm256_cvtepi32_ps(Reduce8(is));
        fm = _mm256_cvtepi32_ps(Reduce8(ms));
      }
      const __m256 x = _mm256_loadu_ps(d8 + 8 * b);
      const __m256 d = _mm256_set1_ps(d1), dmin = _mm256_set1_ps(dmin1);
      ac = _mm256_add_ps(ac, _mm256_sub_ps(_mm256_mul_ps(_mm256_mul_ps(d, x), fi),
                                           _mm256_mul_ps(_mm256_mul_ps(dmin, x), fm)));
    };
    for (int64_t b = 0; b < nb; b += 4) {
      const int count = nb - b < 4 ? static_cast<int>(nb - b) : 4;
      PrefetchAhead(wr + b * kBytes, count * kBytes, w + rows * wrb);
      __m128 dv, dminv;
      const __m512i scales = UnpackScales4<kBytes>(wr + b * kBytes, count, c, &dv, &dminv);
      alignas(16) float ds[4], dmins[4];
      _mm_store_ps(ds, dv);
      _mm_store_ps(dmins, dminv);
      for (int u = 0; u < count; ++u) step(b + u, u, scales, ds[u], dmins[u], acc[u]);
    }
    alignas(32) float out[8];
    _mm256_store_ps(out, Tree4(acc[0], acc[1], acc[2], acc[3]));
    for (int i = 0; i < M; ++i) y[i * ldy + j] = out[i];
  }
}

// ---- Q6_K kernels --------------------------------------------------------------------------------

template <bool kVnni>
void DotQ6KM1(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
              float* y) {
  const Avx512Consts& c = Consts();
  const int64_t nb = a.k / qk::kQK;
  const int8_t* q = a.qs(a_row);
  const int16_t* bsums = a.bsums(a_row);
  const float* dx = a.d(a_row);
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    __m128 acc = _mm_setzero_ps();
    // Eight super-blocks, one Reduce8; lanes 0..3 then 4..7 go into acc[b % 4] in block order.
    auto eight = [&](int64_t b, int count) MOE_LAMBDA_INLINE {
      PrefetchAhead(wr + b * qk::kQ6_KBytes, count * qk::kQ6_KBytes, w + rows * wrb);
      __m256i part[8];
      uint64_t dh[2] = {};
      for (int u = 0; u < 8; ++u) {
        if (u < count) {
          const uint8_t* blk = wr + (b + u) * qk::kQ6_KBytes;
          KBlock k;
          UnpackQ6K<kVnni>(blk, c, &k);
          part[u] = KIsum6<kVnni>(k, q + (b + u) * qk::kQK, bsums + 16 * (b + u));
          dh[u / 4] |= static_cast<uint64_t>(U16(blk + 208)) << (16 * (u % 4));
        } else {
          part[u] = _mm256_setzero_si256();
        }
      }
      const __m256 t = _mm256_mul_ps(
          _mm256_mul_ps(_mm256_cvtph_ps(_mm_set_epi64x(static_cast<long long>(dh[1]),
                                                       static_cast<long long>(dh[0]))),
                        _mm256_maskz_loadu_ps(static_cast<__mmask8>((1u << count) - 1u), dx + b)),
          _mm256_cvtepi32_ps(Reduce8(part)));
      acc = _mm_add_ps(_mm_add_ps(acc, _mm256_castps256_ps128(t)), _mm256_extractf128_ps(t, 1));
    };
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) eight(b, 8);
    if (b < nb) eight(b, static_cast<int>(nb - b));
    y[j] = Tree4(acc);
  }
}

template <bool kVnni, int M>
void DotQ6KMN(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
              float* y, int64_t ldy) {
  const Avx512Consts& c = Consts();
  const int64_t nb = a.k / qk::kQK;
  const float* d8 = a.d8(a_row / 8);
  for (int64_t j = 0; j < rows; ++j) {
    const uint8_t* wr = w + j * wrb;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    auto step = [&](int64_t b, __m256& ac) MOE_LAMBDA_INLINE {
      const uint8_t* blk = wr + b * qk::kQ6_KBytes;
      KBlock k;
      UnpackQ6K<kVnni>(blk, c, &k);
      __m256i is[8];
      for (int i = 0; i < 8; ++i)
        is[i] = i < M ? KIsum6<kVnni>(k, a.qs(a_row + i) + b * qk::kQK, a.bsums(a_row + i) + 16 * b)
                      : _mm256_setzero_si256();
      const __m256 d = _mm256_set1_ps(F16(blk + 208));
      ac = _mm256_add_ps(ac, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(d8 + 8 * b)),
                                           _mm256_cvtepi32_ps(Reduce8(is))));
    };
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
      PrefetchAhead(wr + b * qk::kQ6_KBytes, 4 * qk::kQ6_KBytes, w + rows * wrb);
      step(b, acc[0]);
      step(b + 1, acc[1]);
      step(b + 2, acc[2]);
      step(b + 3, acc[3]);
    }
    for (int u = 0; b < nb; ++b, ++u) step(b, acc[u]);
    alignas(32) float out[8];
    _mm256_store_ps(out, Tree4(acc[0], acc[1], acc[2], acc[3]));
    for (int i = 0; i < M; ++i) y[i * ldy + j] = out[i];
  }
}

// ---- activation quantisation -----------------------------------------------------------------
//
// QuantizeActsScalar's arithmetic in vectors: the same amax, id = 127 / amax, x * id rounded half
// to even (vcvtps2dq in the default rounding mode), so the bytes are identical.
void QuantizeActsAvx512(const float* x, int64_t row_begin, int64_t row_end, const QuantActs& a) {
  const int block = a.block;
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  for (int64_t i = row_begin; i < row_end; ++i) {
    const float* xr = x + i * a.k;
    uint8_t* row = a.base + i * a.row_bytes;
    std::memset(row, 0, static_cast<size_t>(a.row_bytes));
    auto* qs = reinterpret_cast<int8_t*>(row);
    auto* d = reinterpret_cast<float*>(row + a.k_padded);
    auto* sums32 = reinterpret_cast<int32_t*>(row + a.k_padded + 4 * a.blocks);
    auto* sums16 = reinterpret_cast<int16_t*>(row + a.k_padded + 4 * a.blocks);
    for (int64_t b = 0; b < a.k / block; ++b) {
      const float* xb = xr + b * block;
      __m512 mx = _mm512_abs_ps(_mm512_loadu_ps(xb));
      for (int t = 16; t < block; t += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(xb + t)));
      const float amax = _mm512_reduce_max_ps(mx);
      const float id = amax >= kMinActAmax ? 127.0f / amax : 0.0f;
      d[b] = amax >= kMinActAmax ? amax / 127.0f : 0.0f;
      if (block == 256) a.dt[(i / 8 * a.blocks + b) * 8 + i % 8] = d[b];
      const __m512 vid = _mm512_set1_ps(id);
      __m512i total = _mm512_setzero_si512();
      for (int c = 0; c < block / 16; ++c) {
        const __m512i q = _mm512_min_epi32(
            _mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * c), vid)), lo),
            hi);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + ActChunkPos(a.layout, b * block + 16 * c)),
                         _mm512_cvtepi32_epi8(q));
        if (block == 256) {
          sums16[b * 16 + c] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
        } else {
          total = _mm512_add_epi32(total, q);
        }
      }
      if (block == 32) sums32[b] = _mm512_reduce_add_epi32(total);
    }
  }
}

// ---- dispatch on m ---------------------------------------------------------------------------

#define MOE_QUANT_DISPATCH_MN(KERNEL, ...)                                   \
  switch (m) {                                                               \
    case 2: return KERNEL<__VA_ARGS__, 2>(w, wrb, rows, a, a_row, y, ldy);   \
    case 3: return KERNEL<__VA_ARGS__, 3>(w, wrb, rows, a, a_row, y, ldy);   \
    case 4: return KERNEL<__VA_ARGS__, 4>(w, wrb, rows, a, a_row, y, ldy);   \
    case 5: return KERNEL<__VA_ARGS__, 5>(w, wrb, rows, a, a_row, y, ldy);   \
    case 6: return KERNEL<__VA_ARGS__, 6>(w, wrb, rows, a, a_row, y, ldy);   \
    case 7: return KERNEL<__VA_ARGS__, 7>(w, wrb, rows, a, a_row, y, ldy);   \
    default: return KERNEL<__VA_ARGS__, 8>(w, wrb, rows, a, a_row, y, ldy);  \
  }

template <bool kVnni, QuantType T>
void Dot32(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row, int m,
           float* y, int64_t ldy) {
  if (m == 1) return Dot32M<kVnni, T, 1>(w, wrb, rows, a, a_row, y, ldy);
  MOE_QUANT_DISPATCH_MN(Dot32M, kVnni, T)
}

template <bool kVnni, bool kHigh>
void DotQ45K(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row,
             int m, float* y, int64_t ldy) {
  if (m == 1) return DotQ45KM1<kVnni, kHigh>(w, wrb, rows, a, a_row, y);
  MOE_QUANT_DISPATCH_MN(DotQ45KMN, kVnni, kHigh)
}

template <bool kVnni>
void DotQ6K(const uint8_t* w, int64_t wrb, int64_t rows, const QuantActs& a, int64_t a_row, int m,
            float* y, int64_t ldy) {
  if (m == 1) return DotQ6KM1<kVnni>(w, wrb, rows, a, a_row, y);
  MOE_QUANT_DISPATCH_MN(DotQ6KMN, kVnni)
}

#undef MOE_QUANT_DISPATCH_MN
#undef MOE_INLINE
#undef MOE_LAMBDA_INLINE

template <bool kVnni>
QuantOps MakeAvx512QuantOps(std::string_view name) {
  return QuantOps{name,
                  Isa::kAvx512,
                  {ActLayout::kQuads, ActLayout::kQuads, ActLayout::kNibblePairs,
                   ActLayout::kNibblePairs, ActLayout::kNatural},
                  {Dot32<kVnni, QuantType::kQ8_0>, Dot32<kVnni, QuantType::kQ4_0>,
                   DotQ45K<kVnni, false>, DotQ45K<kVnni, true>, DotQ6K<kVnni>},
                  QuantizeActsAvx512};
}

}  // namespace
}  // namespace moe::kernels
