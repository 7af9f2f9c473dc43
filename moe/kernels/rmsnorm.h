// RMSNorm: y[t,:] = x[t,:] * rstd[t] * w,  rstd[t] = 1/sqrt(mean_j x[t,j]^2 + eps)
#pragma once

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

template <typename T>
void RmsNormForward(CView<T> x /*[T,D]*/, CView<T> w /*[D]*/, T eps, View<T> y /*[T,D]*/,
                    View<T> rstd /*[T], saved*/, Context& ctx);

// Accumulates (+=) into dx and dw; the caller zeroes them. dw is reduced per worker, then summed in
// worker order (bitwise reproducible for a given thread count).
template <typename T>
void RmsNormBackward(CView<T> dy, CView<T> x, CView<T> w, CView<T> rstd, View<T> dx, View<T> dw,
                     Context& ctx);

}  // namespace moe::kernels
