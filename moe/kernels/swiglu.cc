#include "moe/kernels/swiglu.h"

#include <cmath>
#include <vector>

#include "moe/kernels/isa/row_ops.h"

namespace moe::kernels {

template <typename T>
void SwiGluRow(const T* g, const T* u, T* a, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    ActiveRowOps().swiglu(g, u, a, n);
  } else {
    for (int64_t i = 0; i < n; ++i) a[i] = g[i] / (T(1) + std::exp(-g[i])) * u[i];
  }
}

template <typename T>
void SwiGluBackwardRow(const T* g, const T* u, const T* da, T* dg, T* du, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    ActiveRowOps().swiglu_backward(g, u, da, dg, du, n);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const T s = T(1) / (T(1) + std::exp(-g[i]));
      du[i] = da[i] * g[i] * s;
      dg[i] = da[i] * u[i] * s * (T(1) + g[i] * (T(1) - s));
    }
  }
}

template <typename T>
void SwiGluForward(CView<T> h, View<T> a, Context& ctx) {
  const int64_t t = h.rows(), f = a.cols();
  MOE_CHECK(h.cols() == 2 * f && a.rows() == t, "swiglu", "h {} does not fit a {}", h.shape.str(),
            a.shape.str());
  ParallelFor(t, ctx, [&](int64_t i, int) {
    SwiGluRow<T>(h.row(i), h.row(i) + f, a.row(i), f);
  });
}

template <typename T>
void SwiGluBackward(CView<T> h, CView<T> da, View<T> dh, Context& ctx) {
  const int64_t t = h.rows(), f = da.cols();
  MOE_CHECK(h.cols() == 2 * f && da.rows() == t && dh.rows() == t && dh.cols() == 2 * f, "swiglu",
            "h {}, da {}, dh {} do not fit", h.shape.str(), da.shape.str(), dh.shape.str());
  ParallelForRange(t, ctx, [&](int64_t b, int64_t e, int) {
    std::vector<T> tmp(static_cast<size_t>(2 * f));
    for (int64_t i = b; i < e; ++i) {
      SwiGluBackwardRow<T>(h.row(i), h.row(i) + f, da.row(i), tmp.data(), tmp.data() + f, f);
      T* out = dh.row(i);
      for (int64_t j = 0; j < 2 * f; ++j) out[j] += tmp[static_cast<size_t>(j)];
    }
  });
}

#define MOE_INSTANTIATE(T)                                                              \
  template void SwiGluRow<T>(const T*, const T*, T*, int64_t);                          \
  template void SwiGluBackwardRow<T>(const T*, const T*, const T*, T*, T*, int64_t);    \
  template void SwiGluForward<T>(CView<T>, View<T>, Context&);                          \
  template void SwiGluBackward<T>(CView<T>, CView<T>, View<T>, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::kernels
