// bf16 GEMM with f32 accumulation on AVX512-BF16 (vdpbf16ps). Compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512bf16; called only when HasBf16Matmul() (moe/core/cpu.h).
//
// GotoBLAS-style blocking. For each block of kKc values of k (and kNc columns), op(B) is rounded to
// bf16 and packed into panels of 32 columns in which each 32-bit word holds the pair
// (B[k][j], B[k+1][j]) — the operand layout of vdpbf16ps. Then for each block of kMc rows, op(A) is
// rounded and packed into tiles of kMr rows; the micro-kernel keeps a kMr x 32 tile of C in 2*kMr zmm
// accumulators and, per k pair, broadcasts the pair (A[i][k], A[i][k+1]) of each row against the two
// B vectors. The pair products are exact in f32; only the f32 accumulation rounds (vdpbf16ps also
// flushes denormals to zero).
//
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>

#include "moe/kernels/isa/gemm_bf16.h"

namespace moe::kernels {
namespace {

constexpr int kMr = 8;                      // rows of a micro-tile
constexpr int kNr = 32;                     // columns of a micro-tile (two zmm of f32)
constexpr int64_t kKc = 512;                // k per block (even)
constexpr int64_t kKp = kKc / 2;            // k pairs per block
constexpr int64_t kMc = 96;                 // rows per packed A block (multiple of kMr)
constexpr int64_t kNc = 1024;               // columns per packed B block (multiple of kNr)
constexpr int64_t kATile = kKp * kMr;       // 32-bit words per packed A tile
static_assert(kKp % 16 == 0 && kMc % kMr == 0 && kNc % kNr == 0);

inline __mmask16 Mask16(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff)
         : left <= 0 ? static_cast<__mmask16>(0)
                     : static_cast<__mmask16>((1u << left) - 1u);
}

// Rounding: vcvtne2ps2bf16 rounds to nearest even and keeps NaN quiet, as moe::ToBf16, but flushes
// denormal inputs to zero. vdpbf16ps treats denormal inputs as zero anyway, so the products are the
// ones of the ToBf16-rounded inputs, bit for bit.
inline __m512i Bf16Of(__m512 lo, __m512 hi) {  // words 0..15 from lo, 16..31 from hi
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
}

// Lane j: the pair (lo[j], hi[j]) as bf16, lo in the low half.
inline __m512i PairOf(__m512 lo, __m512 hi) {
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                       6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(idx, Bf16Of(lo, hi));
}

// The pairs (p[2j], p[2j+1]) for j < 16 of `count` contiguous floats (zeros past count).
inline __m512i PairsOfRun(const float* p, int64_t count) {
  return Bf16Of(_mm512_maskz_loadu_ps(Mask16(count), p), _mm512_maskz_loadu_ps(Mask16(count - 16), p + 16));
}

// In place: r[i] lane j  <-  r[j] lane i (16 x 16 words of 32 bits).
inline void Transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // r[4i + c], 128-bit lane L: column 4L + c of rows 4i..4i+3.
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i s0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88);
    const __m512i u0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xdd);
    const __m512i s1 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88);
    const __m512i u1 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xdd);
    t[c] = _mm512_shuffle_i32x4(s0, s1, 0x88);
    t[8 + c] = _mm512_shuffle_i32x4(s0, s1, 0xdd);
    t[4 + c] = _mm512_shuffle_i32x4(u0, u1, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(u0, u1, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// op(B)[pc : pc+kc, jc : jc+nc] -> panels of 32 columns: panel q at dst + q*kcp*32, word
// [p*32 + j] = pair (k = 2p, 2p+1) of column j. Columns past nc and the odd k tail are zero.
void PackB(bool tb, const float* b, int64_t ldb, int64_t pc, int64_t kc, int64_t jc, int64_t nc,
           uint32_t* dst) {
  const int64_t kcp = (kc + 1) / 2, panels = (nc + kNr - 1) / kNr;
  if (!tb) {  // B stored [k][n]: a pair joins two rows, lanes run over columns; rows are read in order.
    const __m512 z = _mm512_setzero_ps();
    for (int64_t p = 0; p < kcp; ++p) {
      const float* r0 = b + (pc + 2 * p) * ldb + jc;
      const float* r1 = r0 + ldb;
      const bool has1 = 2 * p + 1 < kc;
      for (int64_t j = 0; j < nc; j += 16) {
        const __mmask16 m = Mask16(nc - j);
        const __m512i v = PairOf(_mm512_maskz_loadu_ps(m, r0 + j), has1 ? _mm512_maskz_loadu_ps(m, r1 + j) : z);
        _mm512_storeu_si512(dst + (j / kNr) * kcp * kNr + p * kNr + j % kNr, v);
      }
      if (nc % kNr != 0 && nc % kNr <= 16)  // the upper half of the last panel is padding
        _mm512_storeu_si512(dst + (nc / kNr) * kcp * kNr + p * kNr + 16, _mm512_setzero_si512());
    }
    return;
  }
  // B stored [n][k]: the pairs of a column are contiguous; 16 columns x 16 pairs are transposed.
  for (int64_t q = 0; q < panels; ++q) {
    uint32_t* d = dst + q * kcp * kNr;
    for (int g = 0; g < 2; ++g) {
      const int64_t j0 = jc + q * kNr + g * 16, cols = std::min<int64_t>(16, jc + nc - j0);
      for (int64_t p0 = 0; p0 < kcp; p0 += 16) {
        __m512i r[16];
        for (int jj = 0; jj < 16; ++jj)
          r[jj] = jj < cols ? PairsOfRun(b + (j0 + jj) * ldb + pc + 2 * p0, kc - 2 * p0) : _mm512_setzero_si512();
        Transpose16(r);
        const int64_t np = std::min<int64_t>(16, kcp - p0);
        for (int64_t pp = 0; pp < np; ++pp) _mm512_storeu_si512(d + (p0 + pp) * kNr + g * 16, r[pp]);
      }
    }
  }
}

// op(A)[ic : ic+mc, pc : pc+kc] -> tiles of kMr rows at dst + t*kATile. Not transposed (A stored
// [m][k]): row layout, word [i*kKp + p]. Transposed (A stored [k][m]): pair layout, word [p*kMr + i].
void PackA(bool ta, const float* a, int64_t lda, int64_t ic, int64_t mc, int64_t pc, int64_t kc,
           uint32_t* dst) {
  const int64_t kcp = (kc + 1) / 2;
  if (!ta) {  // A stored [m][k]: the pairs of a row are contiguous.
    for (int64_t r = 0; r < mc; ++r) {
      uint32_t* d = dst + (r / kMr) * kATile + (r % kMr) * kKp;
      const float* src = a + (ic + r) * lda + pc;
      for (int64_t p0 = 0; p0 < kcp; p0 += 16) _mm512_storeu_si512(d + p0, PairsOfRun(src + 2 * p0, kc - 2 * p0));
    }
    return;
  }
  // A stored [k][m]: a pair joins two rows; rows are read in order, 16 columns (two tiles) at a time.
  static_assert(kMr == 8);
  const __m512 z = _mm512_setzero_ps();
  for (int64_t p = 0; p < kcp; ++p) {
    const float* s0 = a + (pc + 2 * p) * lda + ic;
    const bool has1 = 2 * p + 1 < kc;
    for (int64_t i = 0; i < mc; i += 16) {
      const __mmask16 m = Mask16(mc - i);
      const __m512i v = PairOf(_mm512_maskz_loadu_ps(m, s0 + i), has1 ? _mm512_maskz_loadu_ps(m, s0 + lda + i) : z);
      uint32_t* d = dst + (i / kMr) * kATile + p * kMr;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), _mm512_castsi512_si256(v));
      if (mc - i > 8) _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + kATile), _mm512_extracti64x4_epi64(v, 1));
    }
  }
}

// C[0:MR, 0:32] = alpha * sum_p A_pairs . B_pairs + beta * C (columns masked by m0, m1).
template <int MR, bool kPairLayout>
void MicroKernel(int64_t kcp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc,
                 float alpha, float beta, __mmask16 m0, __mmask16 m1) {
  constexpr int64_t kRow = kPairLayout ? 1 : kKp;   // words between rows of the tile
  constexpr int64_t kStep = kPairLayout ? kMr : 1;  // words between k pairs
  // C is read (or written) after the loop: start fetching its lines now (it is often out of cache).
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kcp; ++p) {
    const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b));
    const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 16));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a[i * kRow])));
      c0[i] = _mm512_dpbf16_ps(c0[i], av, b0);
      c1[i] = _mm512_dpbf16_ps(c1[i], av, b1);
    }
    a += kStep;
    b += kNr;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    __m512 r0 = _mm512_mul_ps(c0[i], va), r1 = _mm512_mul_ps(c1[i], va);
    if (beta != 0.0f) {
      r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
      r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);
    }
    _mm512_mask_storeu_ps(ci, m0, r0);
    _mm512_mask_storeu_ps(ci + 16, m1, r1);
  }
}

template <bool kPairLayout>
void RunTile(int rows, int64_t kcp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc,
             float alpha, float beta, __mmask16 m0, __mmask16 m1) {
  static_assert(kMr == 8);
  switch (rows) {
    case 8: return MicroKernel<8, kPairLayout>(kcp, a, b, c, ldc, alpha, beta, m0, m1);
    case 7: return MicroKernel<7, kPairLayout>(kcp, a, b, c, ldc, alpha, beta, m0, m1);
    case 6: return MicroKernel<6, kPairLayout>(kcp, a, b, c, ldc, alpha, beta, m0, m1);
    case 5: return MicroKernel<5, kPairLayout>(kcp, a, b, c, ldc, alpha, beta, m0, m1);
    case 4: return MicroKernel<4, kPairLayout>(kcp, a, b, c, ldc, alpha, beta, m0, m1);
    case 3: return MicroKernel<3, kPairLayout>(kcp, a, b, c, ldc, alpha, beta, m0, m1);
    case 2: return MicroKernel<2, kPairLayout>(kcp, a, b, c, ldc, alpha, beta, m0, m1);
    default: return MicroKernel<1, kPairLayout>(kcp, a, b, c, ldc, alpha, beta, m0, m1);
  }
}

// Per-thread packing buffers (the product is serial and runs inside pool tasks).
struct Buffers {
  struct Free {
    void operator()(uint32_t* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<uint32_t[], Free> a, b;
  Buffers()
      : a(static_cast<uint32_t*>(::operator new[](sizeof(uint32_t) * kATile * (kMc / kMr), std::align_val_t(64)))),
        b(static_cast<uint32_t*>(::operator new[](sizeof(uint32_t) * kKp * kNc, std::align_val_t(64)))) {}
};

}  // namespace

void GemmBf16Avx512(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                    int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  thread_local Buffers buf;
  for (int64_t jc = 0; jc < n; jc += kNc) {
    const int64_t nc = std::min(kNc, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKc) {
      const int64_t kc = std::min(kKc, k - pc), kcp = (kc + 1) / 2;
      PackB(tb, b, ldb, pc, kc, jc, nc, buf.b.get());
      const float beta_k = pc == 0 ? beta : 1.0f;  // later k blocks add to C
      for (int64_t ic = 0; ic < m; ic += kMc) {
        const int64_t mc = std::min(kMc, m - ic);
        PackA(ta, a, lda, ic, mc, pc, kc, buf.a.get());
        for (int64_t j = 0; j < nc; j += kNr) {
          const uint32_t* bp = buf.b.get() + (j / kNr) * kcp * kNr;
          const __mmask16 m0 = Mask16(nc - j), m1 = Mask16(nc - j - 16);
          for (int64_t t = 0; t * kMr < mc; ++t) {
            const int rows = static_cast<int>(std::min<int64_t>(kMr, mc - t * kMr));
            float* ct = c + (ic + t * kMr) * ldc + jc + j;
            const uint32_t* ap = buf.a.get() + t * kATile;
            if (ta)
              RunTile<true>(rows, kcp, ap, bp, ct, ldc, alpha, beta_k, m0, m1);
            else
              RunTile<false>(rows, kcp, ap, bp, ct, ldc, alpha, beta_k, m0, m1);
          }
        }
      }
    }
  }
}

}  // namespace moe::kernels
