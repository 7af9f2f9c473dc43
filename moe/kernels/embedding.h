// Token embedding: a row gather from a [V, D] table, and its scatter-add backward.
#pragma once

#include <cstdint>

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

// y[t, :] = table[ids[t], :]. An id outside [0, V) is an Error naming its index and value.
template <typename T>
void EmbeddingForward(CView<T> table /*[V,D]*/, CView<int32_t> ids /*[T]*/, View<T> y /*[T,D]*/,
                      Context& ctx);

// dtable[ids[t], :] += dy[t, :] (accumulates; the caller zeroes). Workers own disjoint column
// ranges of dtable and add the tokens in order, so there are no races and the result is bitwise
// the same for any thread count.
template <typename T>
void EmbeddingBackward(CView<T> dy /*[T,D]*/, CView<int32_t> ids /*[T]*/, View<T> dtable /*[V,D]*/,
                       Context& ctx);

}  // namespace moe::kernels
