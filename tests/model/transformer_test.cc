// The MoE transformer: whole-model gradient checks in double for each router kind, KV-cache
// inference against the full forward, float against double, and bad inputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cmath>
#include <cstdint>
#include <functional>

#include "moe/core/cpu.h"
#include "moe/core/error.h"
#include "moe/model/transformer.h"
#include "moe/testing/compare.h"
#include "moe/testing/gradcheck.h"

namespace moe::model {
namespace {

using testing::ExpectClose;
using testing::GradCheck;
using testing::GradCheckOptions;
using testing::GradParam;
using testing::Tolerance;

ModelConfig Tiny(const std::string& kind) {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.max_seq = 6;
  c.dense_d_ff = 10;
  auto& m = c.moe;
  m.d_ff = 6;
  m.n_experts = 4;
  m.top_k = 2;
  if (kind == "mixtral") {
    m.aux_loss_coef = 0.01;
  } else if (kind == "switch") {
    m.top_k = 1;
    m.capacity_factor = 1.0;
    m.aux_loss_coef = 0.05;
    m.z_loss_coef = 0.01;
    m.jitter = 0.1;
  } else if (kind == "deepseek") {
    m.score = mixture::ScoreFn::kSigmoid;
    m.selection_bias = true;
    m.n_groups = 2;
    m.topk_groups = 1;
    m.route_scale = 2.5;
    m.shared_d_ff = 5;
  } else if (kind == "qwen2") {
    m.renormalize = false;
    m.top_k = 3;
    m.shared_d_ff = 5;
    m.shared_gate = true;
  } else if (kind == "expert_choice") {
    m.router = mixture::RouterKind::kExpertChoice;
    m.renormalize = false;
    m.capacity_factor = 1.0;
  } else if (kind == "interleaved_dense") {
    c.moe_every = 2;
    c.tie_embeddings = true;
  } else if (kind == "rope_options") {
    // The RoPE options training supports: partial rotary, interleaved pairs, YaRN scaling, an
    // explicit softmax scale, and an explicit per-layer FFN pattern (MoE first, then dense).
    c.rotary_dim = 2;
    c.rope_pairing = kernels::RopePairing::kInterleaved;
    c.rope_scaling = {.kind = kernels::RopeScalingKind::kYarn,
                      .factor = 4.0,
                      .original_max_position_embeddings = 2,
                      .mscale = 1.0,
                      .mscale_all_dim = 0.5};
    c.attn_scale = 0.7;
    c.moe_layers = {1, 0};
  }
  c.Finalize();
  return c;
}

Batch MakeBatch(const ModelConfig& c, uint64_t seed, int64_t b = 2, int64_t s = 5) {
  Rng rng(seed);
  Batch out;
  out.batch = b;
  out.seq = s;
  for (int64_t i = 0; i < b * s; ++i) {
    out.tokens.push_back(static_cast<int32_t>(rng.Below(static_cast<uint64_t>(c.vocab_size))));
    out.targets.push_back(i % 4 == 3 ? -1 : static_cast<int32_t>(rng.Below(static_cast<uint64_t>(c.vocab_size))));
  }
  return out;
}

// Routing of every MoE layer (token, expert pairs), to detect a discontinuity during FD.
template <typename T>
std::vector<std::vector<int32_t>> Routing(const ForwardState<T>& st) {
  std::vector<std::vector<int32_t>> r;
  for (const auto& l : st.layers) {
    std::vector<int32_t> v(l.moe.plan.token);
    v.insert(v.end(), l.moe.plan.expert.begin(), l.moe.plan.expert.end());
    r.push_back(v);
  }
  return r;
}

class ModelGradCheck : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGradCheck, MatchesCentralDifferences) {
  const ModelConfig cfg = Tiny(GetParam());
  Rng rng(7);
  ModelWeights w, g;
  w.InitRandom(cfg, DType::kF64, rng);
  // Larger weights than the training init so every path carries signal.
  w.ForEachTensor([&](const std::string& name, Tensor& t) {
    auto v = t.view<double>();
    for (int64_t i = 0; i < v.numel(); ++i) {
      if (name.ends_with("norm")) v[i] = 1.0 + 0.2 * rng.Normal();
      else if (name.ends_with(".bias")) v[i] = 0.1 * rng.Normal();
      else v[i] = 0.4 * rng.Normal();
    }
  });
  g.Allocate(cfg, DType::kF64);
  const Batch b = MakeBatch(cfg, 11);
  const Transformer tf(cfg);
  Context ctx({.threads = 1});
  const RunOptions ro{.training = true, .seed = 99};
  ForwardState<double> st;
  tf.Forward<double>(w, b, st, ctx, ro);
  const auto routing = Routing(st);
  tf.Backward<double>(w, b, st, g, ctx, ro);
  bool routing_changed = false;
  ForwardState<double> st2;
  auto objective = [&]() {
    const double f = tf.Forward<double>(w, b, st2, ctx, ro);
    if (Routing(st2) != routing) routing_changed = true;
    return f;
  };
  std::vector<GradParam> params;
  std::vector<std::pair<std::string, Tensor*>> gw, gg;
  w.ForEachParameter([&](const std::string& n, Tensor& t) { gw.push_back({n, &t}); });
  g.ForEachParameter([&](const std::string& n, Tensor& t) { gg.push_back({n, &t}); });
  ASSERT_EQ(gw.size(), gg.size());
  for (size_t i = 0; i < gw.size(); ++i) {
    params.push_back({gw[i].first, gw[i].second->view<double>().data, gg[i].second->view<double>().data,
                      gw[i].second->numel()});
    // Every parameter gets some gradient (a dead path would make the check vacuous).
    double mx = 0;
    for (int64_t j = 0; j < gg[i].second->numel(); ++j) mx = std::max(mx, std::abs(gg[i].second->view<double>()[j]));
    EXPECT_GT(mx, 0.0) << gw[i].first << " has an all-zero gradient";
  }
  EXPECT_TRUE(GradCheck(objective, params, GradCheckOptions{.step = 1e-6, .atol = 1e-7, .rtol = 1e-5, .max_per_param = 24}));
  EXPECT_FALSE(routing_changed) << "a perturbation changed the routing: pick another seed";
}

INSTANTIATE_TEST_SUITE_P(Routers, ModelGradCheck,
                         ::testing::Values("mixtral", "switch", "deepseek", "qwen2",
                                           "expert_choice", "interleaved_dense", "rope_options"));

TEST(Transformer, FloatMatchesDouble) {
  const ModelConfig cfg = Tiny("mixtral");
  Rng r1(3), r2(3);
  ModelWeights wf, wd, gf, gd;
  wf.InitRandom(cfg, DType::kF32, r1);
  wd.InitRandom(cfg, DType::kF64, r2);
  gf.Allocate(cfg, DType::kF32);
  gd.Allocate(cfg, DType::kF64);
  const Batch b = MakeBatch(cfg, 5);
  const Transformer tf(cfg);
  Context ctx({.threads = 2});
  ForwardState<float> sf;
  ForwardState<double> sd;
  const double lf = tf.Forward<float>(wf, b, sf, ctx);
  const double ld = tf.Forward<double>(wd, b, sd, ctx);
  EXPECT_NEAR(lf, ld, 1e-5 * std::abs(ld));
  tf.Backward<float>(wf, b, sf, gf, ctx);
  tf.Backward<double>(wd, b, sd, gd, ctx);
  std::vector<const Tensor*> af, ad;
  gf.ForEachParameter([&](const std::string&, Tensor& t) { af.push_back(&t); });
  gd.ForEachParameter([&](const std::string&, Tensor& t) { ad.push_back(&t); });
  for (size_t i = 0; i < af.size(); ++i) {
    EXPECT_TRUE(ExpectClose(af[i]->view<float>().data, ad[i]->view<double>().data, af[i]->numel(),
                            Tolerance{1e-6, 1e-3, 1e-8}));
  }
}

// Mixed precision: bf16 matrix products (f32 accumulation, f32 weights) against f32 on the same
// weights and batch. Shapes are big enough that the Linear layers and experts take the bf16 kernel.
TEST(Transformer, Bf16MatmulsMatchF32) {
  if (!HasBf16Matmul()) GTEST_SKIP() << "this CPU has no AVX512-BF16 (or MOE_ISA caps it)";
  ModelConfig cfg;
  cfg.vocab_size = 64;
  cfg.d_model = 64;
  cfg.n_layers = 2;
  cfg.n_heads = 2;
  cfg.n_kv_heads = 1;
  cfg.max_seq = 32;
  cfg.moe.d_ff = 64;
  cfg.moe.n_experts = 4;
  cfg.moe.top_k = 2;
  cfg.moe.aux_loss_coef = 0.01;
  cfg.moe.shared_d_ff = 32;
  cfg.Finalize();
  Rng rng(21);
  ModelWeights w, g32, g16;
  w.InitRandom(cfg, DType::kF32, rng);
  g32.Allocate(cfg, DType::kF32);
  g16.Allocate(cfg, DType::kF32);
  const Batch b = MakeBatch(cfg, 22, 4, 32);
  const Transformer tf(cfg);
  Context c32({.threads = 2});
  Context c16({.threads = 2, .matmul_precision = MatmulPrecision::kBf16});
  ForwardState<float> s32, s16;
  const double l32 = tf.Forward<float>(w, b, s32, c32);
  const double l16 = tf.Forward<float>(w, b, s16, c16);
  EXPECT_NE(l16, l32) << "the bf16 path did not run";
  EXPECT_NEAR(l16, l32, 1e-2 * std::abs(l32));
  tf.Backward<float>(w, b, s32, g32, c32);
  tf.Backward<float>(w, b, s16, g16, c16);
  std::vector<std::pair<std::string, const Tensor*>> a32, a16;
  g32.ForEachParameter([&](const std::string& n, Tensor& t) { a32.push_back({n, &t}); });
  g16.ForEachParameter([&](const std::string& n, Tensor& t) { a16.push_back({n, &t}); });
  ASSERT_EQ(a32.size(), a16.size());
  for (size_t i = 0; i < a32.size(); ++i) {
    const auto v32 = a32[i].second->view<const float>();
    std::vector<double> want(v32.data, v32.data + v32.numel());
    EXPECT_TRUE(ExpectClose(a16[i].second->view<const float>().data, want.data(), v32.numel(),
                            Tolerance{1e30, 0, 1e-3}, a32[i].first));
  }
}

// KV-cache inference (prefill, then one token at a time) gives the logits of the full forward.
TEST(Transformer, KvCacheMatchesFullForward) {
  for (const char* kind : {"mixtral", "deepseek", "qwen2", "interleaved_dense", "rope_options"}) {
    const ModelConfig cfg = Tiny(kind);
    Rng rng(13);
    ModelWeights w;
    w.InitRandom(cfg, DType::kF32, rng);
    const Batch b = MakeBatch(cfg, 17, 1, 6);
    const Transformer tf(cfg);
    Context ctx({.threads = 2});
    ForwardState<float> st;
    tf.Forward<float>(w, b, st, ctx);
    const auto full = st.logits.view<const float>();
    const int64_t v = cfg.vocab_size;
    // Batched prefill of all tokens with all logits.
    KvCache cache;
    cache.Allocate(cfg, 6);
    InferState is;
    tf.Infer(w, b.tokens.data(), 6, cache, is, ctx, true);
    EXPECT_TRUE(ExpectClose(is.logits.view<float>().data, full.data, 6 * v, Tolerance{1e-5, 1e-4, 1e-9})) << kind;
    // Prefill 3, then decode one at a time.
    cache.Clear();
    tf.Infer(w, b.tokens.data(), 3, cache, is, ctx);
    EXPECT_TRUE(ExpectClose(is.logits.view<float>().data, full.data + 2 * v, v, Tolerance{1e-5, 1e-4, 1e-9})) << kind;
    for (int64_t t = 3; t < 6; ++t) {
      tf.Infer(w, b.tokens.data() + t, 1, cache, is, ctx);
      EXPECT_TRUE(ExpectClose(is.logits.view<float>().data, full.data + t * v, v, Tolerance{1e-5, 1e-4, 1e-9}))
          << kind << " token " << t;
    }
    EXPECT_EQ(cache.length, 6);
    EXPECT_THROW(tf.Infer(w, b.tokens.data(), 1, cache, is, ctx), Error);  // context full
  }
}

TEST(Transformer, KvCacheReserveCommitsThePagesAheadAndKeepsTheRows) {
  ModelConfig cfg = Tiny("mixtral");
  cfg.d_model = 64;
  cfg.n_heads = 2;
  cfg.n_kv_heads = 2;
  cfg.head_dim = 32;  // rows of 128 bytes: 32 positions a page
  cfg.max_seq = 1024;
  KvCache cache;
  cache.Allocate(cfg, 1024);
  const int64_t page = 4096 / (32 * 4);
  auto resident = [&](const Tensor& t, int64_t head, int64_t pos) {
    const auto* row = static_cast<const char*>(t.raw()) + (head * 1024 + pos) * 32 * 4;
    unsigned char r = 0;
    EXPECT_EQ(::mincore(const_cast<char*>(row - (reinterpret_cast<uintptr_t>(row) % 4096)), 4096, &r), 0);
    return (r & 1) != 0;
  };
  // Rows written before (as a prefill would) stay as they are.
  auto* k1 = static_cast<float*>(cache.k[1].raw());
  k1[1024 * 32 + 5] = 3.5f;  // head 1, position 0
  cache.Reserve(100);
  EXPECT_EQ(cache.committed, 100);
  for (size_t l = 0; l < cache.k.size(); ++l)
    for (int64_t h = 0; h < 2; ++h) {
      for (int64_t pos : {int64_t{0}, int64_t{50}, int64_t{99}}) {
        EXPECT_TRUE(resident(cache.k[l], h, pos)) << l << " " << h << " " << pos;
        EXPECT_TRUE(resident(cache.v[l], h, pos)) << l << " " << h << " " << pos;
      }
      // Well past the reservation: still not committed.
      EXPECT_FALSE(resident(cache.k[l], h, 100 + 4 * page)) << l << " " << h;
      EXPECT_FALSE(resident(cache.v[l], h, 1023)) << l << " " << h;
    }
  EXPECT_EQ(k1[1024 * 32 + 5], 3.5f);
  EXPECT_EQ(k1[5], 0.0f);
  cache.Reserve(50);  // less than committed: nothing to do
  EXPECT_EQ(cache.committed, 100);
  cache.Reserve(int64_t{1} << 40);  // clamped to the capacity
  EXPECT_EQ(cache.committed, 1024);
  EXPECT_TRUE(resident(cache.v[0], 1, 1023));
  EXPECT_EQ(k1[1024 * 32 + 5], 3.5f);
  cache.Allocate(cfg, 512);  // a new cache starts with nothing committed
  EXPECT_EQ(cache.committed, 0);
}

TEST(Transformer, BadBatchesAreErrors) {
  const ModelConfig cfg = Tiny("mixtral");
  Rng rng(1);
  ModelWeights w;
  w.InitRandom(cfg, DType::kF32, rng);
  const Transformer tf(cfg);
  Context ctx({.threads = 1});
  ForwardState<float> st;
  Batch b = MakeBatch(cfg, 2);
  b.seq = 7;  // > max_seq
  b.batch = 1;
  b.tokens.resize(7);
  b.targets.resize(7);
  EXPECT_THAT([&] { tf.Forward<float>(w, b, st, ctx); }, ::testing::ThrowsMessage<Error>(::testing::HasSubstr("max_seq")));
  b = MakeBatch(cfg, 2);
  b.tokens[3] = 11;  // out of the vocabulary
  EXPECT_THAT([&] { tf.Forward<float>(w, b, st, ctx); }, ::testing::ThrowsMessage<Error>(::testing::HasSubstr("11")));
  b = MakeBatch(cfg, 2);
  b.targets[2] = 42;
  EXPECT_THAT([&] { tf.Forward<float>(w, b, st, ctx); }, ::testing::ThrowsMessage<Error>(::testing::HasSubstr("42")));
}

}  // namespace
}  // namespace moe::model
