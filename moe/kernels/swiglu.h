// SwiGLU activation on a fused gate|up row: h[t] = [g (F) | u (F)], a[t] = silu(g) * u.
#pragma once

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

template <typename T>
void SwiGluForward(CView<T> h /*[T,2F]*/, View<T> a /*[T,F]*/, Context& ctx);

// dh[T, 2F] += d(a)/d(h) * da.
template <typename T>
void SwiGluBackward(CView<T> h /*[T,2F]*/, CView<T> da /*[T,F]*/, View<T> dh /*[T,2F]*/,
                    Context& ctx);

// Serial row helpers (write, never accumulate); f32 uses the runtime-dispatched SIMD kernels.
template <typename T>
void SwiGluRow(const T* g, const T* u, T* a, int64_t n);
template <typename T>
void SwiGluBackwardRow(const T* g, const T* u, const T* da, T* dg, T* du, int64_t n);

}  // namespace moe::kernels
