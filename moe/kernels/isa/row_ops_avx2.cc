// AVX2 + FMA row kernels. Compiled with -mavx2 -mfma; called only when the CPU has them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "moe/kernels/isa/prefetch.h"
#include "moe/kernels/isa/row_ops.h"

namespace moe::kernels {
namespace {

inline __m256 Exp(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline __m256 Sigmoid(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, Exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

void SwiGlu(const float* g, const float* u, float* a, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_mul_ps(gv, Sigmoid(gv)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) a[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void SwiGluBackward(const float* g, const float* u, const float* da, float* dg, float* du,
                    int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 uv = _mm256_loadu_ps(u + i);
    const __m256 dav = _mm256_loadu_ps(da + i);
    const __m256 s = Sigmoid(gv);
    _mm256_storeu_ps(du + i, _mm256_mul_ps(dav, _mm256_mul_ps(gv, s)));
    const __m256 dsilu = _mm256_mul_ps(s, _mm256_fmadd_ps(gv, _mm256_sub_ps(one, s), one));
    _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(dav, uv), dsilu));
  }
  for (; i < n; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-g[i]));
    du[i] = da[i] * g[i] * s;
    dg[i] = da[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}

inline float HSum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

constexpr int64_t kShortK = 256;  // rows this short (attention's head dims) prefetch a row ahead

// One weight row at a time against M rows of x, k unrolled U ways (8 floats each): w is read as one
// sequential stream, which keeps the hardware prefetcher at full bandwidth (see the AVX-512 file).
template <int M>
void MatMulNtSmallM(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t n, int64_t k,
                    float* y, int64_t ldy, bool accumulate) {
  constexpr int U = M <= 2 ? 4 : 2;  // U*M accumulators out of 16 ymm registers
  const int64_t kb = k / (8 * U) * (8 * U), k8 = k / 8 * 8;
  const auto* wend = reinterpret_cast<const uint8_t*>(w + n * ldw);
  const int64_t ahead = PrefetchRowDistance(4 * ldw);
  for (int64_t j = 0; j < n; ++j) {
    const float* wr = w + j * ldw;
    if (k <= kShortK) PrefetchRowAhead(reinterpret_cast<const uint8_t*>(wr), 4 * k, ahead, wend);
    __m256 acc[U][M];
    for (int u = 0; u < U; ++u)
      for (int i = 0; i < M; ++i) acc[u][i] = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p < kb; p += 8 * U) {
      for (int u = 0; u < U; ++u) {
        const __m256 wv = _mm256_loadu_ps(wr + p + 8 * u);
        for (int i = 0; i < M; ++i)
          acc[u][i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * ldx + p + 8 * u), wv, acc[u][i]);
      }
    }
    for (; p < k8; p += 8) {
      const __m256 wv = _mm256_loadu_ps(wr + p);
      for (int i = 0; i < M; ++i) acc[0][i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * ldx + p), wv, acc[0][i]);
    }
    for (int i = 0; i < M; ++i) {
      __m256 sum = acc[0][i];
      for (int u = 1; u < U; ++u) sum = _mm256_add_ps(sum, acc[u][i]);
      float v = HSum(sum);
      for (int64_t q = k8; q < k; ++q) v += x[i * ldx + q] * wr[q];
      float& out = y[i * ldy + j];
      out = accumulate ? out + v : v;
    }
  }
}

void MatMulNtSmall(const float* x, int64_t ldx, int64_t m, const float* w, int64_t ldw, int64_t n,
                   int64_t k, float* y, int64_t ldy, bool accumulate) {
  while (m > 0) {
    const int64_t mb = m >= 4 ? 4 : m;
    switch (mb) {
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

// R rows of x against 32 columns of w at a time (4 vectors; lanes past n masked off): each row
// of w is loaded once for the R rows, R * 4 accumulators out of 16 registers.
template <int R>
void MatMulNnRows(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t k, int64_t n,
                  float* y, int64_t ldy, bool accumulate) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const auto* wend = reinterpret_cast<const uint8_t*>(w + k * ldw);
  const int64_t ahead = PrefetchRowDistance(4 * ldw);
  for (int64_t c = 0; c < n; c += 32) {
    const int64_t cbytes = 4 * std::min<int64_t>(32, n - c);
    __m256i mask[4];
    for (int v = 0; v < 4; ++v) {
      const int64_t left = std::clamp<int64_t>(n - c - 8 * v, 0, 8);
      mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)), iota);
    }
    __m256 acc[R][4];
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < 4; ++v)
        acc[i][v] = accumulate ? _mm256_maskload_ps(y + i * ldy + c + 8 * v, mask[v])
                               : _mm256_setzero_ps();
    for (int64_t p = 0; p < k; ++p) {
      PrefetchRowAhead(reinterpret_cast<const uint8_t*>(w + p * ldw + c), cbytes, ahead, wend);
      __m256 wv[4];
      for (int v = 0; v < 4; ++v) wv[v] = _mm256_maskload_ps(w + p * ldw + c + 8 * v, mask[v]);
      for (int i = 0; i < R; ++i) {
        const __m256 a = _mm256_set1_ps(x[i * ldx + p]);
        for (int v = 0; v < 4; ++v) acc[i][v] = _mm256_fmadd_ps(a, wv[v], acc[i][v]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < 4; ++v) _mm256_maskstore_ps(y + i * ldy + c + 8 * v, mask[v], acc[i][v]);
  }
}

void MatMulNnSmall(const float* x, int64_t ldx, int64_t m, const float* w, int64_t ldw, int64_t k,
                   int64_t n, float* y, int64_t ldy, bool accumulate) {
  for (; m >= 2; m -= 2, x += 2 * ldx, y += 2 * ldy)
    MatMulNnRows<2>(x, ldx, w, ldw, k, n, y, ldy, accumulate);
  if (m == 1) MatMulNnRows<1>(x, ldx, w, ldw, k, n, y, ldy, accumulate);
}

float Sum(const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
  }
  float s = HSum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += x[i];
  return s;
}

// Scale and max, exp and sum, normalise: three passes of 8 lanes, scalar tails.
float Softmax(float* s, int64_t n, float scale) {
  const __m256 sc = _mm256_set1_ps(scale);
  __m256 mv = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(s + i), sc);
    _mm256_storeu_ps(s + i, v);
    mv = _mm256_max_ps(mv, v);
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  float mx = _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1)));
  for (int64_t j = i; j < n; ++j) {
    s[j] *= scale;
    mx = std::max(mx, s[j]);
  }
  const __m256 mb = _mm256_set1_ps(mx);
  __m256 sv = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(s + i), mb));
    _mm256_storeu_ps(s + i, e);
    sv = _mm256_add_ps(sv, e);
  }
  float sum = HSum(sv);
  for (int64_t j = i; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = 1.0f / sum;
  const __m256 iv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), iv));
  for (; i < n; ++i) s[i] *= inv;
  return mx + std::log(sum);
}

}  // namespace

const RowOps& Avx2RowOps() {
  static const RowOps ops{Isa::kAvx2, SwiGlu, SwiGluBackward, MatMulNtSmall, MatMulNnSmall, Sum, Softmax};
  return ops;
}

}  // namespace moe::kernels
