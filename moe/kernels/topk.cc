#include "moe/kernels/topk.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace moe::kernels {

template <typename T>
void TopKRow(const T* x, int64_t n, int64_t k, int32_t* idx) {
  // "a before b" when a is larger, or equal with the lower index.
  auto before = [x](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  if (k <= 8) {
    int64_t filled = 0;
    for (int32_t j = 0; j < static_cast<int32_t>(n); ++j) {
      if (filled < k) {
        int64_t p = filled++;
        while (p > 0 && before(j, idx[p - 1])) {
          idx[p] = idx[p - 1];
          --p;
        }
        idx[p] = j;
      } else if (before(j, idx[k - 1])) {
        int64_t p = k - 1;
        while (p > 0 && before(j, idx[p - 1])) {
          idx[p] = idx[p - 1];
          --p;
        }
        idx[p] = j;
      }
    }
    return;
  }
  std::vector<int32_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  std::partial_sort(all.begin(), all.begin() + k, all.end(), before);
  std::copy(all.begin(), all.begin() + k, idx);
}

template <typename T>
void TopKForward(CView<T> x, int64_t k, View<int32_t> idx, View<T> val, Context& ctx) {
  const int64_t t = x.rows(), n = x.cols();
  MOE_CHECK(k >= 1 && k <= n, "topk", "k = {} not in 1..{}", k, n);
  MOE_CHECK(idx.rows() == t && idx.cols() == k && val.rows() == t && val.cols() == k, "topk",
            "idx {} / val {} expected [{},{}]", idx.shape.str(), val.shape.str(), t, k);
  ParallelFor(t, ctx, [&](int64_t i, int) {
    TopKRow<T>(x.row(i), n, k, idx.row(i));
    for (int64_t j = 0; j < k; ++j) val.row(i)[j] = x.row(i)[idx.row(i)[j]];
  });
}

template <typename T>
void TopKBackward(CView<int32_t> idx, CView<T> dval, View<T> dx, Context& ctx) {
  const int64_t k = idx.cols();
  [[maybe_unused]] const int64_t n = dx.cols();
  MOE_CHECK(dval.shape == idx.shape && dx.rows() == idx.rows(), "topk", "idx {}, dval {}, dx {}",
            idx.shape.str(), dval.shape.str(), dx.shape.str());
  ParallelFor(idx.rows(), ctx, [&](int64_t i, int) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = idx.row(i)[j];
      MOE_DCHECK(e >= 0 && e < n, "topk", "index {} out of range", e);
      dx.row(i)[e] += dval.row(i)[j];
    }
  });
}

#define MOE_INSTANTIATE(T)                                                                  \
  template void TopKRow<T>(const T*, int64_t, int64_t, int32_t*);                           \
  template void TopKForward<T>(CView<T>, int64_t, View<int32_t>, View<T>, Context&);        \
  template void TopKBackward<T>(CView<int32_t>, CView<T>, View<T>, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::kernels
