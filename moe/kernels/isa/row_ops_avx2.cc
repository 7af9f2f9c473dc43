// AVX2 + FMA row kernels. Compiled with -mavx2 -mfma; called only when the CPU has them.
#include <immintrin.h>

#include <cmath>

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

template <int M>
void MatMulNtSmallM(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t n, int64_t k,
                    float* y, int64_t ldy, bool accumulate) {
  constexpr int R = M <= 2 ? 4 : (M <= 4 ? 2 : 1);
  const int64_t kv = k / 8 * 8;
  int64_t j = 0;
  for (; j + R <= n; j += R) {
    __m256 acc[R][M];
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < M; ++i) acc[r][i] = _mm256_setzero_ps();
    for (int64_t p = 0; p < kv; p += 8) {
      for (int r = 0; r < R; ++r) {
        const __m256 wv = _mm256_loadu_ps(w + (j + r) * ldw + p);
        for (int i = 0; i < M; ++i)
          acc[r][i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * ldx + p), wv, acc[r][i]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < M; ++i) {
        float s = HSum(acc[r][i]);
        for (int64_t p = kv; p < k; ++p) s += x[i * ldx + p] * w[(j + r) * ldw + p];
        float& out = y[i * ldy + j + r];
        out = accumulate ? out + s : s;
      }
  }
  for (; j < n; ++j) {
    for (int i = 0; i < M; ++i) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t p = 0; p < kv; p += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * ldx + p), _mm256_loadu_ps(w + j * ldw + p), acc);
      float s = HSum(acc);
      for (int64_t p = kv; p < k; ++p) s += x[i * ldx + p] * w[j * ldw + p];
      float& out = y[i * ldy + j];
      out = accumulate ? out + s : s;
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

}  // namespace

const RowOps& Avx2RowOps() {
  static const RowOps ops{Isa::kAvx2, SwiGlu, SwiGluBackward, MatMulNtSmall};
  return ops;
}

}  // namespace moe::kernels
