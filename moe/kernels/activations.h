// Row-wise softmax and element-wise sigmoid (router score functions), with backwards.
#pragma once

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

// y[t, :] = softmax(x[t, :])  (max-subtracted)
template <typename T>
void SoftmaxForward(CView<T> x /*[T,E]*/, View<T> y /*[T,E]*/, Context& ctx);
// dx[t, j] += y[t, j] * (dy[t, j] - sum_i dy[t, i] y[t, i])
template <typename T>
void SoftmaxBackward(CView<T> y, CView<T> dy, View<T> dx, Context& ctx);

// y = 1 / (1 + exp(-x))
template <typename T>
void SigmoidForward(CView<T> x, View<T> y, Context& ctx);
// dx += dy * y * (1 - y)
template <typename T>
void SigmoidBackward(CView<T> y, CView<T> dy, View<T> dx, Context& ctx);

// Serial row helpers. SoftmaxRow returns log(sum(exp(x))) (the log-partition, for z-loss).
template <typename T>
T SoftmaxRow(const T* x, T* y, int64_t n);
template <typename T>
inline T Sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

}  // namespace moe::kernels
