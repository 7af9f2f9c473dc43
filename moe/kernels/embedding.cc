#include "moe/kernels/embedding.h"

#include <algorithm>

namespace moe::kernels {
namespace {

// Column ranges are multiples of 16 elements (a 64-byte line of floats), so neighbouring workers
// rarely write to the same cache line.
constexpr int64_t kColumnBlock = 16;

void CheckIds(const char* op, CView<int32_t> ids, int64_t rows, int64_t vocab, const Shape& table) {
  MOE_CHECK(ids.rank() == 1 && ids.numel() == rows, "embedding", "{}: ids {} must be [{}]", op,
            ids.shape.str(), rows);
  for (int64_t t = 0; t < rows; ++t)
    MOE_CHECK(ids[t] >= 0 && ids[t] < vocab, "embedding",
              "{}: ids[{}] = {} is out of range for a table of {} rows ({})", op, t, ids[t], vocab,
              table.str());
}

}  // namespace

template <typename T>
void EmbeddingForward(CView<T> table, CView<int32_t> ids, View<T> y, Context& ctx) {
  const char* op = "EmbeddingForward";
  MOE_CHECK(table.rank() == 2, "embedding", "{}: table must be [V,D], got {}", op,
            table.shape.str());
  MOE_CHECK(y.rank() == 2 && y.dim(1) == table.dim(1), "embedding",
            "{}: y {} must be [T,{}] for table {}", op, y.shape.str(), table.dim(1),
            table.shape.str());
  CheckIds(op, ids, y.dim(0), table.dim(0), table.shape);
  const int64_t d = table.dim(1);
  ParallelForRange(
      y.dim(0), ctx,
      [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t) std::copy_n(table.row(ids[t]), d, y.row(t));
      },
      8);
}

template <typename T>
void EmbeddingBackward(CView<T> dy, CView<int32_t> ids, View<T> dtable, Context& ctx) {
  const char* op = "EmbeddingBackward";
  MOE_CHECK(dtable.rank() == 2, "embedding", "{}: dtable must be [V,D], got {}", op,
            dtable.shape.str());
  MOE_CHECK(dy.rank() == 2 && dy.dim(1) == dtable.dim(1), "embedding",
            "{}: dy {} must be [T,{}] for dtable {}", op, dy.shape.str(), dtable.dim(1),
            dtable.shape.str());
  CheckIds(op, ids, dy.dim(0), dtable.dim(0), dtable.shape);
  const int64_t nt = dy.dim(0), d = dtable.dim(1);
  const int64_t blocks = (d + kColumnBlock - 1) / kColumnBlock;
  ParallelForRange(blocks, ctx, [&](int64_t b, int64_t e, int) {
    const int64_t c0 = b * kColumnBlock, c1 = std::min(e * kColumnBlock, d);
    for (int64_t t = 0; t < nt; ++t) {
      const T* src = dy.row(t);
      T* dst = dtable.row(ids[t]);
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  });
}

#define MOE_INSTANTIATE(T)                                                        \
  template void EmbeddingForward<T>(CView<T>, CView<int32_t>, View<T>, Context&); \
  template void EmbeddingBackward<T>(CView<T>, CView<int32_t>, View<T>, Context&);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::kernels
