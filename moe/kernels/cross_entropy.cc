#include "moe/kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moe::kernels {
namespace {

template <typename T>
void CheckTargets(const char* op, CView<T> logits, CView<int32_t> targets) {
  MOE_CHECK(logits.rank() == 2 && logits.dim(1) > 0, "cross_entropy",
            "{}: logits must be [T,V] with V > 0, got {}", op, logits.shape.str());
  MOE_CHECK(targets.rank() == 1 && targets.numel() == logits.dim(0), "cross_entropy",
            "{}: targets {} must be [{}] (one per row of logits {})", op, targets.shape.str(),
            logits.dim(0), logits.shape.str());
  const int64_t vocab = logits.dim(1);
  for (int64_t t = 0; t < targets.numel(); ++t)
    MOE_CHECK(targets[t] < vocab, "cross_entropy",
              "{}: targets[{}] = {} is out of range for vocabulary size {} (logits {})", op, t,
              targets[t], vocab, logits.shape.str());
}

template <typename T>
void CheckRowVector(const char* op, const char* name, const Shape& s, int64_t rows) {
  MOE_CHECK(s.rank == 1 && s[0] == rows, "cross_entropy", "{}: {} {} must be [{}]", op, name,
            s.str(), rows);
}

}  // namespace

template <typename T>
CrossEntropyResult CrossEntropyForward(CView<T> logits, CView<int32_t> targets, View<T> row_loss,
                                       View<T> lse, Context& ctx) {
  const char* op = "CrossEntropyForward";
  CheckTargets(op, logits, targets);
  const int64_t nt = logits.dim(0), vocab = logits.dim(1);
  CheckRowVector<T>(op, "row_loss", row_loss.shape, nt);
  CheckRowVector<T>(op, "lse", lse.shape, nt);
  std::vector<double> losses(static_cast<size_t>(nt));
  ParallelFor(nt, ctx, [&](int64_t t, int) {
    const T* x = logits.row(t);
    const T mx = *std::max_element(x, x + vocab);
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j) sum += static_cast<double>(std::exp(x[j] - mx));
    const double log_sum = std::log(sum);
    lse[t] = static_cast<T>(static_cast<double>(mx) + log_sum);
    const int32_t target = targets[t];
    // (max - x[target]) + log_sum: no cancellation against a huge lse.
    losses[static_cast<size_t>(t)] =
        target < 0 ? 0.0 : (static_cast<double>(mx) - static_cast<double>(x[target])) + log_sum;
    row_loss[t] = static_cast<T>(losses[static_cast<size_t>(t)]);
  });
  CrossEntropyResult r;
  double total = 0;
  for (int64_t t = 0; t < nt; ++t) {
    if (targets[t] < 0) continue;
    total += losses[static_cast<size_t>(t)];
    ++r.count;
  }
  r.loss = r.count > 0 ? total / static_cast<double>(r.count) : 0.0;
  return r;
}

template <typename T>
void CrossEntropyBackward(CView<T> logits, CView<int32_t> targets, CView<T> lse, T scale,
                          View<T> dlogits, Context& ctx) {
  const char* op = "CrossEntropyBackward";
  CheckTargets(op, logits, targets);
  const int64_t nt = logits.dim(0), vocab = logits.dim(1);
  CheckRowVector<T>(op, "lse", lse.shape, nt);
  MOE_CHECK(dlogits.shape == logits.shape, "cross_entropy", "{}: dlogits {} must be logits' {}", op,
            dlogits.shape.str(), logits.shape.str());
  ParallelFor(nt, ctx, [&](int64_t t, int) {
    const T* x = logits.row(t);
    T* d = dlogits.row(t);
    const int32_t target = targets[t];
    if (target < 0) {
      std::fill(d, d + vocab, T(0));
      return;
    }
    const T l = lse[t];
    for (int64_t j = 0; j < vocab; ++j) d[j] = scale * std::exp(x[j] - l);  // x may alias d
    d[target] -= scale;
  });
}

#define MOE_INSTANTIATE(T)                                                                       \
  template CrossEntropyResult CrossEntropyForward<T>(CView<T>, CView<int32_t>, View<T>, View<T>, \
                                                     Context&);                                  \
  template void CrossEntropyBackward<T>(CView<T>, CView<int32_t>, CView<T>, T, View<T>, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::kernels
