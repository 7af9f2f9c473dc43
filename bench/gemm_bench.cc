// Single-threaded matrix products at the shapes of training: OpenBLAS sgemm (f32) against our bf16
// kernel (AVX512-BF16, inputs rounded to bf16, f32 accumulation). Both are serial, as inside pool
// tasks. Name: Gemm/<f32|bf16>/ta:tb:m:n:k, counter GFLOP/s = 2 m n k per second. Compare the two in
// one run (this machine is shared: ratios are what holds).
#include <benchmark/benchmark.h>

#include <vector>

#include "moe/core/context.h"
#include "moe/core/cpu.h"
#include "moe/core/rng.h"
#include "moe/kernels/matmul.h"

namespace {

void BM_Gemm(benchmark::State& state, moe::MatmulPrecision precision) {
  static moe::Context ctx({.threads = 1});  // sets OpenBLAS to one thread
  if (precision == moe::MatmulPrecision::kBf16 && !moe::HasBf16Matmul()) {
    state.SkipWithError("this CPU has no AVX512-BF16");
    return;
  }
  const bool ta = state.range(0) != 0, tb = state.range(1) != 0;
  const int64_t m = state.range(2), n = state.range(3), k = state.range(4);
  moe::Rng rng(7);
  std::vector<float> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n)), c(static_cast<size_t>(m * n));
  for (auto& x : a) x = static_cast<float>(rng.Normal());
  for (auto& x : b) x = static_cast<float>(rng.Normal());
  for (auto _ : state) {
    if (precision == moe::MatmulPrecision::kBf16)
      moe::kernels::GemmBf16(ta, tb, m, n, k, 1.0f, a.data(), ta ? m : k, b.data(), tb ? k : n, 0.0f, c.data(), n);
    else
      moe::kernels::Gemm<float>(ta, tb, m, n, k, 1.0f, a.data(), ta ? m : k, b.data(), tb ? k : n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(m * n * k) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// {trans_a, trans_b, m, n, k}: forward y = x W^T (NT), input gradient dx = dy W (NN), weight
// gradient dW = dy^T x (TN, K = tokens), from tiny-preset expert blocks to Mixtral-like widths.
void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"ta", "tb", "m", "n", "k"});
  for (const auto& s : std::vector<std::vector<int64_t>>{{0, 1, 256, 64, 128},
                                                         {0, 1, 1024, 128, 128},
                                                         {0, 1, 1024, 512, 128},
                                                         {0, 1, 2048, 1408, 512},
                                                         {0, 0, 1024, 512, 256},
                                                         {0, 0, 2048, 512, 1408},
                                                         {1, 0, 128, 64, 512},
                                                         {1, 0, 512, 256, 2048},
                                                         {1, 0, 1408, 512, 2048},
                                                         {1, 0, 128, 128, 4096}})
    b->Args(s);
  b->Unit(benchmark::kMicrosecond);
}

BENCHMARK_CAPTURE(BM_Gemm, f32, moe::MatmulPrecision::kF32)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Gemm, bf16, moe::MatmulPrecision::kBf16)->Apply(Shapes);

}  // namespace
