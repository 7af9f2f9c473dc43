#include "moe/kernels/activations.h"

#include <cmath>

namespace moe::kernels {

template <typename T>
T SoftmaxRow(const T* x, T* y, int64_t n) {
  T mx = x[0];
  for (int64_t j = 1; j < n; ++j) mx = x[j] > mx ? x[j] : mx;
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    y[j] = std::exp(x[j] - mx);
    sum += y[j];
  }
  const T inv = T(1) / sum;
  for (int64_t j = 0; j < n; ++j) y[j] *= inv;
  return mx + std::log(sum);
}

template <typename T>
void SoftmaxForward(CView<T> x, View<T> y, Context& ctx) {
  MOE_CHECK(x.shape == y.shape && x.cols() > 0, "softmax", "x {} vs y {}", x.shape.str(),
            y.shape.str());
  ParallelFor(x.rows(), ctx, [&](int64_t t, int) { SoftmaxRow<T>(x.row(t), y.row(t), x.cols()); });
}

template <typename T>
void SoftmaxBackward(CView<T> y, CView<T> dy, View<T> dx, Context& ctx) {
  MOE_CHECK(y.shape == dy.shape && y.shape == dx.shape, "softmax", "y {}, dy {}, dx {}",
            y.shape.str(), dy.shape.str(), dx.shape.str());
  const int64_t n = y.cols();
  ParallelFor(y.rows(), ctx, [&](int64_t t, int) {
    const T* yr = y.row(t);
    const T* dyr = dy.row(t);
    T dot = 0;
    for (int64_t j = 0; j < n; ++j) dot += yr[j] * dyr[j];
    T* dxr = dx.row(t);
    for (int64_t j = 0; j < n; ++j) dxr[j] += yr[j] * (dyr[j] - dot);
  });
}

template <typename T>
void SigmoidForward(CView<T> x, View<T> y, Context& ctx) {
  MOE_CHECK(x.shape == y.shape, "sigmoid", "x {} vs y {}", x.shape.str(), y.shape.str());
  ParallelForRange(x.numel(), ctx, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) y[i] = Sigmoid(x[i]);
  }, 1024);
}

template <typename T>
void SigmoidBackward(CView<T> y, CView<T> dy, View<T> dx, Context& ctx) {
  MOE_CHECK(y.shape == dy.shape && y.shape == dx.shape, "sigmoid", "y {}, dy {}, dx {}",
            y.shape.str(), dy.shape.str(), dx.shape.str());
  ParallelForRange(y.numel(), ctx, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) dx[i] += dy[i] * y[i] * (T(1) - y[i]);
  }, 1024);
}

#define MOE_INSTANTIATE(T)                                              \
  template T SoftmaxRow<T>(const T*, T*, int64_t);                      \
  template void SoftmaxForward<T>(CView<T>, View<T>, Context&);         \
  template void SoftmaxBackward<T>(CView<T>, CView<T>, View<T>, Context&); \
  template void SigmoidForward<T>(CView<T>, View<T>, Context&);         \
  template void SigmoidBackward<T>(CView<T>, CView<T>, View<T>, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::kernels
