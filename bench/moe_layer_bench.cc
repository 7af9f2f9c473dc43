// Google Benchmark suite: the MoE layer (forward, forward+backward), the equal-active dense FFN, the
// few-row decode product and sgemm, over the shapes of docs/DESIGN.md. Counters: tokens/s, GFLOP/s
// over active FLOPs (moe::mixture::MoeForwardFlops) and GB/s of weights read (ActiveWeightBytes).
// Threads: MOE_THREADS (default: all cores). See bench/README.md.
#include <benchmark/benchmark.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/rng.h"
#include "moe/core/tensor.h"
#include "moe/kernels/matmul.h"
#include "moe/mixture/experts.h"
#include "moe/mixture/moe_layer.h"
#include "moe/mixture/presets.h"

namespace {

using moe::Context;
using moe::DType;
using moe::Rng;
using moe::Tensor;
namespace mx = moe::mixture;

Context& Ctx() {
  static Context ctx(moe::ContextOptions{});
  return ctx;
}

void FillNormal(Tensor& t, Rng& rng, double std) {
  auto v = t.view<float>();
  for (int64_t i = 0; i < v.numel(); ++i) v[i] = static_cast<float>(rng.Normal() * std);
}

// Layer copies so that few-token calls read their weights from DRAM, as in a deep model.
int64_t Copies(double bytes_per_copy, int64_t tokens) {
  return tokens <= 64 ? std::max<int64_t>(1, static_cast<int64_t>(std::ceil(512e6 / bytes_per_copy))) : 1;
}

void BM_MoeLayer(benchmark::State& state, std::string preset, bool backward) {
  const mx::MoeConfig& cfg = mx::FindLayerPreset(preset).config;
  const int64_t nt = state.range(0);
  Rng rng(1234);
  mx::MoeWeights probe;
  probe.Allocate(cfg, DType::kF32);
  double layer_bytes = 0;
  probe.ForEachTensor([&](std::string_view, Tensor& t) { layer_bytes += static_cast<double>(t.nbytes()); });
  std::vector<mx::MoeWeights> layers(static_cast<size_t>(Copies(layer_bytes, nt)));
  for (auto& w : layers) w.InitRandom(cfg, DType::kF32, rng);
  Tensor x(DType::kF32, {nt, cfg.d_model}), y(DType::kF32, {nt, cfg.d_model});
  Tensor dy(DType::kF32, {nt, cfg.d_model}), dx(DType::kF32, {nt, cfg.d_model});
  FillNormal(x, rng, 1.0);
  FillNormal(dy, rng, 1.0);
  mx::MoeState<float> st;
  mx::MoeWeights grad;
  if (backward) grad.Allocate(cfg, DType::kF32);
  size_t which = 0;
  double flops = 0, bytes = 0;
  for (auto _ : state) {
    const auto& w = layers[which];
    which = (which + 1) % layers.size();
    mx::MoeForward<float>(cfg, w, x.view<const float>(), y.view<float>(), st, Ctx(),
                          {.training = backward, .seed = 7});
    if (backward) {
      mx::MoeBackward<float>(cfg, w, x.view<const float>(), dy.view<const float>(), st, grad,
                             dx.view<float>(), Ctx());
    }
    flops += mx::MoeForwardFlops(cfg, nt, st.stats.assignments) * (backward ? 3.0 : 1.0);
    bytes += mx::ActiveWeightBytes(cfg, st.stats.tokens_per_expert, nt);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(nt), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
  if (!backward) state.counters["weight GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsRate);
}

// Dense SwiGLU FFN with the active parameters of the preset: hidden K*F (+ shared).
void BM_DenseFfn(benchmark::State& state, std::string preset, bool backward) {
  const mx::MoeConfig& cfg = mx::FindLayerPreset(preset).config;
  const int64_t nt = state.range(0), d = cfg.d_model, fd = cfg.top_k * cfg.d_ff + cfg.shared_d_ff;
  Rng rng(99);
  const int64_t copies = Copies(12.0 * static_cast<double>(d * fd), nt);
  std::vector<Tensor> w13s, w2s;
  for (int64_t c = 0; c < copies; ++c) {
    w13s.emplace_back(DType::kF32, moe::Shape{2 * fd, d});
    w2s.emplace_back(DType::kF32, moe::Shape{d, fd});
    FillNormal(w13s.back(), rng, 1.0 / std::sqrt(static_cast<double>(d)));
    FillNormal(w2s.back(), rng, 1.0 / std::sqrt(static_cast<double>(fd)));
  }
  Tensor x(DType::kF32, {nt, d}), y(DType::kF32, {nt, d}), h(DType::kF32, {nt, 2 * fd}), a(DType::kF32, {nt, fd});
  Tensor dy(DType::kF32, {nt, d}), dx(DType::kF32, {nt, d}), dh(DType::kF32, {nt, 2 * fd}), da(DType::kF32, {nt, fd});
  Tensor dw13(DType::kF32, {2 * fd, d}), dw2(DType::kF32, {d, fd});
  FillNormal(x, rng, 1.0);
  FillNormal(dy, rng, 1.0);
  size_t wc = 0;
  for (auto _ : state) {
    const mx::FfnGroup<float> g{nt, fd, x.view<float>().data, w13s[wc].view<float>().data,
                                w2s[wc].view<float>().data, h.view<float>().data, a.view<float>().data,
                                y.view<float>().data};
    wc = (wc + 1) % w13s.size();
    mx::GroupedSwiGluForward<float>({g}, d, Ctx());
    if (backward) {
      mx::GroupedSwiGluBackward<float>({g}, {{dy.view<float>().data, dx.view<float>().data, da.view<float>().data,
                                              dh.view<float>().data, dw13.view<float>().data, dw2.view<float>().data}},
                                       d, Ctx());
    }
  }
  const double flops = 6.0 * static_cast<double>(nt * d * fd) * (backward ? 3.0 : 1.0);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(nt), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// y[m, N] = x[m, K] W[N, K]^T for few rows m over a weight larger than the cache: the decode product.
void BM_DecodeMatMul(benchmark::State& state) {
  const int64_t m = state.range(0), n = 4096, k = 4096;
  const int64_t copies = 8;  // 8 x 64 MiB
  Rng rng(5);
  std::vector<Tensor> ws;
  for (int64_t c = 0; c < copies; ++c) {
    ws.emplace_back(DType::kF32, moe::Shape{n, k});
    FillNormal(ws.back(), rng, 0.02);
  }
  Tensor x(DType::kF32, {m, k}), y(DType::kF32, {m, n});
  FillNormal(x, rng, 1.0);
  size_t c = 0;
  for (auto _ : state) {
    const float* w = ws[c].view<float>().data;
    c = (c + 1) % ws.size();
    moe::kernels::LinearForward<float>(x.view<const float>(), {w, {n, k}}, y.view<float>(), Ctx());
    benchmark::DoNotOptimize(y.view<float>().data);
  }
  state.counters["GB/s"] = benchmark::Counter(4.0 * static_cast<double>(n * k) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Sgemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  Rng rng(3);
  Tensor a(DType::kF32, {n, n}), b(DType::kF32, {n, n}), c(DType::kF32, {n, n});
  FillNormal(a, rng, 1.0);
  FillNormal(b, rng, 1.0);
  for (auto _ : state) {
    moe::kernels::LinearForward<float>(a.view<const float>(), b.view<const float>(), c.view<float>(), Ctx());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * std::pow(static_cast<double>(n), 3) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void Register() {
  for (const char* p : {"mixtral", "olmoe", "deepseek"}) {
    for (bool bwd : {false, true}) {
      const std::string tag = std::string(p) + (bwd ? "/fwd_bwd" : "/fwd");
      auto* b = benchmark::RegisterBenchmark(("MoeLayer/" + tag).c_str(), BM_MoeLayer, std::string(p), bwd);
      auto* d = benchmark::RegisterBenchmark(("DenseFfn/" + tag).c_str(), BM_DenseFfn, std::string(p), bwd);
      for (auto* bm : {b, d}) {
        if (!bwd) bm->Arg(1)->Arg(8);
        bm->Arg(512)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
      }
    }
  }
  benchmark::RegisterBenchmark("DecodeMatMul", BM_DecodeMatMul)->DenseRange(1, 8)->UseRealTime();
  benchmark::RegisterBenchmark("Sgemm", BM_Sgemm)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
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
