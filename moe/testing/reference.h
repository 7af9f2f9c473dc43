// Scalar reference implementations in double, written from the math rather than from our kernels:
// clear and obviously correct, never fast. Tests compare the f32 kernels against these, and check
// these backwards against central differences of these forwards.
//
// All arrays are dense row-major; each function names its shapes. Results are returned by value.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/testing/compare.h"

namespace moe::testing {

// Widens any buffer to double (the references take double inputs).
template <typename T>
std::vector<double> ToDouble(const T* p, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<double>(p[i]);
  return out;
}

// ---- matmul ------------------------------------------------------------------------------------

// y[m, n] = sum_p x[m, p] * w[n, p]   (x [M,K], w [N,K] in the PyTorch Linear layout)
std::vector<double> RefMatMulNT(const double* x, const double* w, int64_t m, int64_t n, int64_t k);

struct RefLinearGrads {
  std::vector<double> dx;  // [M,K] = dy * w
  std::vector<double> dw;  // [N,K] = dy^T * x
};
// Gradients of y = x w^T given dy [M,N].
RefLinearGrads RefMatMulNTBackward(const double* dy, const double* x, const double* w, int64_t m,
                                   int64_t n, int64_t k);

// C = alpha * op(A) * op(B) + beta * C on row-major buffers with leading dimensions; op(A) is
// [m,k], op(B) is [k,n]. beta == 0 ignores the old C (NaN in C does not propagate).
void RefGemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
             const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
             int64_t ldc);

// Tolerance for an f32 length-k dot product whose inputs are bounded by x_max and w_max: the
// per-element atol grows with k * eps_f32 * x_max * w_max (worst-case rounding), rtol is small.
Tolerance MatMulTolerance(int64_t k, double x_max, double w_max);

// ---- activations -------------------------------------------------------------------------------

// 1 / (1 + e^-x), evaluated so that neither tail overflows.
double RefSigmoid(double x);
// x * sigmoid(x)
double RefSilu(double x);

// y[i] = sigmoid(x[i])
std::vector<double> RefSigmoidForward(const double* x, int64_t n);
// dx[i] = dy[i] * y[i] * (1 - y[i])   (y = the forward output)
std::vector<double> RefSigmoidBackward(const double* y, const double* dy, int64_t n);

// y[t, :] = exp(x[t, :]) / sum exp(x[t, :])   (x, y [T,E])
std::vector<double> RefSoftmax(const double* x, int64_t t, int64_t e);
// log sum_j exp(x[j]) of one row.
double RefLogSumExp(const double* x, int64_t e);
// dx[t, j] = sum_i dy[t, i] * dy_i/dx_j with the full Jacobian y_i (delta_ij - y_j).
std::vector<double> RefSoftmaxBackward(const double* y, const double* dy, int64_t t, int64_t e);

// SwiGLU on h[t] = [g (F) | u (F)]: a[t, i] = silu(g[i]) * u[i].   h [T,2F] -> a [T,F]
std::vector<double> RefSwiGlu(const double* h, int64_t t, int64_t f);
// dh [T,2F]: dg = da * u * silu'(g), du = da * silu(g).
std::vector<double> RefSwiGluBackward(const double* h, const double* da, int64_t t, int64_t f);

// ---- RMSNorm -----------------------------------------------------------------------------------

struct RefRmsNormOut {
  std::vector<double> y;     // [T,D] = x * rstd * w
  std::vector<double> rstd;  // [T]   = 1 / sqrt(mean x^2 + eps)
};
RefRmsNormOut RefRmsNorm(const double* x, const double* w, int64_t t, int64_t d, double eps);

struct RefRmsNormGrads {
  std::vector<double> dx;  // [T,D]
  std::vector<double> dw;  // [D]
};
// From the full per-row Jacobian dy_i/dx_j = w_i (rstd delta_ij - rstd^3 x_i x_j / D).
RefRmsNormGrads RefRmsNormBackward(const double* dy, const double* x, const double* w, int64_t t,
                                   int64_t d, double eps);

// ---- top-k -------------------------------------------------------------------------------------

// Indices of the k largest entries of each row of x [T,N], descending; ties go to the lower index.
// Result [T,k].
std::vector<int32_t> RefTopK(const double* x, int64_t t, int64_t n, int64_t k);

}  // namespace moe::testing
