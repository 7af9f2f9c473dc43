#include "moe/kernels/weight_matmul.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "moe/core/error.h"
#include "moe/kernels/isa/quant_ops.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/quant_repack.h"

namespace moe::kernels {
namespace {

// Products with at most this many rows of x share one parallel region (each weight row is then
// read once by the few-row kernels); larger ones run alone.
constexpr int64_t kFewRows = 8;

int64_t RowBytes(const WeightRef& w) {
  if (IsTiled(w.dtype)) return QuantRowBytes(TiledBase(w.dtype), w.k);
  return w.dtype == DType::kF32 ? 4 * w.k : QuantRowBytes(QuantTypeOf(w.dtype), w.k);
}

// The kernel of a tiled type; an Error on a CPU without it (such weights are only made where it
// runs).
TiledDotFn X16Kernel(DType t) {
  const TiledDotFn fn = TiledKernel(t);
  MOE_CHECK(fn != nullptr, "linear", "{} weights need AVX-512 VNNI (and MOE_ISA not below avx512)",
            DTypeName(t));
  return fn;
}

// Rows [0, m) of a at tiles [t0, t1): the kernels take at most 8 rows of x at a time.
void X16Rows(TiledDotFn fn, const WeightRef& w, int64_t t0, int64_t t1, const QuantActs& a,
             int64_t m, float* y) {
  for (int64_t i = 0; i < m; i += 8) {
    QuantActs rows = a;
    rows.base += i * a.row_bytes;
    fn(static_cast<const uint8_t*>(w.data), w.k, t0, t1, rows, std::min<int64_t>(8, m - i),
       y + i * w.n, w.n);
  }
}

void CheckProduct(const WeightProduct& p) {
  MOE_CHECK(p.w.dtype == DType::kF32 || IsQuantized(p.w.dtype), "linear",
            "weight [{}, {}] of {}: inference products take F32 or block-quantised weights",
            p.w.n, p.w.k, DTypeName(p.w.dtype));
  MOE_CHECK(p.m >= 0 && p.w.n >= 0 && p.w.k >= 0, "linear", "product of x [{}, {}] and w [{}, {}]",
            p.m, p.w.k, p.w.n, p.w.k);
  if (p.m == 0 || p.w.n == 0) return;
  MOE_CHECK(p.x != nullptr && p.y != nullptr && (p.w.data != nullptr || p.w.k == 0), "linear",
            "null pointer in the product of x [{}, {}] and {} w [{}, {}]", p.m, p.w.k,
            DTypeName(p.w.dtype), p.w.n, p.w.k);
  (void)RowBytes(p.w);  // names k when it is not a whole number of blocks
  MOE_CHECK(!IsTiled(p.w.dtype) || p.w.n % kTileRows == 0, "linear",
            "{} weight [{}, {}]: rows must come in tiles of 16", DTypeName(p.w.dtype), p.w.n, p.w.k);
}

void RunAlone(const WeightProduct& p, Context& ctx) {
  if (IsTiled(p.w.dtype)) {
    const TiledDotFn fn = X16Kernel(p.w.dtype);
    QuantActsBuffer buf;
    const QuantActs& a = buf.Reset(p.m, p.w.k, static_cast<int>(QuantBlockSize(TiledBase(p.w.dtype))),
                                   ActLayout::kNatural);
    ActiveQuantOps().quantize_acts(p.x, 0, p.m, a);
    ParallelForRange(p.w.n / kTileRows, ctx, [&](int64_t t0, int64_t t1, int) {
      X16Rows(fn, p.w, t0, t1, a, p.m, p.y);
    });
    return;
  }
  if (p.w.dtype == DType::kF32) {
    LinearForward<float>(CView<float>(p.x, {p.m, p.w.k}),
                         CView<float>(static_cast<const float*>(p.w.data), {p.w.n, p.w.k}),
                         View<float>(p.y, {p.m, p.w.n}), ctx);
  } else {
    QuantMatMul(QuantTypeOf(p.w.dtype), p.w.data, p.w.n, p.w.k, p.x, p.m, p.y, ctx);
  }
}

// F32 products of many rows (prefill: e.g. each expert's tokens against its matrices). sgemm
// packs the weight of each call before multiplying, a pass bound by memory; split over the pool
// call by call, both threads pack at once and then both multiply, so memory and arithmetic
// alternate. With enough products for every thread, each runs whole products on one thread
// instead (largest first, claimed as threads come free), so one thread's packing overlaps the
// other's multiplies and each weight is still packed once.
constexpr int kWholeProductsPerThread = 4;

void RunF32Products(std::span<const WeightProduct> products, std::vector<size_t>& idx,
                    Context& ctx) {
  const int workers = ctx.threads();
  if (workers <= 1 || idx.size() < static_cast<size_t>(kWholeProductsPerThread * workers)) {
    for (size_t i : idx) RunAlone(products[i], ctx);
    return;
  }
  auto cost = [&](size_t i) { return products[i].m * products[i].w.n * products[i].w.k; };
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return cost(a) > cost(b); });
  const MatmulPrecision prec = ctx.matmul_precision();
  ParallelForClaimed(static_cast<int64_t>(idx.size()), ctx, [&](int64_t u, int) {
    const WeightProduct& p = products[idx[static_cast<size_t>(u)]];
    MatMulNT<float>(p.x, p.w.k, p.m, static_cast<const float*>(p.w.data), p.w.k, p.w.n, p.w.k,
                    p.y, p.w.n, false, prec);
  });
}

// Quantised activations reused across calls by the calling thread (decode calls this per layer).
struct ActsPool {
  std::vector<std::unique_ptr<QuantActsBuffer>> buffers;
  size_t used = 0;
  QuantActsBuffer& Next() {
    if (used == buffers.size()) buffers.push_back(std::make_unique<QuantActsBuffer>());
    return *buffers[used++];
  }
};

}  // namespace

WeightRef AsWeight(const Tensor& w, const char* what) {
  MOE_CHECK(w.defined() && w.shape().rank == 2, "linear", "{} {} is not a matrix [out, in]", what,
            w.shape().str());
  MOE_CHECK(w.dtype() == DType::kF32 || IsQuantized(w.dtype()), "linear",
            "{} {} is {}: inference runs F32 or block-quantised weights", what, w.shape().str(),
            DTypeName(w.dtype()));
  return {w.dtype(), w.raw(), w.shape()[0], w.shape()[1]};
}

int64_t WeightBytes(const WeightRef& w) { return w.n * RowBytes(w); }

void WeightMatMul(std::span<const WeightProduct> products, Context& ctx) {
  std::vector<size_t> few, f32_many;
  for (size_t i = 0; i < products.size(); ++i) {
    const WeightProduct& p = products[i];
    CheckProduct(p);
    if (p.m == 0 || p.w.n == 0) continue;
    if (p.w.k == 0) {
      std::fill(p.y, p.y + p.m * p.w.n, 0.0f);
      continue;
    }
    if (p.m <= kFewRows) {
      few.push_back(i);
    } else if (p.w.dtype == DType::kF32) {
      f32_many.push_back(i);
    } else {
      RunAlone(p, ctx);
    }
  }
  RunF32Products(products, f32_many, ctx);
  if (few.empty()) return;

  // Quantise each distinct x once per activation format its weights need.
  const QuantOps& ops = ActiveQuantOps();
  thread_local ActsPool pool;
  pool.used = 0;
  struct Job {
    const WeightProduct* p;
    const QuantActs* acts;  // null for f32
    int64_t row_bytes;
    int64_t row_cost;  // bytes read per weight row (the split is by bytes)
    int64_t begin;     // first byte of this job in the concatenation
  };
  std::vector<Job> jobs;
  jobs.reserve(few.size());
  int64_t total = 0;
  for (size_t i : few) {
    const WeightProduct& p = products[i];
    Job j{&p, nullptr, RowBytes(p.w), 0, total};
    if (p.w.dtype != DType::kF32) {
      const bool x16 = IsTiled(p.w.dtype);
      if (x16) (void)X16Kernel(p.w.dtype);  // the Error here, not in a worker
      const QuantType t = x16 ? TiledBase(p.w.dtype) : QuantTypeOf(p.w.dtype);
      const int block = static_cast<int>(QuantBlockSize(t));
      const ActLayout layout = x16 ? ActLayout::kNatural : ops.layout[static_cast<int>(t)];
      for (const Job& o : jobs)
        if (o.acts && o.p->x == p.x && o.p->m == p.m && o.p->w.k == p.w.k && o.acts->block == block &&
            o.acts->layout == layout) {
          j.acts = o.acts;
          break;
        }
      if (!j.acts) {
        QuantActs& a = pool.Next().Reset(p.m, p.w.k, block, layout);
        ops.quantize_acts(p.x, 0, p.m, a);
        j.acts = &a;
      }
    }
    // Rows cost their bytes, plus a little for the per-row work of the few-row kernels.
    j.row_cost = j.row_bytes + 64;
    total += j.row_cost * p.w.n;
    jobs.push_back(j);
  }

  // Guided self-scheduling over the bytes: each claim takes a share of what is left (at least
  // kMinClaim bytes), so a thread slowed by the machine or by other work does not leave the other
  // waiting at the end of the region. A row belongs to the claim that holds its first byte, and
  // its value does not depend on which thread computes it.
  constexpr int64_t kMinClaim = 48 << 10;
  const int workers = ctx.threads();
  const MatmulPrecision prec = ctx.matmul_precision();
  std::atomic<int64_t> cursor{0};
  auto run_bytes = [&](int64_t lo_byte, int64_t hi_byte) {
    for (const Job& j : jobs) {
      const WeightProduct& p = *j.p;
      const int64_t end = j.begin + j.row_cost * p.w.n;
      if (end <= lo_byte || j.begin >= hi_byte) continue;
      // Tiled rows go in whole tiles: a tile belongs to the claim that holds its first byte.
      const int64_t unit = IsTiled(p.w.dtype) ? kTileRows : 1;
      auto first_row = [&](int64_t byte) {
        const int64_t cost = j.row_cost * unit;
        return std::clamp<int64_t>((byte - j.begin + cost - 1) / cost * unit, 0, p.w.n);
      };
      const int64_t r0 = lo_byte <= j.begin ? 0 : first_row(lo_byte);
      const int64_t r1 = hi_byte >= end ? p.w.n : first_row(hi_byte);
      if (r0 >= r1) continue;
      if (unit > 1) {
        X16Rows(TiledKernel(p.w.dtype), p.w, r0 / unit, r1 / unit, *j.acts, p.m, p.y);
      } else if (j.acts) {
        QuantDotRows(ops, QuantTypeOf(p.w.dtype), static_cast<const uint8_t*>(p.w.data),
                     j.row_bytes, r0, r1, *j.acts, p.m, p.y, p.w.n);
      } else {
        const auto* wf = static_cast<const float*>(p.w.data);
        MatMulNT<float>(p.x, p.w.k, p.m, wf + r0 * p.w.k, p.w.k, r1 - r0, p.w.k, p.y + r0, p.w.n,
                        false, prec);
      }
    }
  };
  ParallelForRange(workers, ctx, [&](int64_t, int64_t, int) {
    int64_t cur = cursor.load(std::memory_order_relaxed);
    while (cur < total) {
      const int64_t next = std::min(total, cur + std::max(kMinClaim, (total - cur) / (2 * workers)));
      if (cursor.compare_exchange_weak(cur, next, std::memory_order_relaxed)) {
        run_bytes(cur, next);
        cur = cursor.load(std::memory_order_relaxed);
      }
    }
  });
}

void WeightMatMul(CView<float> x, const Tensor& w, View<float> y, Context& ctx) {
  const WeightRef ref = AsWeight(w);
  MOE_CHECK(x.cols() == ref.k && y.rows() == x.rows() && y.cols() == ref.n, "linear",
            "x {} * w {}^T ({}) does not fit y {}", x.shape.str(), w.shape().str(),
            DTypeName(w.dtype()), y.shape.str());
  const WeightProduct p{x.data, x.rows(), ref, y.data};
  WeightMatMul(std::span<const WeightProduct>(&p, 1), ctx);
}

}  // namespace moe::kernels
