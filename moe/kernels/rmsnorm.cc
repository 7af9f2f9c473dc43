#include "moe/kernels/rmsnorm.h"

#include <cmath>
#include <vector>

namespace moe::kernels {

namespace {

// The sum of x[j]^2 in 16 interleaved partial sums, added pairwise at the end: independent chains
// the compiler can vectorise (one chain is a dependent add per element, the decode path's serial
// cost between parallel regions), and a smaller rounding error than one running sum.
template <typename T>
T SumOfSquares(const T* x, int64_t d) {
  constexpr int64_t kLanes = 16;
  T acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += x[j + l] * x[j + l];
  for (int64_t l = 0; j < d; ++j, ++l) acc[l] += x[j] * x[j];
  for (int64_t w = kLanes / 2; w > 0; w /= 2)
    for (int64_t l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

}  // namespace

template <typename T>
void RmsNormForward(CView<T> x, CView<T> w, T eps, View<T> y, View<T> rstd, Context& ctx) {
  const int64_t t = x.rows(), d = x.cols();
  MOE_CHECK(w.numel() == d && y.shape == x.shape && rstd.numel() == t, "rmsnorm",
            "x {}, w {}, y {}, rstd {} do not fit", x.shape.str(), w.shape.str(), y.shape.str(),
            rstd.shape.str());
  MOE_CHECK(eps >= 0, "rmsnorm", "eps {} is negative", static_cast<double>(eps));
  ParallelFor(t, ctx, [&](int64_t i, int) {
    const T* xr = x.row(i);
    const T ss = SumOfSquares(xr, d);
    const T r = T(1) / std::sqrt(ss / static_cast<T>(d) + eps);
    rstd[i] = r;
    T* yr = y.row(i);
    for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] * r * w[j];
  });
}

template <typename T>
void RmsNormBackward(CView<T> dy, CView<T> x, CView<T> w, CView<T> rstd, View<T> dx, View<T> dw,
                     Context& ctx) {
  const int64_t t = x.rows(), d = x.cols();
  MOE_CHECK(dy.shape == x.shape && dx.shape == x.shape && w.numel() == d && dw.numel() == d &&
                rstd.numel() == t,
            "rmsnorm", "dy {}, x {}, w {}, rstd {}, dx {}, dw {} do not fit", dy.shape.str(),
            x.shape.str(), w.shape.str(), rstd.shape.str(), dx.shape.str(), dw.shape.str());
  const int workers = ctx.threads();
  std::vector<T> partial(static_cast<size_t>(workers * d), T(0));
  ParallelForRange(t, ctx, [&](int64_t b, int64_t e, int worker) {
    T* pw = partial.data() + worker * d;
    for (int64_t i = b; i < e; ++i) {
      const T* xr = x.row(i);
      const T* dyr = dy.row(i);
      const T r = rstd[i];
      // y = x r w;  dx = r (w dy) - x r^3/d * sum_j(w dy x)
      T dot = 0;
      for (int64_t j = 0; j < d; ++j) dot += w[j] * dyr[j] * xr[j];
      const T c = dot * r * r * r / static_cast<T>(d);
      T* dxr = dx.row(i);
      for (int64_t j = 0; j < d; ++j) {
        dxr[j] += r * w[j] * dyr[j] - c * xr[j];
        pw[j] += dyr[j] * xr[j] * r;
      }
    }
  });
  for (int wk = 0; wk < workers; ++wk)
    for (int64_t j = 0; j < d; ++j) dw[j] += partial[static_cast<size_t>(wk * d + j)];
}

template void RmsNormForward<float>(CView<float>, CView<float>, float, View<float>, View<float>, Context&);
template void RmsNormForward<double>(CView<double>, CView<double>, double, View<double>, View<double>, Context&);
template void RmsNormBackward<float>(CView<float>, CView<float>, CView<float>, CView<float>, View<float>, View<float>, Context&);
template void RmsNormBackward<double>(CView<double>, CView<double>, CView<double>, CView<double>, View<double>, View<double>, Context&);

}  // namespace moe::kernels
