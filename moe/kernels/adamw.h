// AdamW (decoupled weight decay) exactly as torch.optim.AdamW (amsgrad = maximize = False), and
// global gradient-norm clipping as torch.nn.utils.clip_grad_norm_.
#pragma once

#include <cstdint>
#include <span>

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

// torch.optim.AdamW's defaults.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // decoupled: p *= 1 - lr * weight_decay before the Adam update
};

// One step, element-wise in torch's order (scalars in double, each element computed in double
// from the stored values):
//   p *= 1 - lr * wd
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2      (stored as f32)
//   p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// step is the 1-based count of this step (torch's state['step'] after its increment). Parameters
// are f32 or double; the moments are always f32 (zero before the first step).
template <typename P>
void AdamWStep(CView<P> grad, const AdamWOptions& opts, int64_t step, View<P> param, View<float> m,
               View<float> v, Context& ctx);

// sqrt(sum of squares of every element of every tensor), summed in double over fixed chunks in
// a fixed order: bitwise the same for any thread count.
template <typename T>
double GlobalGradNorm(std::span<const CView<T>> grads, Context& ctx);

// grads *= factor.
template <typename T>
void ScaleGrads(std::span<const View<T>> grads, double factor, Context& ctx);

// torch.nn.utils.clip_grad_norm_: norm = GlobalGradNorm(grads); every gradient is multiplied by
// min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping.
template <typename T>
double ClipGradNorm(std::span<const View<T>> grads, double max_norm, Context& ctx);

}  // namespace moe::kernels
