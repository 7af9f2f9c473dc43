// Google Benchmark cases for QuantMatMul (moe/kernels/quant.h), per type and ISA table:
//   QuantDecode/<type>/<isa>/m:M/threads:T   y[M, N] = x[M, 4096] W^T over 256 MB of weights (far
//       larger than the cache), so each call streams every weight byte from DRAM once. Counters:
//       GB (weight bytes read) and GFLOP per second (Google Benchmark's mean over the iterations),
//       and the roofline comparison: before the timed loop, the read-bandwidth probe
//       (MeasureReadBandwidthGBs, same threads, 1 GiB) and one kernel call alternate kRounds
//       times, so both see the same machine state; ReadBW is the probe's best, GB/s_best the
//       kernel's best, BW% = 100 * GB/s_best / ReadBW (best against best, as the probe reports).
//   QuantPrefill/<type>/<isa>/m:512/threads:T   N = K = 4096. Counters: GFLOP per second (2*M*N*K
//       per call, mean), and against MeasureSgemmGflops (f32 OpenBLAS 2048^3, same threads, best of
//       3) measured in alternation with the kernel like the decode probe: Sgemm, GFLOP/s_best and
//       xSgemm = GFLOP/s_best / Sgemm.
//   QuantDecodeInCache/<type>/<isa>   m = 1, one thread, 384 KB of weights that stay in L2: the
//       kernel's compute ceiling in weight GB/s (what a thread could stream if memory kept up).
//   Quant{Decode[InCache],Prefill}/<Q8_0x16|Q4_0x16|Q4_Kx16|Q5_Kx16|Q6_Kx16>/avx512vnni   the same
//       regrouped in tiles of 16 rows (moe/kernels/quant_repack.h), split over tiles (prefill:
//       through WeightMatMul, as the models run it); only with AVX512-VNNI.
// Weights are random bytes with finite f16 scales: every byte pattern is a valid encoding, and the
// kernels' speed does not depend on the values. Benchmarks never assert. See docs/QUANT.md.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/dtype.h"
#include "moe/core/rng.h"
#include "moe/core/tensor.h"
#include "moe/kernels/isa/quant_ops.h"
#include "moe/kernels/quant_repack.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/roofline.h"
#include "moe/kernels/weight_matmul.h"

namespace {

using moe::Context;
using moe::ContextOptions;
using moe::kernels::QuantOps;
using moe::kernels::QuantType;

constexpr int64_t kK = 4096;
constexpr int64_t kDecodeBytes = int64_t{256} << 20;
constexpr int64_t kProbeFloats = (int64_t{1} << 30) / 4;
constexpr int kRounds = 7;

Context& Ctx(int threads) {
  static std::map<int, std::unique_ptr<Context>> contexts;
  auto& c = contexts[threads];
  if (!c) c = std::make_unique<Context>(ContextOptions{.threads = threads});
  return *c;
}

struct Buffer {
  explicit Buffer(int64_t bytes) : p(moe::AlignedAlloc(static_cast<size_t>(bytes))) {}
  ~Buffer() { moe::AlignedFree(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* p;
};

// n rows of k random-valued blocks of type t with f16 scales of about 1e-2.
void FillWeights(QuantType t, int64_t n, int64_t k, uint8_t* w, Context& ctx) {
  const int64_t rb = moe::kernels::QuantRowBytes(t, k);
  const int64_t bb = moe::kernels::QuantBlockBytes(t);
  moe::ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int) {
    moe::Rng rng(static_cast<uint64_t>(b) + 17);
    for (int64_t j = b; j < e; ++j) {
      uint8_t* row = w + j * rb;
      for (int64_t i = 0; i + 8 <= rb; i += 8) {
        const uint64_t r = rng.Next();
        std::memcpy(row + i, &r, 8);
      }
      for (int64_t i = rb / 8 * 8; i < rb; ++i) row[i] = static_cast<uint8_t>(rng.Next());
      for (int64_t off = 0; off < rb; off += bb) {
        const uint16_t h = moe::ToF16(0.01f);
        switch (t) {
          case QuantType::kQ6_K: std::memcpy(row + off + 208, &h, 2); break;
          case QuantType::kQ4_K:
          case QuantType::kQ5_K: std::memcpy(row + off + 2, &h, 2); [[fallthrough]];
          default: std::memcpy(row + off, &h, 2); break;
        }
      }
    }
  });
}

std::vector<float> RandomX(int64_t m, int64_t k) {
  moe::Rng rng(3);
  std::vector<float> x(static_cast<size_t>(m * k));
  for (auto& v : x) v = static_cast<float>(rng.Normal());
  return x;
}

// y = x W^T for W [n, kK] in its tiled layout at w: activations quantised once, tiles split
// over the threads (what QuantMatMulWith does for the mapped layout).
void X16MatMul(QuantType t, const void* w, int64_t n, const float* x, int64_t m, float* y,
               Context& ctx) {
  thread_local moe::kernels::QuantActsBuffer buf;
  const moe::kernels::QuantActs& a =
      buf.Reset(m, kK, static_cast<int>(moe::kernels::QuantBlockSize(t)),
                moe::kernels::ActLayout::kNatural);
  moe::kernels::ActiveQuantOps().quantize_acts(x, 0, m, a);
  const moe::kernels::TiledDotFn fn = moe::kernels::TiledKernel(moe::kernels::TiledOf(t));
  moe::ParallelForRange(n / 16, ctx, [&](int64_t t0, int64_t t1, int) {
    fn(static_cast<const uint8_t*>(w), kK, t0, t1, a, m, y, n);
  });
}

// ops == nullptr: the weights repacked in their tiled layout (Q4_0x16, Q4_Kx16, ...).
void MatMul(const QuantOps* ops, QuantType t, const void* w, int64_t n, const float* x, int64_t m,
            float* y, Context& ctx) {
  if (ops) {
    moe::kernels::QuantMatMulWith(*ops, t, w, n, kK, x, m, y, ctx);
  } else {
    X16MatMul(t, w, n, x, m, y, ctx);
  }
}

void Repack(const QuantOps* ops, QuantType t, int64_t n, Buffer& w) {
  if (ops) return;
  const auto bytes = static_cast<size_t>(moe::kernels::QuantMatrixBytes(t, n, kK));
  Buffer tmp(static_cast<int64_t>(bytes));
  std::memcpy(tmp.p, w.p, bytes);
  moe::kernels::RepackTiled(moe::kernels::TiledOf(t), tmp.p, n, kK, w.p);
}

void BM_Decode(benchmark::State& state, QuantType t, const QuantOps* ops) {
  const int64_t m = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  Context& ctx = Ctx(threads);
  const int64_t rb = moe::kernels::QuantRowBytes(t, kK);
  const int64_t n = kDecodeBytes / rb / 16 * 16;
  Buffer w(n * rb);
  FillWeights(t, n, kK, static_cast<uint8_t*>(w.p), ctx);
  Repack(ops, t, n, w);
  const std::vector<float> x = RandomX(m, kK);
  std::vector<float> y(static_cast<size_t>(m * n));
  // The probe's buffer, first-touched by the workers that read it.
  Buffer probe(kProbeFloats * 4);
  auto* pf = static_cast<float*>(probe.p);
  moe::ParallelForRange(kProbeFloats, ctx, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) pf[i] = 1.0f;
  });
  double bw = 0, best = 1e30;
  for (int r = 0; r < kRounds; ++r) {
    bw = std::max(bw, moe::kernels::MeasureReadBandwidthGBs(ctx, pf, kProbeFloats, 1));
    const double t0 = moe::kernels::NowSeconds();
    MatMul(ops, t, w.p, n, x.data(), m, y.data(), ctx);
    best = std::min(best, moe::kernels::NowSeconds() - t0);
  }
  for (auto _ : state) {
    MatMul(ops, t, w.p, n, x.data(), m, y.data(), ctx);
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = static_cast<double>(n * rb);
  state.counters["GB"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP"] = benchmark::Counter(2e-9 * static_cast<double>(m * n * kK),
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s_best"] = bytes * 1e-9 / best;
  state.counters["ReadBW"] = bw;
  state.counters["BW%"] = 100.0 * bytes * 1e-9 / best / bw;
}

void BM_DecodeInCache(benchmark::State& state, QuantType t, const QuantOps* ops) {
  Context& ctx = Ctx(1);
  const int64_t rb = moe::kernels::QuantRowBytes(t, kK);
  const int64_t n = (int64_t{384} << 10) / rb / 16 * 16;
  Buffer w(n * rb);
  FillWeights(t, n, kK, static_cast<uint8_t*>(w.p), ctx);
  Repack(ops, t, n, w);
  const std::vector<float> x = RandomX(1, kK);
  std::vector<float> y(static_cast<size_t>(n));
  for (auto _ : state) {
    MatMul(ops, t, w.p, n, x.data(), 1, y.data(), ctx);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB"] = benchmark::Counter(static_cast<double>(n * rb) * 1e-9,
                                            benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Prefill(benchmark::State& state, QuantType t, const QuantOps* ops) {
  const int64_t m = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  Context& ctx = Ctx(threads);
  const int64_t n = 4096;
  const int64_t rb = moe::kernels::QuantRowBytes(t, kK);
  Buffer w(n * rb);
  FillWeights(t, n, kK, static_cast<uint8_t*>(w.p), ctx);
  Repack(ops, t, n, w);
  const std::vector<float> x = RandomX(m, kK);
  std::vector<float> y(static_cast<size_t>(m * n));
  const double flop = 2.0 * static_cast<double>(m * n * kK);
  const moe::DType dtype = ops ? moe::kernels::ToDType(t) : moe::kernels::TiledOf(t);
  const moe::Tensor weight = moe::Tensor::Borrow(dtype, {n, kK}, w.p, nullptr);
  const auto run = [&] {
    if (ops) {
      moe::kernels::QuantMatMulWith(*ops, t, w.p, n, kK, x.data(), m, y.data(), ctx);
    } else {
      moe::kernels::WeightMatMul(moe::CView<float>(x.data(), {m, kK}), weight,
                                 moe::View<float>(y.data(), {m, n}), ctx);
    }
  };
  double sgemm = 0, best = 1e30;
  for (int r = 0; r < 3; ++r) {
    sgemm = std::max(sgemm, moe::kernels::MeasureSgemmGflops(ctx, 2048, 2048, 2048, 1));
    const double t0 = moe::kernels::NowSeconds();
    run();
    best = std::min(best, moe::kernels::NowSeconds() - t0);
  }
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP"] =
      benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s_best"] = flop * 1e-9 / best;
  state.counters["Sgemm"] = sgemm;
  state.counters["xSgemm"] = flop * 1e-9 / best / sgemm;
}

void Register() {
  for (QuantType t : moe::kernels::kAllQuantTypes) {
    const moe::DType tiled = moe::kernels::TiledOf(t);  // kF32: no tiled form
    if (!moe::kernels::TiledKernel(tiled)) continue;
    const std::string tag = std::string(moe::DTypeName(tiled)) + "/avx512vnni";
    benchmark::RegisterBenchmark(("QuantDecode/" + tag).c_str(), BM_Decode, t, nullptr)
        ->ArgNames({"m", "threads"})
        ->ArgsProduct({{1, 8}, {1, 2}})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(1.0);
    benchmark::RegisterBenchmark(("QuantDecodeInCache/" + tag).c_str(), BM_DecodeInCache, t,
                                 nullptr)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime()
        ->MinTime(0.5);
    benchmark::RegisterBenchmark(("QuantPrefill/" + tag).c_str(), BM_Prefill, t, nullptr)
        ->ArgNames({"m", "threads"})
        ->ArgsProduct({{512}, {1, 2}})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(1.0);
  }
  for (const QuantOps* ops : moe::kernels::AvailableQuantOps()) {
    for (QuantType t : moe::kernels::kAllQuantTypes) {
      const std::string tag =
          std::string(moe::kernels::QuantTypeName(t)) + "/" + std::string(ops->name);
      benchmark::RegisterBenchmark(("QuantDecode/" + tag).c_str(), BM_Decode, t, ops)
          ->ArgNames({"m", "threads"})
          ->ArgsProduct({{1, 8}, {1, 2}})
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(1.0);
      benchmark::RegisterBenchmark(("QuantDecodeInCache/" + tag).c_str(), BM_DecodeInCache, t, ops)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime()
          ->MinTime(0.5);
      benchmark::RegisterBenchmark(("QuantPrefill/" + tag).c_str(), BM_Prefill, t, ops)
          ->ArgNames({"m", "threads"})
          ->ArgsProduct({{512}, {1, 2}})
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(1.0);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Register();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
