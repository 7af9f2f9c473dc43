#include "moe/kernels/roofline.h"

#include <algorithm>
#include <chrono>
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

Roofline MeasureRoofline(Context& ctx) {
  Roofline r;
  r.sgemm_gflops = MeasureSgemmGflops(ctx);
  r.bandwidth_gbs = MeasureReadBandwidthGBs(ctx);
  return r;
}

}  // namespace moe::kernels
