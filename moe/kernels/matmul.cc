#include "moe/kernels/matmul.h"

#include <cblas.h>

#include "moe/core/cpu.h"
#include "moe/kernels/isa/gemm_bf16.h"
#include "moe/kernels/isa/row_ops.h"

namespace moe::kernels {

namespace {

// C = beta * C: the whole product when the inner dimension K is 0. BLAS is not called then: the
// natural leading dimension of a [M,0] or [0,N] operand is 0, and the BLAS standard requires
// lda/ldb >= max(1, rows), so a strict BLAS rejects the call and leaves C untouched. beta == 0
// ignores the old C (NaN does not propagate), as in BLAS.
template <typename T>
void ScaleC(int64_t m, int64_t n, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    T* row = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) row[j] = beta == T(0) ? T(0) : beta * row[j];
  }
}

}  // namespace

bool UsesBf16Kernel(int64_t m, int64_t n, int64_t k) {
  return m >= 16 && n >= 16 && m * n * k >= int64_t{32 * 32 * 32};
}

void GemmBf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
              int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  CheckBf16Matmul("matmul");
  if (m == 0 || n == 0) return;
  if (k == 0) return ScaleC(m, n, beta, c, ldc);
  GemmBf16Avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <>
void Gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                 MatmulPrecision precision) {
  if (m == 0 || n == 0) return;
  if (k == 0) return ScaleC(m, n, beta, c, ldc);
  if (precision == MatmulPrecision::kBf16 && UsesBf16Kernel(m, n, k))
    return GemmBf16(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

template <>
void Gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                  int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc,
                  MatmulPrecision) {
  if (m == 0 || n == 0) return;
  if (k == 0) return ScaleC(m, n, beta, c, ldc);
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

template <typename T>
void MatMulNT(const T* x, int64_t ldx, int64_t m, const T* w, int64_t ldw, int64_t n, int64_t k,
              T* y, int64_t ldy, bool accumulate, MatmulPrecision precision) {
  if (m == 0 || n == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (m <= kSmallM) {
      ActiveRowOps().matmul_nt_small(x, ldx, m, w, ldw, n, k, y, ldy, accumulate);
      return;
    }
  }
  Gemm<T>(false, true, m, n, k, T(1), x, ldx, w, ldw, accumulate ? T(1) : T(0), y, ldy, precision);
}

template <typename T>
void LinearForward(CView<T> x, CView<T> w, View<T> y, Context& ctx) {
  const int64_t t = x.rows(), k = x.cols(), n = w.rows();
  MOE_CHECK(w.cols() == k && y.rows() == t && y.cols() == n, "linear",
            "x {} * w {}^T does not fit y {}", x.shape.str(), w.shape.str(), y.shape.str());
  const MatmulPrecision prec = ctx.matmul_precision();
  // Split the output columns (weight rows) when there are few tokens or the weight is the larger
  // operand, else the tokens: sgemm packs both operands of each call, so the split one is packed
  // once in all and the other once per thread (a batch of 64 tokens against a 512 x 1024 expert
  // weight split by tokens had each thread pack the whole weight, more time than the multiplies).
  if (t <= kSmallM * ctx.threads() || n >= t) {
    ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int) {
      MatMulNT<T>(x.data, k, t, w.data + b * k, k, e - b, k, y.data + b, n, false, prec);
    }, 16);
  } else {
    ParallelForRange(t, ctx, [&](int64_t b, int64_t e, int) {
      MatMulNT<T>(x.data + b * k, k, e - b, w.data, k, n, k, y.data + b * n, n, false, prec);
    }, 4);
  }
}

template <typename T>
void LinearBackward(CView<T> dy, CView<T> x, CView<T> w, View<T> dx, View<T> dw, Context& ctx) {
  const int64_t t = x.rows(), k = x.cols(), n = w.rows();
  MOE_CHECK(w.cols() == k && dy.rows() == t && dy.cols() == n, "linear",
            "dy {} does not fit x {} and w {}", dy.shape.str(), x.shape.str(), w.shape.str());
  const MatmulPrecision prec = ctx.matmul_precision();
  if (!dx.empty()) {
    MOE_CHECK(dx.rows() == t && dx.cols() == k, "linear", "dx {} expected [{},{}]", dx.shape.str(), t, k);
    ParallelForRange(t, ctx, [&](int64_t b, int64_t e, int) {
      Gemm<T>(false, false, e - b, k, n, T(1), dy.data + b * n, n, w.data, k, T(1), dx.data + b * k, k, prec);
    });
  }
  if (!dw.empty()) {
    MOE_CHECK(dw.rows() == n && dw.cols() == k, "linear", "dw {} expected [{},{}]", dw.shape.str(), n, k);
    ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int) {
      Gemm<T>(true, false, e - b, k, t, T(1), dy.data + b, n, x.data, k, T(1), dw.data + b * k, k, prec);
    });
  }
}

#define MOE_INSTANTIATE(T)                                                                       \
  template void MatMulNT<T>(const T*, int64_t, int64_t, const T*, int64_t, int64_t, int64_t, T*, \
                            int64_t, bool, MatmulPrecision);                                     \
  template void LinearForward<T>(CView<T>, CView<T>, View<T>, Context&);                        \
  template void LinearBackward<T>(CView<T>, CView<T>, CView<T>, View<T>, View<T>, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::kernels
