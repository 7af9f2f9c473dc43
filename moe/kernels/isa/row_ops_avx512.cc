// AVX-512 (F/BW/VL/DQ) row kernels. This file is compiled with -mavx512* and only called when
// ActiveIsa() says the CPU has them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "moe/kernels/isa/prefetch.h"
#include "moe/kernels/isa/row_ops.h"

#ifndef MOE_PREFETCH_FLOATS
#define MOE_PREFETCH_FLOATS 2048
#endif

namespace moe::kernels {
namespace {

inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 Sigmoid(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __mmask16 TailMask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}

void SwiGlu(const float* g, const float* u, float* a, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 uv = _mm512_maskz_loadu_ps(m, u + i);
    _mm512_mask_storeu_ps(a + i, m, _mm512_mul_ps(_mm512_mul_ps(gv, Sigmoid(gv)), uv));
  }
}

void SwiGluBackward(const float* g, const float* u, const float* da, float* dg, float* du,
                    int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 uv = _mm512_maskz_loadu_ps(m, u + i);
    const __m512 dav = _mm512_maskz_loadu_ps(m, da + i);
    const __m512 s = Sigmoid(gv);
    const __m512 silu = _mm512_mul_ps(gv, s);
    _mm512_mask_storeu_ps(du + i, m, _mm512_mul_ps(dav, silu));
    // silu'(g) = s * (1 + g * (1 - s))
    const __m512 dsilu = _mm512_mul_ps(s, _mm512_fmadd_ps(gv, _mm512_sub_ps(one, s), one));
    _mm512_mask_storeu_ps(dg + i, m, _mm512_mul_ps(_mm512_mul_ps(dav, uv), dsilu));
  }
}

// One weight row at a time against M rows of x, k unrolled 4 ways (16 floats each) into separate
// accumulators. Reading w as one sequential stream (rather than several rows side by side) is what
// lets the hardware prefetcher run at full bandwidth: this path is bound by reading the weights.
constexpr int64_t kPrefetch = MOE_PREFETCH_FLOATS;

// Lane r of the result = the sum of the 16 lanes of v[r].
inline __m512 Transpose16Sums(const __m512 v[16]) {
  __m512 a[8], b[4], c[2];
  // Within 128-bit lanes: pairs of vectors, then quads, each lane keeping partial sums.
  for (int i = 0; i < 8; ++i)
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {
    const __m512d lo =
        _mm512_unpacklo_pd(_mm512_castps_pd(a[2 * i]), _mm512_castps_pd(a[2 * i + 1]));
    const __m512d hi =
        _mm512_unpackhi_pd(_mm512_castps_pd(a[2 * i]), _mm512_castps_pd(a[2 * i + 1]));
    b[i] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
  }
  // b[i] lane L (128-bit) holds [v(4i)..v(4i+3)] partial sums over that lane; add across lanes.
  for (int i = 0; i < 2; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Short rows (k <= 256, whole vectors: attention scores against a head's keys): 16 dot products
// at a time, one accumulator each, then one transposing reduction for all 16 instead of a
// horizontal sum per row. G rows of x (query heads, 1 or 2) against R = 16 / G rows of w per
// block, the rows of w read one after another (a sequential stream: visiting a block's rows
// chunk by chunk instead halved the rate from memory), each loaded once for the G rows of x.
// x sits in registers for the common head dims (C = k / 16: up to 4 for pairs, 8 alone; C = 0
// reads x from L1 at each use). n: a multiple of 16. Each row prefetches the row ~6 KiB later
// (decode scores from memory, one core: ~1.3x with one query head a kv head, ~1.6x with four).
template <int G, int C>
void ShortRows(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t n, int64_t k,
                  float* y, int64_t ldy, bool accumulate) {
  constexpr int R = 16 / G;
  constexpr bool kInRegs = C > 0;  // C = 0: k / 16 chunks read from x (in L1) per use
  const int64_t kc = kInRegs ? C : k / 16;
  __m512 xv[G][kInRegs ? C : 1];
  if constexpr (kInRegs)
    for (int i = 0; i < G; ++i)
      for (int c = 0; c < C; ++c) xv[i][c] = _mm512_loadu_ps(x + i * ldx + 16 * c);
  auto xc = [&](int i, int64_t c) {
    if constexpr (kInRegs) return xv[i][c];
    else return _mm512_loadu_ps(x + i * ldx + 16 * c);
  };
  const auto* wend = reinterpret_cast<const uint8_t*>(w + n * ldw);
  const int64_t ahead = PrefetchRowDistance(4 * ldw);
  for (int64_t j = 0; j < n; j += R) {
    __m512 acc[16];
    const float* wr = w + j * ldw;
    for (int r = 0; r < R; ++r, wr += ldw) {
      PrefetchRowAhead(reinterpret_cast<const uint8_t*>(wr), 4 * k, ahead, wend);
      const __m512 w0 = _mm512_loadu_ps(wr);
      for (int i = 0; i < G; ++i) acc[i * R + r] = _mm512_mul_ps(w0, xc(i, 0));
      for (int64_t c = 1; c < kc; ++c) {
        const __m512 wv = _mm512_loadu_ps(wr + 16 * c);
        for (int i = 0; i < G; ++i) acc[i * R + r] = _mm512_fmadd_ps(wv, xc(i, c), acc[i * R + r]);
      }
    }
    const __m512 sums = Transpose16Sums(acc);  // lane i * R + r: row i of x, row j + r of w
    for (int i = 0; i < G; ++i) {
      float* out = y + i * ldy + j;
      if constexpr (R == 16) {
        _mm512_storeu_ps(out, accumulate ? _mm512_add_ps(sums, _mm512_loadu_ps(out)) : sums);
      } else {
        __m256 part = i == 0 ? _mm512_castps512_ps256(sums) : _mm512_extractf32x8_ps(sums, 1);
        if (accumulate) part = _mm256_add_ps(part, _mm256_loadu_ps(out));
        _mm256_storeu_ps(out, part);
      }
    }
  }
}

// All M rows of x through ShortRows (pairs where x fits in registers); returns the rows of w
// done (a multiple of 16).
template <int M>
int64_t MatMulNtShortK(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t n,
                       int64_t k, float* y, int64_t ldy, bool accumulate) {
  const int64_t n16 = n / 16 * 16;
  int i = 0;
  auto rows = [&]<int G>(std::integral_constant<int, G>) {
    const float* xi = x + i * ldx;
    float* yi = y + i * ldy;
    switch (k / 16) {
      case 1: ShortRows<G, 1>(xi, ldx, w, ldw, n16, k, yi, ldy, accumulate); break;
      case 2: ShortRows<G, 2>(xi, ldx, w, ldw, n16, k, yi, ldy, accumulate); break;
      case 3: ShortRows<G, 3>(xi, ldx, w, ldw, n16, k, yi, ldy, accumulate); break;
      case 4: ShortRows<G, 4>(xi, ldx, w, ldw, n16, k, yi, ldy, accumulate); break;
      case 8: ShortRows<G, G == 1 ? 8 : 0>(xi, ldx, w, ldw, n16, k, yi, ldy, accumulate); break;
      default: ShortRows<G, 0>(xi, ldx, w, ldw, n16, k, yi, ldy, accumulate); break;
    }
    i += G;
  };
  if (k <= 64)
    while (i + 2 <= M) rows(std::integral_constant<int, 2>{});
  while (i < M) rows(std::integral_constant<int, 1>{});
  return n16;
}

template <int M>
void MatMulNtSmallM(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t n, int64_t k,
                    float* y, int64_t ldy, bool accumulate) {
  if (k % 16 == 0 && k <= 256 && n >= 16) {
    const int64_t done = MatMulNtShortK<M>(x, ldx, w, ldw, n, k, y, ldy, accumulate);
    w += done * ldw;
    y += done;
    n -= done;
  }
  constexpr int U = M <= 4 ? 4 : 2;  // U*M accumulators out of 32 zmm registers
  const int64_t k64 = k / (16 * U) * (16 * U), k16 = k / 16 * 16;
  const __mmask16 tail = TailMask(k - k16);
  for (int64_t j = 0; j < n; ++j) {
    const float* wr = w + j * ldw;
    __m512 acc[U][M];
    for (int u = 0; u < U; ++u)
      for (int i = 0; i < M; ++i) acc[u][i] = _mm512_setzero_ps();
    int64_t p = 0;
    for (; p < k64; p += 16 * U) {
      for (int u = 0; u < U; ++u) {
        // Weights are one long stream (rows back to back): prefetch kPrefetch floats ahead, past
        // page boundaries where the hardware prefetcher stops.
        _mm_prefetch(reinterpret_cast<const char*>(wr + p + 16 * u + kPrefetch), _MM_HINT_T0);
        const __m512 wv = _mm512_loadu_ps(wr + p + 16 * u);
        for (int i = 0; i < M; ++i)
          acc[u][i] = _mm512_fmadd_ps(_mm512_loadu_ps(x + i * ldx + p + 16 * u), wv, acc[u][i]);
      }
    }
    for (; p < k16; p += 16) {
      const __m512 wv = _mm512_loadu_ps(wr + p);
      for (int i = 0; i < M; ++i) acc[0][i] = _mm512_fmadd_ps(_mm512_loadu_ps(x + i * ldx + p), wv, acc[0][i]);
    }
    if (k16 < k) {
      const __m512 wv = _mm512_maskz_loadu_ps(tail, wr + k16);
      for (int i = 0; i < M; ++i)
        acc[1][i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, x + i * ldx + k16), wv, acc[1][i]);
    }
    for (int i = 0; i < M; ++i) {
      __m512 sum = acc[0][i];
      for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[u][i]);
      const float v = _mm512_reduce_add_ps(sum);
      float& out = y[i * ldy + j];
      out = accumulate ? out + v : v;
    }
  }
}

void MatMulNtSmall(const float* x, int64_t ldx, int64_t m, const float* w, int64_t ldw, int64_t n,
                   int64_t k, float* y, int64_t ldy, bool accumulate) {
  while (m > 0) {
    const int64_t mb = m >= 8 ? 8 : m;
    switch (mb) {
      case 8: MatMulNtSmallM<8>(x, ldx, w, ldw, n, k, y, ldy, accumulate); break;
      case 7: MatMulNtSmallM<7>(x, ldx, w, ldw, n, k, y, ldy, accumulate); break;
      case 6: MatMulNtSmallM<6>(x, ldx, w, ldw, n, k, y, ldy, accumulate); break;
      case 5: MatMulNtSmallM<5>(x, ldx, w, ldw, n, k, y, ldy, accumulate); break;
      case 4: MatMulNtSmallM<4>(x, ldx, w, ldw, n, k, y, ldy, accumulate); break;
      case 3: MatMulNtSmallM<3>(x, ldx, w, ldw, n, k, y, ldy, accumulate); break;
      case 2: MatMulNtSmallM<2>(x, ldx, w, ldw, n, k, y, ldy, accumulate); break;
      default: MatMulNtSmallM<1>(x, ldx, w, ldw, n, k, y, ldy, accumulate); break;
    }
    x += mb * ldx;
    y += mb * ldy;
    m -= mb;
  }
}

// R rows of x against 64 columns of w at a time (4 vectors, masked at the right edge): each row
// of w is loaded once for the R rows, R * 4 accumulators. Prefetches the same columns of the row
// ~6 KiB later (decode attention's values: one contiguous stream a kv head).
template <int R>
void MatMulNnRows(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t k, int64_t n,
                  float* y, int64_t ldy, bool accumulate) {
  const auto* wend = reinterpret_cast<const uint8_t*>(w + k * ldw);
  const int64_t ahead = PrefetchRowDistance(4 * ldw);
  for (int64_t c = 0; c < n; c += 64) {
    const int64_t cbytes = 4 * std::min<int64_t>(64, n - c);
    __mmask16 mask[4];
    for (int v = 0; v < 4; ++v) mask[v] = n - c - 16 * v > 0 ? TailMask(n - c - 16 * v) : 0;
    __m512 acc[R][4];
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < 4; ++v)
        acc[i][v] = accumulate ? _mm512_maskz_loadu_ps(mask[v], y + i * ldy + c + 16 * v)
                               : _mm512_setzero_ps();
    for (int64_t p = 0; p < k; ++p) {
      PrefetchRowAhead(reinterpret_cast<const uint8_t*>(w + p * ldw + c), cbytes, ahead, wend);
      __m512 wv[4];
      for (int v = 0; v < 4; ++v) wv[v] = _mm512_maskz_loadu_ps(mask[v], w + p * ldw + c + 16 * v);
      for (int i = 0; i < R; ++i) {
        const __m512 a = _mm512_set1_ps(x[i * ldx + p]);
        for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_fmadd_ps(a, wv[v], acc[i][v]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < 4; ++v) _mm512_mask_storeu_ps(y + i * ldy + c + 16 * v, mask[v], acc[i][v]);
  }
}

void MatMulNnSmall(const float* x, int64_t ldx, int64_t m, const float* w, int64_t ldw, int64_t k,
                   int64_t n, float* y, int64_t ldy, bool accumulate) {
  while (m > 0) {
    const int64_t r = m >= 4 ? 4 : m;
    switch (r) {
      case 4: MatMulNnRows<4>(x, ldx, w, ldw, k, n, y, ldy, accumulate); break;
      case 3: MatMulNnRows<3>(x, ldx, w, ldw, k, n, y, ldy, accumulate); break;
      case 2: MatMulNnRows<2>(x, ldx, w, ldw, k, n, y, ldy, accumulate); break;
      default: MatMulNnRows<1>(x, ldx, w, ldw, k, n, y, ldy, accumulate); break;
    }
    x += r * ldx;
    y += r * ldy;
    m -= r;
  }
}

float Sum(const float* x, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 48));
  }
  for (; i < n; i += 16) a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(TailMask(n - i), x + i));
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// Scale and max, exp and sum, normalise: three passes of 16 lanes, masked tails.
float Softmax(float* s, int64_t n, float scale) {
  const __m512 sc = _mm512_set1_ps(scale);
  __m512 mv = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + i), sc);
    _mm512_mask_storeu_ps(s + i, m, v);
    mv = _mm512_mask_max_ps(mv, m, mv, v);
  }
  const float mx = _mm512_reduce_max_ps(mv);
  const __m512 mb = _mm512_set1_ps(mx);
  __m512 sv = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 e =
        _mm512_maskz_mov_ps(m, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), mb)));
    _mm512_mask_storeu_ps(s + i, m, e);
    sv = _mm512_add_ps(sv, e);
  }
  const float sum = _mm512_reduce_add_ps(sv);
  const __m512 iv = _mm512_set1_ps(1.0f / sum);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(s + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + i), iv));
  }
  return mx + std::log(sum);
}

}  // namespace

const RowOps& Avx512RowOps() {
  static const RowOps ops{Isa::kAvx512, SwiGlu, SwiGluBackward, MatMulNtSmall, MatMulNnSmall, Sum, Softmax};
  return ops;
}

}  // namespace moe::kernels
