// Fused log-softmax + negative log-likelihood over vocabulary logits.
//
//   row_loss[t] = logsumexp(logits[t, :]) - logits[t, target[t]]   (0 for an ignored row)
//   loss        = sum_t row_loss[t] / count,   count = rows with target >= 0
// A negative target (e.g. -100, PyTorch's ignore_index) ignores the row; a target >= V is an
// Error naming the row and the value. The log-sum-exp is max-subtracted and summed in double.
#pragma once

#include <cstdint>

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

struct CrossEntropyResult {
  double loss = 0;    // mean over the non-ignored rows; 0 when every row is ignored
  int64_t count = 0;  // non-ignored rows
};

// lse [T] is saved for the backward (the logsumexp of every row, ignored rows included).
// The mean is summed in row order, so it is bitwise reproducible for any thread count.
template <typename T>
CrossEntropyResult CrossEntropyForward(CView<T> logits /*[T,V]*/, CView<int32_t> targets /*[T]*/,
                                       View<T> row_loss /*[T]*/, View<T> lse /*[T], saved*/,
                                       Context& ctx);

// dlogits[t, :] = scale * (softmax(logits[t, :]) - onehot(target[t])), and 0 for ignored rows:
// scale times the gradient of sum_t row_loss[t] (scale = 1 / count for the mean loss; with
// gradient accumulation, 1 / the count over all micro-batches).
// Unlike other backwards this WRITES dlogits rather than accumulating: logits have exactly one
// consumer and [T, V] is the largest activation, so dlogits may be logits itself (in place).
// The probabilities are exp(logits - lse) with lse saved in T: their relative error is about
// |lse| * eps(T), as in PyTorch's log_softmax backward (1e-5 for f32 logits of magnitude 100).
template <typename T>
void CrossEntropyBackward(CView<T> logits /*[T,V]*/, CView<int32_t> targets /*[T]*/,
                          CView<T> lse /*[T]*/, T scale, View<T> dlogits /*[T,V]*/, Context& ctx);

}  // namespace moe::kernels
