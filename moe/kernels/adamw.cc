#include "moe/kernels/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moe::kernels {
namespace {

// Elements per chunk of the norm reduction: fixed, so partials do not depend on the thread count.
constexpr int64_t kNormChunk = int64_t{1} << 14;

struct Chunk {
  size_t tensor;
  int64_t begin, end;
};

template <typename V>
std::vector<Chunk> Chunks(std::span<const V> views) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < views.size(); ++i)
    for (int64_t b = 0; b < views[i].numel(); b += kNormChunk)
      chunks.push_back({i, b, std::min(b + kNormChunk, views[i].numel())});
  return chunks;
}

}  // namespace

template <typename P>
void AdamWStep(CView<P> grad, const AdamWOptions& o, int64_t step, View<P> param, View<float> m,
               View<float> v, Context& ctx) {
  MOE_CHECK(
      grad.numel() == param.numel() && m.numel() == param.numel() && v.numel() == param.numel(),
      "adamw", "param {}, grad {}, m {}, v {} must have the same number of elements",
      param.shape.str(), grad.shape.str(), m.shape.str(), v.shape.str());
  MOE_CHECK(step >= 1, "adamw", "step {} must be >= 1 (the 1-based count of this step)", step);
  MOE_CHECK(o.lr >= 0 && o.eps >= 0 && o.weight_decay >= 0 && o.beta1 >= 0 && o.beta1 < 1 &&
                o.beta2 >= 0 && o.beta2 < 1,
            "adamw", "invalid options: lr {}, beta1 {}, beta2 {}, eps {}, weight_decay {}", o.lr,
            o.beta1, o.beta2, o.eps, o.weight_decay);
  const double s = static_cast<double>(step);
  const double decay = 1.0 - o.lr * o.weight_decay;
  const double step_size = o.lr / (1.0 - std::pow(o.beta1, s));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, s));
  ParallelForRange(
      param.numel(), ctx,
      [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) {
          const double g = static_cast<double>(grad[i]);
          const double p = static_cast<double>(param[i]) * decay;
          m[i] = static_cast<float>(o.beta1 * static_cast<double>(m[i]) + (1.0 - o.beta1) * g);
          v[i] = static_cast<float>(o.beta2 * static_cast<double>(v[i]) + (1.0 - o.beta2) * g * g);
          const double denom = std::sqrt(static_cast<double>(v[i])) / bc2_sqrt + o.eps;
          param[i] = static_cast<P>(p - step_size * static_cast<double>(m[i]) / denom);
        }
      },
      4096);
}

template <typename T>
double GlobalGradNorm(std::span<const CView<T>> grads, Context& ctx) {
  const std::vector<Chunk> chunks = Chunks(grads);
  std::vector<double> partial(chunks.size());
  ParallelFor(static_cast<int64_t>(chunks.size()), ctx, [&](int64_t c, int) {
    const Chunk& ch = chunks[static_cast<size_t>(c)];
    const T* x = grads[ch.tensor].data;
    double s = 0;
    for (int64_t i = ch.begin; i < ch.end; ++i) s += static_cast<double>(x[i]) * x[i];
    partial[static_cast<size_t>(c)] = s;
  });
  double total = 0;
  for (double p : partial) total += p;
  return std::sqrt(total);
}

template <typename T>
void ScaleGrads(std::span<const View<T>> grads, double factor, Context& ctx) {
  const std::vector<Chunk> chunks = Chunks(grads);
  const T f = static_cast<T>(factor);
  ParallelFor(static_cast<int64_t>(chunks.size()), ctx, [&](int64_t c, int) {
    const Chunk& ch = chunks[static_cast<size_t>(c)];
    T* x = grads[ch.tensor].data;
    for (int64_t i = ch.begin; i < ch.end; ++i) x[i] *= f;
  });
}

template <typename T>
double ClipGradNorm(std::span<const View<T>> grads, double max_norm, Context& ctx) {
  MOE_CHECK(max_norm > 0, "adamw", "clip max_norm {} must be > 0", max_norm);
  const std::vector<CView<T>> views(grads.begin(), grads.end());
  const double norm = GlobalGradNorm<T>(views, ctx);
  double factor = max_norm / (norm + 1e-6);
  if (factor > 1.0) factor = 1.0;  // a NaN norm stays NaN, as in torch
  ScaleGrads<T>(grads, factor, ctx);
  return norm;
}

template void AdamWStep<float>(CView<float>, const AdamWOptions&, int64_t, View<float>, View<float>,
                               View<float>, Context&);
template void AdamWStep<double>(CView<double>, const AdamWOptions&, int64_t, View<double>,
                                View<float>, View<float>, Context&);
#define MOE_INSTANTIATE(T)                                                 \
  template double GlobalGradNorm<T>(std::span<const CView<T>>, Context&);  \
  template void ScaleGrads<T>(std::span<const View<T>>, double, Context&); \
  template double ClipGradNorm<T>(std::span<const View<T>>, double, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::kernels
