#include "moe/mixture/experts.h"

#include <algorithm>
#include <cmath>

#include "moe/kernels/matmul.h"
#include "moe/kernels/swiglu.h"
#include "moe/kernels/weight_matmul.h"

namespace moe::mixture {

namespace {

// Rows per chunk inside a task (see the loops below).
constexpr int64_t kRowChunk = 256;

struct Task {
  int32_t group;
  int64_t begin, end;  // column block [begin, end) of F (phase 1) or D (phase 2)
};

// Cuts each group's `width` columns into blocks so that there are about 8 tasks per worker in all;
// groups with more rows get more blocks. Blocks are multiples of 16 columns.
template <typename RowsFn, typename WidthFn>
void MakeTasks(int64_t n_groups, RowsFn rows, WidthFn width, int threads, std::vector<Task>& tasks,
               std::vector<double>& costs, double flops_per_row_col) {
  tasks.clear();
  costs.clear();
  int64_t total_rows = 0;
  for (int64_t g = 0; g < n_groups; ++g) total_rows += rows(g);
  if (total_rows == 0) return;
  const double target = threads <= 1 ? 1.0 : 8.0 * threads;
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t m = rows(g), wdt = width(g);
    if (m == 0 || wdt == 0) continue;
    int64_t nb = static_cast<int64_t>(std::ceil(target * static_cast<double>(m) / static_cast<double>(total_rows)));
    nb = std::clamp<int64_t>(nb, 1, std::max<int64_t>(1, wdt / 16));
    int64_t bs = (wdt + nb - 1) / nb;
    bs = (bs + 15) / 16 * 16;
    for (int64_t b = 0; b < wdt; b += bs) {
      const int64_t e = std::min(wdt, b + bs);
      tasks.push_back({static_cast<int32_t>(g), b, e});
      // Few-row products are bound by reading the weights: cost ~ columns, not rows * columns.
      costs.push_back(static_cast<double>(e - b) * (static_cast<double>(std::max<int64_t>(m, 8))) *
                      flops_per_row_col);
    }
  }
}

}  // namespace

template <typename T>
void GroupedSwiGluForward(const std::vector<FfnGroup<T>>& groups, int64_t d, Context& ctx) {
  const MatmulPrecision prec = ctx.matmul_precision();
  const int64_t ng = static_cast<int64_t>(groups.size());
  std::vector<Task> tasks;
  std::vector<double> costs;
  // Phase 1: h[:, blk] = x * W1[blk]^T, h[:, F+blk] = x * W3[blk]^T, a[:, blk] = silu * up.
  MakeTasks(ng, [&](int64_t g) { return groups[g].rows; }, [&](int64_t g) { return groups[g].d_ff; },
            ctx.threads(), tasks, costs, 2.0 * static_cast<double>(d));
  RunBalanced(costs, ctx, [&](int64_t i) {
    const Task& tk = tasks[static_cast<size_t>(i)];
    const FfnGroup<T>& g = groups[static_cast<size_t>(tk.group)];
    const int64_t f = g.d_ff, nb = tk.end - tk.begin;
    // Row chunks keep the chunk's h block in L2 while the SwiGLU reads it back.
    for (int64_t r0 = 0; r0 < g.rows; r0 += kRowChunk) {
      const int64_t rc = std::min(kRowChunk, g.rows - r0);
      const T* x = g.x + r0 * d;
      T* h = g.h + r0 * 2 * f;
      kernels::MatMulNT<T>(x, d, rc, g.w13 + tk.begin * d, d, nb, d, h + tk.begin, 2 * f, false, prec);
      kernels::MatMulNT<T>(x, d, rc, g.w13 + (f + tk.begin) * d, d, nb, d, h + f + tk.begin, 2 * f,
                           false, prec);
      for (int64_t r = 0; r < rc; ++r) {
        const T* hr = h + r * 2 * f;
        kernels::SwiGluRow<T>(hr + tk.begin, hr + f + tk.begin, g.a + (r0 + r) * f + tk.begin, nb);
      }
    }
  });
  // Phase 2: y[:, blk] = a * W2[blk]^T.
  MakeTasks(ng, [&](int64_t g) { return groups[g].rows; }, [&](int64_t) { return d; }, ctx.threads(),
            tasks, costs, 1.0);
  RunBalanced(costs, ctx, [&](int64_t i) {
    const Task& tk = tasks[static_cast<size_t>(i)];
    const FfnGroup<T>& g = groups[static_cast<size_t>(tk.group)];
    const int64_t f = g.d_ff;
    kernels::MatMulNT<T>(g.a, f, g.rows, g.w2 + tk.begin * f, f, tk.end - tk.begin, f,
                         g.y + tk.begin, d, false, prec);
  });
}

template <typename T>
void GroupedSwiGluBackward(const std::vector<FfnGroup<T>>& groups,
                           const std::vector<FfnGroupGrad<T>>& grads, int64_t d, Context& ctx) {
  const MatmulPrecision prec = ctx.matmul_precision();
  const int64_t ng = static_cast<int64_t>(groups.size());
  MOE_CHECK(grads.size() == groups.size(), "moe", "{} gradient groups for {} groups", grads.size(),
            groups.size());
  std::vector<Task> tasks;
  std::vector<double> costs;
  // Phase 1, per (group, F-block): da = dy W2[:, blk]; dW2[:, blk] += dy^T a[:, blk];
  // dh = swiglu'(h) da; dW13[blk rows] += dh^T x (gate and up halves).
  MakeTasks(ng, [&](int64_t g) { return groups[g].rows; }, [&](int64_t g) { return groups[g].d_ff; },
            ctx.threads(), tasks, costs, 4.0 * static_cast<double>(d));
  RunBalanced(costs, ctx, [&](int64_t i) {
    const Task& tk = tasks[static_cast<size_t>(i)];
    const FfnGroup<T>& g = groups[static_cast<size_t>(tk.group)];
    const FfnGroupGrad<T>& gg = grads[static_cast<size_t>(tk.group)];
    const int64_t f = g.d_ff, b = tk.begin, nb = tk.end - tk.begin;
    // Row chunks keep da/dh of the chunk in L2 between the product that writes da and the SwiGLU
    // backward that reads it; the weight gradients then run once over all rows (a long K keeps
    // sgemm efficient and each dW block is read and written once).
    for (int64_t r0 = 0; r0 < g.rows; r0 += kRowChunk) {
      const int64_t m = std::min(kRowChunk, g.rows - r0);
      T* da = gg.da + r0 * f;
      kernels::Gemm<T>(false, false, m, nb, d, T(1), gg.dy + r0 * d, d, g.w2 + b, f, T(0), da + b, f, prec);
      for (int64_t r = 0; r < m; ++r) {
        const T* hr = g.h + (r0 + r) * 2 * f;
        T* dhr = gg.dh + (r0 + r) * 2 * f;
        kernels::SwiGluBackwardRow<T>(hr + b, hr + f + b, da + r * f + b, dhr + b, dhr + f + b, nb);
      }
    }
    const int64_t m = g.rows;
    kernels::Gemm<T>(true, false, d, nb, m, T(1), gg.dy, d, g.a + b, f, T(1), gg.dw2 + b, f, prec);
    kernels::Gemm<T>(true, false, nb, d, m, T(1), gg.dh + b, 2 * f, g.x, d, T(1), gg.dw13 + b * d, d, prec);
    kernels::Gemm<T>(true, false, nb, d, m, T(1), gg.dh + f + b, 2 * f, g.x, d, T(1), gg.dw13 + (f + b) * d, d, prec);
  });
  // Phase 2, per (group, D-block): dx[:, blk] = dh * W13[:, blk].
  MakeTasks(ng, [&](int64_t g) { return groups[g].rows; }, [&](int64_t) { return d; }, ctx.threads(),
            tasks, costs, 2.0);
  RunBalanced(costs, ctx, [&](int64_t i) {
    const Task& tk = tasks[static_cast<size_t>(i)];
    const FfnGroup<T>& g = groups[static_cast<size_t>(tk.group)];
    const FfnGroupGrad<T>& gg = grads[static_cast<size_t>(tk.group)];
    const int64_t f = g.d_ff;
    kernels::Gemm<T>(false, false, g.rows, tk.end - tk.begin, 2 * f, T(1), gg.dh, 2 * f,
                     g.w13 + tk.begin, d, T(0), gg.dx + tk.begin, d, prec);
  });
}

void SwiGluInfer(const std::vector<FfnInferGroup>& groups, Context& ctx) {
  std::vector<kernels::WeightProduct> products;
  std::vector<int64_t> row_start;  // first row of each group in the concatenation
  int64_t total_rows = 0;
  for (const FfnInferGroup& g : groups) {
    MOE_CHECK(g.w != nullptr && g.w->defined(), "moe", "inference FFN group without matrices");
    const int64_t f = g.w->d_ff();
    const kernels::WeightRef gate = kernels::AsWeight(g.w->gate, "gate"),
                             up = kernels::AsWeight(g.w->up, "up");
    MOE_CHECK(up.n == f && up.k == gate.k, "moe", "up {} does not match gate {}",
              g.w->up.shape().str(), g.w->gate.shape().str());
    products.push_back({g.x, g.rows, gate, g.h});
    products.push_back({g.x, g.rows, up, g.h + g.rows * f});
    row_start.push_back(total_rows);
    total_rows += g.rows;
  }
  kernels::WeightMatMul(products, ctx);
  // a = silu(gate) * up, over all rows of all groups; in parallel only when each thread gets a
  // few thousand values (a decode step's few rows are done sooner than a wake-up of the pool).
  int64_t widest = 1;
  for (const FfnInferGroup& g : groups) widest = std::max(widest, g.w->d_ff());
  const int64_t min_rows = std::max<int64_t>(4, (int64_t{1} << 14) / widest);
  ParallelForRange(total_rows, ctx, [&](int64_t b, int64_t e, int) {
    size_t gi = static_cast<size_t>(std::upper_bound(row_start.begin(), row_start.end(), b) -
                                    row_start.begin() - 1);
    for (int64_t r = b; r < e; ++r) {
      while (r >= row_start[gi] + groups[gi].rows) ++gi;
      const FfnInferGroup& g = groups[gi];
      const int64_t f = g.w->d_ff(), i = r - row_start[gi];
      kernels::SwiGluRow<float>(g.h + i * f, g.h + (g.rows + i) * f, g.a + i * f, f);
    }
  }, min_rows);
  products.clear();
  for (const FfnInferGroup& g : groups) {
    const kernels::WeightRef down = kernels::AsWeight(g.w->down, "down");
    MOE_CHECK(down.k == g.w->d_ff() && down.n == kernels::AsWeight(g.w->gate).k, "moe",
              "down {} does not match gate {}", g.w->down.shape().str(), g.w->gate.shape().str());
    products.push_back({g.a, g.rows, down, g.y});
  }
  kernels::WeightMatMul(products, ctx);
}

template void GroupedSwiGluForward<float>(const std::vector<FfnGroup<float>>&, int64_t, Context&);
template void GroupedSwiGluForward<double>(const std::vector<FfnGroup<double>>&, int64_t, Context&);
template void GroupedSwiGluBackward<float>(const std::vector<FfnGroup<float>>&,
                                           const std::vector<FfnGroupGrad<float>>&, int64_t, Context&);
template void GroupedSwiGluBackward<double>(const std::vector<FfnGroup<double>>&,
                                            const std::vector<FfnGroupGrad<double>>&, int64_t,
                                            Context&);

}  // namespace moe::mixture
