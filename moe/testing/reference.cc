#include "moe/testing/reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moe::testing {
namespace {

size_t Idx(int64_t i) { return static_cast<size_t>(i); }

}  // namespace

std::vector<double> RefMatMulNT(const double* x, const double* w, int64_t m, int64_t n, int64_t k) {
  std::vector<double> y(Idx(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += x[i * k + p] * w[j * k + p];
      y[Idx(i * n + j)] = s;
    }
  return y;
}

RefLinearGrads RefMatMulNTBackward(const double* dy, const double* x, const double* w, int64_t m,
                                   int64_t n, int64_t k) {
  RefLinearGrads g;
  g.dx.assign(Idx(m * k), 0.0);
  g.dw.assign(Idx(n * k), 0.0);
  // y[i,j] = sum_p x[i,p] w[j,p]  =>  dy/dx[i,p] = w[j,p],  dy/dw[j,p] = x[i,p]
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double d = dy[i * n + j];
      for (int64_t p = 0; p < k; ++p) {
        g.dx[Idx(i * k + p)] += d * w[j * k + p];
        g.dw[Idx(j * k + p)] += d * x[i * k + p];
      }
    }
  return g;
}

void RefGemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
             const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
             int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double av = trans_a ? a[p * lda + i] : a[i * lda + p];
        const double bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
        s += av * bv;
      }
      double& out = c[i * ldc + j];
      out = beta == 0.0 ? alpha * s : alpha * s + beta * out;
    }
}

Tolerance MatMulTolerance(int64_t k, double x_max, double w_max) {
  constexpr double kEpsF32 = 0x1.0p-24;  // unit roundoff of f32
  Tolerance tol;
  tol.atol = 4.0 * static_cast<double>(std::max<int64_t>(k, 1)) * kEpsF32 * x_max * w_max + 1e-30;
  tol.rtol = 1e-6;
  tol.nmse = 1e-7;
  return tol;
}

double RefSigmoid(double x) {
  // Each branch only exponentiates a non-positive number.
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

double RefSilu(double x) { return x * RefSigmoid(x); }

std::vector<double> RefSigmoidForward(const double* x, int64_t n) {
  std::vector<double> y(Idx(n));
  for (int64_t i = 0; i < n; ++i) y[Idx(i)] = RefSigmoid(x[i]);
  return y;
}

std::vector<double> RefSigmoidBackward(const double* y, const double* dy, int64_t n) {
  std::vector<double> dx(Idx(n));
  for (int64_t i = 0; i < n; ++i) dx[Idx(i)] = dy[i] * y[i] * (1.0 - y[i]);
  return dx;
}

std::vector<double> RefSoftmax(const double* x, int64_t t, int64_t e) {
  std::vector<double> y(Idx(t * e));
  for (int64_t r = 0; r < t; ++r) {
    const double* xr = x + r * e;
    const double mx = *std::max_element(xr, xr + e);
    double sum = 0;
    for (int64_t j = 0; j < e; ++j) sum += std::exp(xr[j] - mx);
    for (int64_t j = 0; j < e; ++j) y[Idx(r * e + j)] = std::exp(xr[j] - mx) / sum;
  }
  return y;
}

double RefLogSumExp(const double* x, int64_t e) {
  const double mx = *std::max_element(x, x + e);
  double sum = 0;
  for (int64_t j = 0; j < e; ++j) sum += std::exp(x[j] - mx);
  return mx + std::log(sum);
}

std::vector<double> RefSoftmaxBackward(const double* y, const double* dy, int64_t t, int64_t e) {
  std::vector<double> dx(Idx(t * e), 0.0);
  for (int64_t r = 0; r < t; ++r) {
    const double* yr = y + r * e;
    const double* dyr = dy + r * e;
    for (int64_t j = 0; j < e; ++j) {
      double s = 0;
      for (int64_t i = 0; i < e; ++i) {
        const double jac = yr[i] * ((i == j ? 1.0 : 0.0) - yr[j]);  // dy_i / dx_j
        s += dyr[i] * jac;
      }
      dx[Idx(r * e + j)] = s;
    }
  }
  return dx;
}

std::vector<double> RefSwiGlu(const double* h, int64_t t, int64_t f) {
  std::vector<double> a(Idx(t * f));
  for (int64_t r = 0; r < t; ++r) {
    const double* g = h + r * 2 * f;
    const double* u = g + f;
    for (int64_t i = 0; i < f; ++i) a[Idx(r * f + i)] = RefSilu(g[i]) * u[i];
  }
  return a;
}

std::vector<double> RefSwiGluBackward(const double* h, const double* da, int64_t t, int64_t f) {
  std::vector<double> dh(Idx(t * 2 * f));
  for (int64_t r = 0; r < t; ++r) {
    const double* g = h + r * 2 * f;
    const double* u = g + f;
    for (int64_t i = 0; i < f; ++i) {
      const double s = RefSigmoid(g[i]);
      // d/dg [g s(g)] = s + g s (1 - s)
      const double dsilu = s + g[i] * s * (1.0 - s);
      const double d = da[r * f + i];
      dh[Idx(r * 2 * f + i)] = d * u[i] * dsilu;
      dh[Idx(r * 2 * f + f + i)] = d * RefSilu(g[i]);
    }
  }
  return dh;
}

RefRmsNormOut RefRmsNorm(const double* x, const double* w, int64_t t, int64_t d, double eps) {
  RefRmsNormOut out;
  out.y.resize(Idx(t * d));
  out.rstd.resize(Idx(t));
  for (int64_t r = 0; r < t; ++r) {
    const double* xr = x + r * d;
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
    const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
    out.rstd[Idx(r)] = rstd;
    for (int64_t j = 0; j < d; ++j) out.y[Idx(r * d + j)] = xr[j] * rstd * w[j];
  }
  return out;
}

RefRmsNormGrads RefRmsNormBackward(const double* dy, const double* x, const double* w, int64_t t,
                                   int64_t d, double eps) {
  RefRmsNormGrads g;
  g.dx.assign(Idx(t * d), 0.0);
  g.dw.assign(Idx(d), 0.0);
  const double dd = static_cast<double>(d);
  for (int64_t r = 0; r < t; ++r) {
    const double* xr = x + r * d;
    const double* dyr = dy + r * d;
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
    const double rstd = 1.0 / std::sqrt(ss / dd + eps);
    // d rstd / d x_j = -rstd^3 x_j / D, so dy_i/dx_j = w_i (rstd [i==j] - rstd^3 x_i x_j / D).
    for (int64_t j = 0; j < d; ++j) {
      double s = 0;
      for (int64_t i = 0; i < d; ++i) {
        const double jac =
            w[i] * (rstd * (i == j ? 1.0 : 0.0) - rstd * rstd * rstd * xr[i] * xr[j] / dd);
        s += dyr[i] * jac;
      }
      g.dx[Idx(r * d + j)] = s;
      g.dw[Idx(j)] += dyr[j] * xr[j] * rstd;  // dy_j/dw_j = x_j rstd
    }
  }
  return g;
}

std::vector<int32_t> RefTopK(const double* x, int64_t t, int64_t n, int64_t k) {
  std::vector<int32_t> out(Idx(t * k));
  std::vector<int32_t> order(Idx(n));
  for (int64_t r = 0; r < t; ++r) {
    const double* xr = x + r * n;
    std::iota(order.begin(), order.end(), 0);
    // A stable sort by descending value keeps equal values in index order.
    std::stable_sort(order.begin(), order.end(),
                     [xr](int32_t a, int32_t b) { return xr[a] > xr[b]; });
    std::copy(order.begin(), order.begin() + k, out.begin() + r * k);
  }
  return out;
}

}  // namespace moe::testing
