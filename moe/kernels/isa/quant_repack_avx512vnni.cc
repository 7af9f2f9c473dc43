// The tiled few-row kernels (Q8_0x16, Q4_0x16, Q4/5_Kx16, Q6_Kx16) with AVX-512 VNNI
// (quant_repack.h). Compiled with -mavx512vnni; called only through TiledKernel(), which checks the
// CPU.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "moe/kernels/quant_repack.h"

namespace moe::kernels {
namespace {

// One tile (16 rows) of Q4_0x16 (kQ8 false) or Q8_0x16 against M rows of activations: per block
// the weights become 8 vectors of unsigned bytes W[v] (dword r = row r's values 4v..4v+3; Q4_0:
// the 4 stored vectors' low nibbles, then their high ones; Q8_0: the 8 stored vectors with the
// sign bit flipped, q + 128), once, and each activation row adds 8 vpdpbusd with its broadcast
// quads and takes off 8 (Q4_0) or 128 (Q8_0) times the block's sum. Even and odd blocks go to
// separate accumulators (two independent float chains), added at the end.
template <bool kQ8, int M>
void Q32Tile(const uint8_t* w, const uint8_t* end, int64_t nb, const QuantActs& a, float* y,
             int64_t ldy) {
  constexpr int64_t kBlockBytes = TileBlockBytes(kQ8 ? DType::kQ8_0x16 : DType::kQ4_0x16);
  constexpr int kOffsetShift = kQ8 ? 7 : 3;
  const __m512i m4 = _mm512_set1_epi8(0x0F), sign = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[2][M];
  for (int p = 0; p < 2; ++p)
    for (int i = 0; i < M; ++i) acc[p][i] = _mm512_setzero_ps();
  const int8_t* xq[M];
  const float* dx[M];
  const int32_t* sx[M];
  for (int i = 0; i < M; ++i) {
    xq[i] = a.qs(i);
    dx[i] = a.d(i);
    sx[i] = a.sums(i);
  }
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* tile = w + b * kBlockBytes;
    // (One activation row streams at the read rate without it; with it, ~5% slower.)
    if constexpr (M > 1) PrefetchAhead(tile, kBlockBytes, end);
    __m512i W[8];
    if constexpr (kQ8) {
      for (int v = 0; v < 8; ++v)
        W[v] = _mm512_xor_si512(_mm512_loadu_si512(tile + 32 + 64 * v), sign);
    } else {
      for (int v = 0; v < 4; ++v) {
        const __m512i q = _mm512_loadu_si512(tile + 32 + 64 * v);
        W[v] = _mm512_and_si512(q, m4);
        W[4 + v] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      }
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile)));
    const int p = static_cast<int>(b & 1);
    for (int i = 0; i < M; ++i) {
      const int32_t* x4 = reinterpret_cast<const int32_t*>(xq[i] + 32 * b);
      __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[0], _mm512_set1_epi32(x4[0]));
      __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[4], _mm512_set1_epi32(x4[4]));
      for (int v = 1; v < 4; ++v) {
        s0 = _mm512_dpbusd_epi32(s0, W[v], _mm512_set1_epi32(x4[v]));
        s1 = _mm512_dpbusd_epi32(s1, W[4 + v], _mm512_set1_epi32(x4[4 + v]));
      }
      const __m512i isum = _mm512_sub_epi32(_mm512_add_epi32(s0, s1),
                                            _mm512_set1_epi32(sx[i][b] * (1 << kOffsetShift)));
      const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(dx[i][b]));
      acc[p][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[p][i]);
    }
  }
  for (int i = 0; i < M; ++i) _mm512_storeu_ps(y + i * ldy, _mm512_add_ps(acc[0][i], acc[1][i]));
}

// ---- Q6_Kx16 ----

constexpr int64_t kQ6TileBytes = TileBlockBytes(DType::kQ6_Kx16);

// One tile against M activation rows. Per super-block and chunk c: H[4c..4c+3] give the high bits
// of L[4c..4c+3] (sub-blocks c and c + 8: low and high nibbles) and of L[16+4c..] (sub-blocks
// c + 4 and c + 12), read in storage order. Each activation row adds 8 vpdpbusd per half chunk,
// takes off 32 * its 16-value sums and multiplies by the rows' scales (int32 lanes): the
// super-block's exact integer, then (d_w * d_x) * float(isum) into acc[b % 4], and at the end
// (acc0 + acc2) + (acc1 + acc3): the mapped kernels' order.
template <int M>
void Q6Tile(const uint8_t* w, const uint8_t* end, int64_t nb, const QuantActs& a, float* y,
            int64_t ldy) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  __m512 acc[4][M];
  for (int p = 0; p < 4; ++p)
    for (int i = 0; i < M; ++i) acc[p][i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* tile = w + b * kQ6TileBytes;
    PrefetchAhead(tile, kQ6TileBytes, end);
    __m512i isum[M];
    for (int i = 0; i < M; ++i) isum[i] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      const uint8_t* chunk = tile + 288 + 768 * c;
      for (int half = 0; half < 2; ++half) {
        // Sub-blocks s_lo (low nibbles) and s_lo + 8 (high nibbles).
        const int s_lo = c + 4 * half;
        __m512i qlo[4], qhi[4];
        for (int gg = 0; gg < 4; ++gg) {
          const __m512i h = _mm512_loadu_si512(chunk + 64 * gg);
          const __m512i l = _mm512_loadu_si512(chunk + 256 * (1 + half) + 64 * gg);
          // High 2 bits to bits 4-5: half 0 uses bits 0-1 and 4-5, half 1 bits 2-3 and 6-7.
          const __m512i top_lo = half == 0 ? _mm512_and_si512(_mm512_slli_epi16(h, 4), m30)
                                           : _mm512_and_si512(_mm512_slli_epi16(h, 2), m30);
          const __m512i top_hi = half == 0 ? _mm512_and_si512(h, m30)
                                           : _mm512_and_si512(_mm512_srli_epi16(h, 2), m30);
          qlo[gg] = _mm512_or_si512(_mm512_and_si512(l, m4), top_lo);
          qhi[gg] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), top_hi);
        }
        const __m512i sc_lo = _mm512_cvtepi8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + 32 + 16 * s_lo)));
        const __m512i sc_hi = _mm512_cvtepi8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + 32 + 16 * (s_lo + 8))));
        for (int i = 0; i < M; ++i) {
          const int32_t* x4 = reinterpret_cast<const int32_t*>(a.qs(i) + 256 * b + 16 * s_lo);
          const int32_t* x4h = x4 + 32;  // values 128 + 16 s_lo ..
          __m512i slo = _mm512_setzero_si512(), shi = _mm512_setzero_si512();
          for (int gg = 0; gg < 4; ++gg) {
            slo = _mm512_dpbusd_epi32(slo, qlo[gg], _mm512_set1_epi32(x4[gg]));
            shi = _mm512_dpbusd_epi32(shi, qhi[gg], _mm512_set1_epi32(x4h[gg]));
          }
          const int16_t* bs = a.bsums(i) + 16 * b;
          slo = _mm512_sub_epi32(slo, _mm512_set1_epi32(32 * bs[s_lo]));
          shi = _mm512_sub_epi32(shi, _mm512_set1_epi32(32 * bs[s_lo + 8]));
          isum[i] = _mm512_add_epi32(isum[i], _mm512_add_epi32(_mm512_mullo_epi32(slo, sc_lo),
                                                               _mm512_mullo_epi32(shi, sc_hi)));
        }
      }
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile)));
    for (int i = 0; i < M; ++i) {
      const __m512 t = _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a.d(i)[b])),
                                     _mm512_cvtepi32_ps(isum[i]));
      acc[b % 4][i] = _mm512_add_ps(acc[b % 4][i], t);
    }
  }
  for (int i = 0; i < M; ++i)
    _mm512_storeu_ps(y + i * ldy, _mm512_add_ps(_mm512_add_ps(acc[0][i], acc[2][i]),
                                                _mm512_add_ps(acc[1][i], acc[3][i])));
}

// ---- Q4_Kx16, Q5_Kx16 ----

// One tile against M activation rows. Per super-block: the 16 rows' packed scale dwords unpacked
// as in UnpackScaleMinK4, lane by lane; the mins' term sum_s m_s * (bsum_2s + bsum_2s+1) as 8
// vpdpwssd of (m_s, m_s) int16 pairs with the activation's bsum pairs; per chunk c the 8 nibble
// vectors (Q5_K: with bit 2c / 2c + 1 of the qh vectors as their fifth bit) against the
// activation quads (8 vpdpbusd for sub-block 2c, 8 for 2c + 1) times the rows' scales. Then
// (d_w * d_x) * float(isum) - (dmin_w * d_x) * float(msum) into acc[b % 4] and
// (acc0 + acc2) + (acc1 + acc3) at the end: the mapped kernels' integers and order.
template <bool kHigh, int M>
void KTile(const uint8_t* w, const uint8_t* end, int64_t nb, const QuantActs& a, float* y,
           int64_t ldy) {
  constexpr int64_t kTileBytes = TileBlockBytes(kHigh ? DType::kQ5_Kx16 : DType::kQ4_Kx16);
  constexpr int64_t kQs = kHigh ? 768 : 256;
  const __m512i m4 = _mm512_set1_epi8(0x0F), m6 = _mm512_set1_epi8(0x3F),
                m2 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x01),
                byte = _mm512_set1_epi32(0xFF);
  __m512 acc[4][M];
  for (int p = 0; p < 4; ++p)
    for (int i = 0; i < M; ++i) acc[p][i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* tile = w + b * kTileBytes;
    PrefetchAhead(tile, kTileBytes, end);
    const __m512i u0 = _mm512_loadu_si512(tile + 64), u1 = _mm512_loadu_si512(tile + 128),
                  u2 = _mm512_loadu_si512(tile + 192);
    // Byte s % 4 of sc[s / 4] (m[s / 4]) in each dword is row r's scale (min) of sub-block s.
    const __m512i sc[2] = {
        _mm512_and_si512(u0, m6),
        _mm512_or_si512(_mm512_and_si512(u2, m4),
                        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), m2), 4))};
    const __m512i mn[2] = {
        _mm512_and_si512(u1, m6),
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m4),
                        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), m2), 4))};
    const auto sub = [&](const __m512i* v, int s) {
      return _mm512_and_si512(_mm512_srli_epi32(v[s / 4], 8 * (s % 4)), byte);
    };
    __m512i isum[M], msum[M];
    for (int i = 0; i < M; ++i) {
      isum[i] = _mm512_setzero_si512();
      msum[i] = _mm512_setzero_si512();
    }
    for (int s = 0; s < 8; ++s) {
      const __m512i m = sub(mn, s);
      const __m512i pair = _mm512_or_si512(m, _mm512_slli_epi32(m, 16));  // (m_s, m_s) as int16
      for (int i = 0; i < M; ++i) {
        int32_t bs;  // bsums 2s and 2s + 1: the int16 pair of sub-block s
        std::memcpy(&bs, a.bsums(i) + 16 * b + 2 * s, 4);
        msum[i] = _mm512_dpwssd_epi32(msum[i], pair, _mm512_set1_epi32(bs));
      }
    }
    for (int c = 0; c < 4; ++c) {
      const uint8_t* chunk = tile + kQs + 512 * c;
      __m512i lo[8], hi[8];
      for (int v = 0; v < 8; ++v) {
        const __m512i q = _mm512_loadu_si512(chunk + 64 * v);
        lo[v] = _mm512_and_si512(q, m4);
        hi[v] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
        if constexpr (kHigh) {
          const __m512i h = _mm512_loadu_si512(tile + 256 + 64 * v);  // in L1 after chunk 0
          lo[v] = _mm512_or_si512(
              lo[v], _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h, 2 * c), m1), 4));
          hi[v] = _mm512_or_si512(
              hi[v], _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h, 2 * c + 1), m1), 4));
        }
      }
      const __m512i sc_lo = sub(sc, 2 * c), sc_hi = sub(sc, 2 * c + 1);
      for (int i = 0; i < M; ++i) {
        const int32_t* x4 = reinterpret_cast<const int32_t*>(a.qs(i) + 256 * b + 64 * c);
        __m512i slo = _mm512_setzero_si512(), shi = _mm512_setzero_si512();
        for (int v = 0; v < 8; ++v) {
          slo = _mm512_dpbusd_epi32(slo, lo[v], _mm512_set1_epi32(x4[v]));
          shi = _mm512_dpbusd_epi32(shi, hi[v], _mm512_set1_epi32(x4[8 + v]));
        }
        isum[i] = _mm512_add_epi32(isum[i], _mm512_add_epi32(_mm512_mullo_epi32(slo, sc_lo),
                                                             _mm512_mullo_epi32(shi, sc_hi)));
      }
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile)));
    const __m512 dm =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + 32)));
    for (int i = 0; i < M; ++i) {
      const __m512 dx = _mm512_set1_ps(a.d(i)[b]);
      const __m512 t =
          _mm512_sub_ps(_mm512_mul_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum[i])),
                        _mm512_mul_ps(_mm512_mul_ps(dm, dx), _mm512_cvtepi32_ps(msum[i])));
      acc[b % 4][i] = _mm512_add_ps(acc[b % 4][i], t);
    }
  }
  for (int i = 0; i < M; ++i)
    _mm512_storeu_ps(y + i * ldy, _mm512_add_ps(_mm512_add_ps(acc[0][i], acc[2][i]),
                                                _mm512_add_ps(acc[1][i], acc[3][i])));
}

// Each type's tile kernel for M activation rows and its values and bytes per tile-block.
template <bool kQ8>
struct Q32x16 {
  static constexpr int64_t kValues = 32,
                           kBlockBytes = TileBlockBytes(kQ8 ? DType::kQ8_0x16 : DType::kQ4_0x16);
  template <int M>
  static void Tile(const uint8_t* w, const uint8_t* end, int64_t nb, const QuantActs& a, float* y,
                   int64_t ldy) {
    Q32Tile<kQ8, M>(w, end, nb, a, y, ldy);
  }
};
template <bool kHigh>
struct Q45_Kx16 {
  static constexpr int64_t kValues = 256,
                           kBlockBytes = TileBlockBytes(kHigh ? DType::kQ5_Kx16 : DType::kQ4_Kx16);
  template <int M>
  static void Tile(const uint8_t* w, const uint8_t* end, int64_t nb, const QuantActs& a, float* y,
                   int64_t ldy) {
    KTile<kHigh, M>(w, end, nb, a, y, ldy);
  }
};
struct Q6_Kx16 {
  static constexpr int64_t kValues = 256, kBlockBytes = kQ6TileBytes;
  template <int M>
  static void Tile(const uint8_t* w, const uint8_t* end, int64_t nb, const QuantActs& a, float* y,
                   int64_t ldy) {
    Q6Tile<M>(w, end, nb, a, y, ldy);
  }
};

// Tiles [t0, t1) of type K against M activation rows.
template <typename K, int M>
void Tiles(const uint8_t* w, int64_t k, int64_t t0, int64_t t1, const QuantActs& a, float* y,
           int64_t ldy) {
  const int64_t nb = k / K::kValues, tile_bytes = nb * K::kBlockBytes;
  for (int64_t t = t0; t < t1; ++t)
    K::template Tile<M>(w + t * tile_bytes, w + t1 * tile_bytes, nb, a, y + t * kTileRows, ldy);
}

template <typename K>
void Dot(const uint8_t* w, int64_t k, int64_t t0, int64_t t1, const QuantActs& a, int64_t m,
         float* y, int64_t ldy) {
  switch (m) {
    case 1: return Tiles<K, 1>(w, k, t0, t1, a, y, ldy);
    case 2: return Tiles<K, 2>(w, k, t0, t1, a, y, ldy);
    case 3: return Tiles<K, 3>(w, k, t0, t1, a, y, ldy);
    case 4: return Tiles<K, 4>(w, k, t0, t1, a, y, ldy);
    case 5: return Tiles<K, 5>(w, k, t0, t1, a, y, ldy);
    case 6: return Tiles<K, 6>(w, k, t0, t1, a, y, ldy);
    case 7: return Tiles<K, 7>(w, k, t0, t1, a, y, ldy);
    default: return Tiles<K, 8>(w, k, t0, t1, a, y, ldy);
  }
}

}  // namespace

void Q8_0x16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy) {
  Dot<Q32x16<true>>(w, k, t0, t1, a, m, y, ldy);
}

void Q4_0x16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy) {
  Dot<Q32x16<false>>(w, k, t0, t1, a, m, y, ldy);
}

void Q4_Kx16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy) {
  Dot<Q45_Kx16<false>>(w, k, t0, t1, a, m, y, ldy);
}

void Q5_Kx16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy) {
  Dot<Q45_Kx16<true>>(w, k, t0, t1, a, m, y, ldy);
}

void Q6_Kx16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy) {
  Dot<Q6_Kx16>(w, k, t0, t1, a, m, y, ldy);
}

}  // namespace moe::kernels
