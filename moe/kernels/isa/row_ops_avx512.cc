// AVX-512 (F/BW/VL/DQ) row kernels. This file is compiled with -mavx512* and only called when
// ActiveIsa() says the CPU has them.
#include <immintrin.h>

#include "moe/kernels/isa/row_ops.h"

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

// M rows of x against R rows of w at a time; accumulators stay in registers.
template <int M>
void MatMulNtSmallM(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t n, int64_t k,
                    float* y, int64_t ldy, bool accumulate) {
  constexpr int R = M <= 4 ? 4 : 2;
  int64_t j = 0;
  for (; j + R <= n; j += R) {
    __m512 acc[R][M];
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < M; ++i) acc[r][i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p += 16) {
      const __mmask16 msk = TailMask(k - p);
      __m512 xv[M];
      for (int i = 0; i < M; ++i) xv[i] = _mm512_maskz_loadu_ps(msk, x + i * ldx + p);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = _mm512_maskz_loadu_ps(msk, w + (j + r) * ldw + p);
        for (int i = 0; i < M; ++i) acc[r][i] = _mm512_fmadd_ps(xv[i], wv, acc[r][i]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < M; ++i) {
        const float s = _mm512_reduce_add_ps(acc[r][i]);
        float& out = y[i * ldy + j + r];
        out = accumulate ? out + s : s;
      }
  }
  for (; j < n; ++j) {
    __m512 acc[M];
    for (int i = 0; i < M; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p += 16) {
      const __mmask16 msk = TailMask(k - p);
      const __m512 wv = _mm512_maskz_loadu_ps(msk, w + j * ldw + p);
      for (int i = 0; i < M; ++i)
        acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(msk, x + i * ldx + p), wv, acc[i]);
    }
    for (int i = 0; i < M; ++i) {
      const float s = _mm512_reduce_add_ps(acc[i]);
      float& out = y[i * ldy + j];
      out = accumulate ? out + s : s;
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

}  // namespace

const RowOps& Avx512RowOps() {
  static const RowOps ops{Isa::kAvx512, SwiGlu, SwiGluBackward, MatMulNtSmall};
  return ops;
}

}  // namespace moe::kernels
