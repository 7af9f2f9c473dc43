#include "moe/kernels/roofline.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "moe/core/rng.h"
#include "moe/core/tensor.h"
#include "moe/kernels/isa/row_ops.h"
#include "moe/kernels/matmul.h"

namespace moe::kernels {

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double MeasureSgemmGflops(Context& ctx, int64_t m, int64_t n, int64_t k, int reps) {
  Tensor a(DType::kF32, {m, k}), b(DType::kF32, {n, k}), c(DType::kF32, {m, n});
  Rng rng(1);
  auto av = a.view<float>();
  auto bv = b.view<float>();
  for (int64_t i = 0; i < av.numel(); ++i) av[i] = static_cast<float>(rng.Uniform(-1, 1));
  for (int64_t i = 0; i < bv.numel(); ++i) bv[i] = static_cast<float>(rng.Uniform(-1, 1));
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {
    const double t0 = NowSeconds();
    LinearForward<float>(a.view<const float>(), b.view<const float>(), c.view<float>(), ctx);
    const double dt = NowSeconds() - t0;
    if (r > 0) best = std::min(best, dt);  // first run warms up
  }
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) / best * 1e-9;
}

double MeasureReadBandwidthGBs(Context& ctx, int64_t bytes, int reps) {
  const int64_t n = bytes / 4;
  Tensor buf(DType::kF32, {n});
  auto v = buf.view<float>();
  // Touch every page from the worker that will read it (first-touch placement).
  ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) v[i] = 1.0f;
  });
  return MeasureReadBandwidthGBs(ctx, v.data, n, reps);
}

double MeasureReadBandwidthGBs(Context& ctx, const float* buf, int64_t n, int reps) {
  const RowOps& ops = ActiveRowOps();
  std::vector<float> sink(static_cast<size_t>(ctx.threads()));
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = NowSeconds();
    // The best streaming read this CPU's SIMD level does, so the roofline is what the machine can
    // deliver, not what a baseline loop gets.
    ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int w) {
      sink[static_cast<size_t>(w)] = ops.sum(buf + b, e - b);
    });
    best = std::min(best, NowSeconds() - t0);
  }
  volatile float keep = sink[0];
  (void)keep;
  return static_cast<double>(n * 4) / best * 1e-9;
}

namespace {

// OR of n bytes in four 16-byte lanes (plain SSE2 on every x86-64: reading, not arithmetic, is
// what is measured, and 64 bytes per iteration keep well ahead of memory).
uint64_t OrBytes(const uint8_t* p, int64_t n) {
  using V = uint64_t __attribute__((vector_size(16)));
  V a0{}, a1{}, a2{}, a3{};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    V v[4];
    std::memcpy(v, p + i, 64);
    a0 |= v[0];
    a1 |= v[1];
    a2 |= v[2];
    a3 |= v[3];
  }
  uint64_t tail = 0;
  for (; i < n; ++i) tail |= p[i];
  const V a = a0 | a1 | a2 | a3;
  return a[0] | a[1] | tail;
}

}  // namespace

double MeasureRegionReadBandwidthGBs(Context& ctx, std::span<const ByteRegion> regions,
                                     int64_t max_bytes, int reps) {
  int64_t all = 0;
  for (const ByteRegion& r : regions) all += std::max<int64_t>(0, r.bytes);
  if (all == 0) return 0.0;
  // Each region contributes the same prefix fraction, so the sample spans every region.
  const double frac = std::min(1.0, static_cast<double>(max_bytes) / static_cast<double>(all));
  std::vector<ByteRegion> parts;
  std::vector<int64_t> starts;  // offset of each part in the concatenation
  int64_t total = 0;
  for (const ByteRegion& r : regions) {
    const int64_t n = std::max<int64_t>(0, r.bytes);
    const int64_t take = std::min(n, std::max<int64_t>(64, static_cast<int64_t>(static_cast<double>(n) * frac)));
    if (take <= 0 || r.data == nullptr) continue;
    parts.push_back({r.data, take});
    starts.push_back(total);
    total += take;
  }
  if (total == 0) return 0.0;
  const int workers = ctx.threads();
  std::vector<uint64_t> sink(static_cast<size_t>(workers));
  double best = 1e30;
  for (int rep = 0; rep < std::max(1, reps); ++rep) {
    const double t0 = NowSeconds();
    ParallelForRange(workers, ctx, [&](int64_t wb, int64_t we, int) {
      for (int64_t w = wb; w < we; ++w) {
        const int64_t lo = total * w / workers, hi = total * (w + 1) / workers;
        uint64_t acc = 0;
        for (size_t i = 0; i < parts.size(); ++i) {
          const int64_t b = std::max(lo, starts[i]), e = std::min(hi, starts[i] + parts[i].bytes);
          if (b < e) acc |= OrBytes(static_cast<const uint8_t*>(parts[i].data) + (b - starts[i]), e - b);
        }
        sink[static_cast<size_t>(w)] = acc;
      }
    });
    best = std::min(best, NowSeconds() - t0);
  }
  volatile uint64_t keep = sink[0];
  (void)keep;
  return static_cast<double>(total) / best * 1e-9;
}

Roofline MeasureRoofline(Context& ctx) {
  Roofline r;
  r.sgemm_gflops = MeasureSgemmGflops(ctx);
  r.bandwidth_gbs = MeasureReadBandwidthGBs(ctx);
  return r;
}

}  // namespace moe::kernels
