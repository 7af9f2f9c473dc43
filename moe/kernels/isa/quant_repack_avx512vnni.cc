// The Q4_0x16 few-row kernel with AVX-512 VNNI (see moe/kernels/quant_repack.h). Compiled with
// -mavx512vnni; called only through Q4_0x16Kernel(), which checks the CPU.
#include <immintrin.h>

#include <cstdint>

#include "moe/kernels/quant_repack.h"

namespace moe::kernels {
namespace {

constexpr int64_t kTileBlockBytes = kQ4_0x16Rows * qk::kQ4_0Bytes;

// One tile (16 rows) against M rows of activations: per block, the 4 nibble vectors are unpacked
// once into 8 (low, high) and each activation row adds 8 vpdpbusd with its broadcast quads. Even
// and odd blocks go to separate accumulators (two independent float chains), added at the end.
template <int M>
void Tile(const uint8_t* w, int64_t nb, const QuantActs& a, float* y, int64_t ldy) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
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
    const uint8_t* tile = w + b * kTileBlockBytes;
    __m512i lo[4], hi[4];
    for (int v = 0; v < 4; ++v) {
      const __m512i q = _mm512_loadu_si512(tile + 32 + 64 * v);
      lo[v] = _mm512_and_si512(q, m4);
      hi[v] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile)));
    const int p = static_cast<int>(b & 1);
    for (int i = 0; i < M; ++i) {
      const int32_t* x4 = reinterpret_cast<const int32_t*>(xq[i] + 32 * b);
      __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[0], _mm512_set1_epi32(x4[0]));
      __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi[0], _mm512_set1_epi32(x4[4]));
      for (int v = 1; v < 4; ++v) {
        s0 = _mm512_dpbusd_epi32(s0, lo[v], _mm512_set1_epi32(x4[v]));
        s1 = _mm512_dpbusd_epi32(s1, hi[v], _mm512_set1_epi32(x4[4 + v]));
      }
      const __m512i isum =
          _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(8 * sx[i][b]));
      const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(dx[i][b]));
      acc[p][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[p][i]);
    }
  }
  for (int i = 0; i < M; ++i) _mm512_storeu_ps(y + i * ldy, _mm512_add_ps(acc[0][i], acc[1][i]));
}

template <int M>
void Tiles(const uint8_t* w, int64_t k, int64_t t0, int64_t t1, const QuantActs& a, float* y,
           int64_t ldy) {
  const int64_t nb = k / 32;
  for (int64_t t = t0; t < t1; ++t)
    Tile<M>(w + t * nb * kTileBlockBytes, nb, a, y + t * kQ4_0x16Rows, ldy);
}

}  // namespace

void Q4_0x16DotAvx512Vnni(const uint8_t* w, int64_t k, int64_t t0, int64_t t1,
                          const QuantActs& a, int64_t m, float* y, int64_t ldy) {
  switch (m) {
    case 1: return Tiles<1>(w, k, t0, t1, a, y, ldy);
    case 2: return Tiles<2>(w, k, t0, t1, a, y, ldy);
    case 3: return Tiles<3>(w, k, t0, t1, a, y, ldy);
    case 4: return Tiles<4>(w, k, t0, t1, a, y, ldy);
    case 5: return Tiles<5>(w, k, t0, t1, a, y, ldy);
    case 6: return Tiles<6>(w, k, t0, t1, a, y, ldy);
    case 7: return Tiles<7>(w, k, t0, t1, a, y, ldy);
    default: return Tiles<8>(w, k, t0, t1, a, y, ldy);
  }
}

}  // namespace moe::kernels
