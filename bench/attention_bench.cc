// Decode attention (one query per sequence) over a KV cache, at the geometries of the benchmark
// models: OLMoE-like (16 query / 16 kv heads of 64), Mixtral-like (16 / 4) and DeepSeek-like MLA
// latent attention (16 heads over one latent head: keys 576 wide, values 512), in the inference
// cache's head-major layout. Enough layers' caches (at least 64 MB, twice a large L3) are visited
// in turn that each call reads its keys and values from memory, as a model's decode does (the
// weights stream through the caches between two visits of a layer). Name:
// DecodeAttention/<geometry>/ctx:N/threads:T; counter GB/s = key and value bytes read per second
// (compare it with the read bandwidth of `moe bench model`).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/rng.h"
#include "moe/kernels/attention.h"
#include "moe/kernels/isa/row_ops.h"

namespace {

struct AttnGeometry {
  int64_t h, hkv, dk, dv;
  moe::kernels::KvLayout layout = moe::kernels::KvLayout::kHeadMajor;
};

void BM_DecodeAttention(benchmark::State& state, AttnGeometry geo) {
  const int64_t ctx_len = state.range(0);
  moe::Context ctx({.threads = static_cast<int>(state.range(1))});
  const int64_t layer_bytes = 4 * ctx_len * geo.hkv * (geo.dk + geo.dv);
  const int kLayers = static_cast<int>(std::max<int64_t>(2, ((int64_t{64} << 20) + layer_bytes - 1) / layer_bytes));
  moe::Rng rng(11);
  auto fill = [&](std::vector<float>& v, int64_t n) {
    v.resize(static_cast<size_t>(n));
    for (auto& x : v) x = static_cast<float>(rng.Normal());
  };
  std::vector<float> q, out(static_cast<size_t>(geo.h * geo.dv));
  fill(q, geo.h * geo.dk);
  std::vector<std::vector<float>> k(kLayers), v(kLayers);
  const int64_t nk = ctx_len * geo.hkv * geo.dk, nv = ctx_len * geo.hkv * geo.dv;
  for (int l = 0; l < kLayers; ++l) {
    fill(k[l], nk);
    fill(v[l], nv);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(geo.dk));
  int layer = 0;
  const bool hm = geo.layout == moe::kernels::KvLayout::kHeadMajor;
  const moe::Shape ks = hm ? moe::Shape{geo.hkv, ctx_len, geo.dk} : moe::Shape{ctx_len, geo.hkv, geo.dk};
  const moe::Shape vs = hm ? moe::Shape{geo.hkv, ctx_len, geo.dv} : moe::Shape{ctx_len, geo.hkv, geo.dv};
  for (auto _ : state) {
    moe::kernels::AttentionForward<float>(
        moe::CView<float>(q.data(), {1, geo.h, geo.dk}), moe::CView<float>(k[layer].data(), ks),
        moe::CView<float>(v[layer].data(), vs), ctx_len - 1, scale,
        moe::View<float>(out.data(), {1, geo.h, geo.dv}), moe::View<float>(), ctx, 0, geo.layout);
    benchmark::DoNotOptimize(out.data());
    layer = (layer + 1) % kLayers;
  }
  const double bytes = 4.0 * static_cast<double>(ctx_len * geo.hkv * (geo.dk + geo.dv));
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"ctx", "threads"});
  for (int64_t n : {128, 540, 4096})
    for (int64_t t : {1, 2}) b->Args({n, t});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_DecodeAttention, olmoe, AttnGeometry{16, 16, 64, 64})->Apply(Args);
BENCHMARK_CAPTURE(BM_DecodeAttention, mixtral, AttnGeometry{16, 4, 64, 64})->Apply(Args);
BENCHMARK_CAPTURE(BM_DecodeAttention, mla, AttnGeometry{16, 1, 576, 512})->Apply(Args);
// The token-major layout (training's, and the cache's before head-major), for comparison.
BENCHMARK_CAPTURE(BM_DecodeAttention, olmoe_token_major,
                  AttnGeometry{16, 16, 64, 64, moe::kernels::KvLayout::kTokenMajor})
    ->Apply(Args);
BENCHMARK_CAPTURE(BM_DecodeAttention, mixtral_token_major,
                  AttnGeometry{16, 4, 64, 64, moe::kernels::KvLayout::kTokenMajor})
    ->Apply(Args);

// The same bytes read as one plain stream per thread (the limit the attention rows compare with).
void BM_KvStream(benchmark::State& state) {
  const int64_t floats = state.range(0) / 4;
  moe::Context ctx({.threads = static_cast<int>(state.range(1))});
  const int layers = static_cast<int>(std::max<int64_t>(2, (int64_t{64} << 20) / state.range(0)));
  std::vector<std::vector<float>> buf(static_cast<size_t>(layers),
                                      std::vector<float>(static_cast<size_t>(floats), 1.0f));
  const moe::kernels::RowOps& ops = moe::kernels::ActiveRowOps();
  std::vector<float> part(64);
  int layer = 0;
  for (auto _ : state) {
    const float* b = buf[static_cast<size_t>(layer)].data();
    moe::ParallelForRange(floats / 16, ctx, [&](int64_t lo, int64_t hi, int w) {
      part[static_cast<size_t>(16 * w)] += ops.sum(b + 16 * lo, 16 * (hi - lo));
    });
    benchmark::DoNotOptimize(part.data());
    layer = (layer + 1) % layers;
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(state.range(0)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
// The KV bytes of one mixtral-like layer at ctx 540 and 4096 (olmoe-like: x4).
BENCHMARK(BM_KvStream)
    ->ArgNames({"bytes", "threads"})
    ->Args({540 * 4 * 128 * 4, 1})
    ->Args({540 * 4 * 128 * 4, 2})
    ->Args({4096 * 4 * 128 * 4, 1})
    ->Args({4096 * 4 * 128 * 4, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
