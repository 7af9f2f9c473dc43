// Top-k along rows: the k largest values in descending order; ties go to the lower index.
#pragma once

#include <cstdint>

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

template <typename T>
void TopKForward(CView<T> x /*[T,E]*/, int64_t k, View<int32_t> idx /*[T,k]*/,
                 View<T> val /*[T,k]*/, Context& ctx);
// dx[t, idx[t, j]] += dval[t, j]
template <typename T>
void TopKBackward(CView<int32_t> idx /*[T,k]*/, CView<T> dval /*[T,k]*/, View<T> dx /*[T,E]*/,
                  Context& ctx);

// Serial: indices of the k largest of x[0..n) into idx[0..k), descending, ties to lower index.
// O(n*k) for small k, partial sort otherwise.
template <typename T>
void TopKRow(const T* x, int64_t n, int64_t k, int32_t* idx);

}  // namespace moe::kernels
