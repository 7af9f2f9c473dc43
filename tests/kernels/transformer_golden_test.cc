// The transformer kernels (f32) against PyTorch float64 goldens written by
// scripts/gen_transformer_goldens.py: RoPE (half, interleaved, YaRN on an MLA slice, llama3,
// linear), GQA causal attention (pos0 > 0, Dv != Dk), cross-entropy with ignored targets, three
// AdamW steps and gradient clipping. Fixtures: tests/data/kernels_<kernel>.safetensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/core/context.h"
#include "moe/io/safetensors.h"
#include "moe/kernels/adamw.h"
#include "moe/kernels/attention.h"
#include "moe/kernels/cross_entropy.h"
#include "moe/kernels/rope.h"
#include "moe/testing/compare.h"

namespace moe::kernels {
namespace {

using io::SafetensorsFile;
using moe::testing::ExpectClose;
using moe::testing::Tolerance;

SafetensorsFile Open(const std::string& kernel) {
  return SafetensorsFile::Open(std::string(MOE_TEST_DATA_DIR) + "/kernels_" + kernel +
                               ".safetensors");
}

// f32 against a float64 reference rounded to f32: the per-element bound scales with the tensor's
// magnitude.
Tolerance F32Tolerance(const Tensor& expected) {
  auto v = expected.view<const float>();
  double max_abs = 0;
  for (int64_t i = 0; i < v.numel(); ++i) max_abs = std::max(max_abs, std::fabs(double(v[i])));
  return Tolerance{.atol = std::max(1e-7, 1e-5 * max_abs), .rtol = 1e-4, .nmse = 1e-7};
}

::testing::AssertionResult Close(const float* actual, const Tensor& expected,
                                 const std::string& what) {
  return ExpectClose(actual, expected.view<const float>().data, expected.numel(),
                     F32Tolerance(expected), what);
}
::testing::AssertionResult Close(const Tensor& actual, const Tensor& expected,
                                 const std::string& what) {
  if (!(actual.shape() == expected.shape()))
    return ::testing::AssertionFailure()
           << what << ": shape " << actual.shape().str() << ", golden " << expected.shape().str();
  return Close(actual.view<const float>().data, expected, what);
}

double Scalar(const SafetensorsFile& f, const std::string& name) {
  return f.Load(name, DType::kF64).view<const double>()[0];
}

std::vector<int32_t> Ints(const SafetensorsFile& f, const std::string& name) {
  const std::vector<int64_t> v = f.LoadIntegers(name);
  return std::vector<int32_t>(v.begin(), v.end());
}

RopeConfig RopeConfigFromJson(const nlohmann::json& j) {
  RopeConfig c;
  c.rotary_dim = j.at("r").get<int64_t>();
  c.theta = j.at("theta").get<double>();
  const nlohmann::json& s = j.at("scaling");
  c.scaling.kind = ParseRopeScalingKind(s.value("type", "none"));
  c.scaling.factor = s.value("factor", 1.0);
  c.scaling.original_max_position_embeddings = s.value("original_max_position_embeddings", 0);
  c.scaling.beta_fast = s.value("beta_fast", 32.0);
  c.scaling.beta_slow = s.value("beta_slow", 1.0);
  c.scaling.mscale = s.value("mscale", 1.0);
  c.scaling.mscale_all_dim = s.value("mscale_all_dim", 0.0);
  c.scaling.low_freq_factor = s.value("low_freq_factor", 1.0);
  c.scaling.high_freq_factor = s.value("high_freq_factor", 4.0);
  c.cached_positions = 4;  // some positions cached, the rest computed on demand
  return c;
}

class Golden : public ::testing::TestWithParam<int> {};  // thread count

TEST_P(Golden, Rope) {
  Context ctx({.threads = GetParam()});
  const SafetensorsFile f = Open("rope");
  for (const char* name : {"half", "interleaved", "yarn", "llama3", "linear"}) {
    SCOPED_TRACE(name);
    const std::string p = std::string(name) + ".";
    const auto j = nlohmann::json::parse(f.Metadata(name));
    const RopeTable table(RopeConfigFromJson(j));
    const RopePairing pairing =
        j.at("pairing") == "half" ? RopePairing::kHalf : RopePairing::kInterleaved;
    const int64_t offset = j.at("offset").get<int64_t>();

    const Tensor inv = f.Load(p + "inv_freq", DType::kF64);
    ASSERT_EQ(inv.numel(), table.n_freqs());
    EXPECT_TRUE(ExpectClose(table.inv_freq().data(), inv.view<const double>().data, inv.numel(),
                            {0, 1e-12, 1e-20}, "inv_freq"));
    EXPECT_NEAR(table.cos_sin_scale(), Scalar(f, p + "cos_sin_scale"), 1e-14);
    EXPECT_NEAR(table.SoftmaxScaleMultiplier(), Scalar(f, p + "softmax_scale_multiplier"), 1e-14);

    const Tensor x = f.Load(p + "x", DType::kF32), dy = f.Load(p + "dy", DType::kF32);
    const std::vector<int32_t> pos = Ints(f, p + "positions");
    const CView<int32_t> positions(pos.data(), {static_cast<int64_t>(pos.size())});
    Tensor y(DType::kF32, x.shape()), dx(DType::kF32, x.shape());
    RopeForward<float>(Const<float>(x), positions, table, pairing, offset, Mut<float>(y), ctx);
    EXPECT_TRUE(Close(y, f.Load(p + "y", DType::kF32), "y"));
    RopeBackward<float>(Const<float>(dy), positions, table, pairing, offset, Mut<float>(dx), ctx);
    EXPECT_TRUE(Close(dx, f.Load(p + "dx", DType::kF32), "dx"));
  }
}

TEST_P(Golden, Attention) {
  Context ctx({.threads = GetParam()});
  const SafetensorsFile f = Open("attention");
  for (const char* name : {"train", "cached"}) {
    SCOPED_TRACE(name);
    const std::string p = std::string(name) + ".";
    const auto j = nlohmann::json::parse(f.Metadata(name));
    const int64_t pos0 = j.at("pos0").get<int64_t>();
    const float scale = j.at("scale").get<float>();
    const Tensor q = f.Load(p + "q", DType::kF32), k = f.Load(p + "k", DType::kF32),
                 v = f.Load(p + "v", DType::kF32), dout = f.Load(p + "dout", DType::kF32);
    const Tensor want_out = f.Load(p + "out", DType::kF32),
                 want_lse = f.Load(p + "lse", DType::kF32);
    Tensor out(DType::kF32, want_out.shape()), lse(DType::kF32, want_lse.shape());
    AttentionForward<float>(Const<float>(q), Const<float>(k), Const<float>(v), pos0, scale,
                            Mut<float>(out), Mut<float>(lse), ctx);
    EXPECT_TRUE(Close(out, want_out, "out"));
    EXPECT_TRUE(Close(lse, want_lse, "lse"));
    Tensor dq(DType::kF32, q.shape()), dk(DType::kF32, k.shape()), dv(DType::kF32, v.shape());
    AttentionBackward<float>(Const<float>(q), Const<float>(k), Const<float>(v), Const<float>(out),
                             Const<float>(lse), Const<float>(dout), pos0, scale, Mut<float>(dq),
                             Mut<float>(dk), Mut<float>(dv), ctx);
    EXPECT_TRUE(Close(dq, f.Load(p + "dq", DType::kF32), "dq"));
    EXPECT_TRUE(Close(dk, f.Load(p + "dk", DType::kF32), "dk"));
    EXPECT_TRUE(Close(dv, f.Load(p + "dv", DType::kF32), "dv"));
  }
}

TEST_P(Golden, CrossEntropy) {
  Context ctx({.threads = GetParam()});
  const SafetensorsFile f = Open("cross_entropy");
  const Tensor logits = f.Load("logits", DType::kF32);
  const std::vector<int32_t> tg = Ints(f, "targets");
  const int64_t t = logits.shape()[0];
  const CView<int32_t> targets(tg.data(), {t});
  Tensor row(DType::kF32, {t}), lse(DType::kF32, {t}), dlogits(DType::kF32, logits.shape());
  const CrossEntropyResult r = CrossEntropyForward<float>(Const<float>(logits), targets,
                                                          Mut<float>(row), Mut<float>(lse), ctx);
  EXPECT_EQ(r.count, t - 2);
  EXPECT_NEAR(r.loss, Scalar(f, "loss"), 2e-6 * Scalar(f, "loss"));
  EXPECT_TRUE(Close(row, f.Load("row_loss", DType::kF32), "row_loss"));
  CrossEntropyBackward<float>(Const<float>(logits), targets, Const<float>(lse),
                              1.0f / static_cast<float>(r.count), Mut<float>(dlogits), ctx);
  EXPECT_TRUE(Close(dlogits, f.Load("dlogits", DType::kF32), "dlogits"));
}

TEST_P(Golden, AdamWAndClipping) {
  Context ctx({.threads = GetParam()});
  const SafetensorsFile f = Open("adamw");
  const auto j = nlohmann::json::parse(f.Metadata("adamw"));
  const AdamWOptions opts{.lr = j.at("lr").get<double>(),
                          .beta1 = j.at("betas").at(0).get<double>(),
                          .beta2 = j.at("betas").at(1).get<double>(),
                          .eps = j.at("eps").get<double>(),
                          .weight_decay = j.at("weight_decay").get<double>()};
  Tensor param = f.Load("param0", DType::kF32);
  const Tensor grads = f.Load("grads", DType::kF32), params = f.Load("params", DType::kF32);
  const int64_t n = param.numel(), steps = grads.shape()[0];
  Tensor m(DType::kF32, {n}), v(DType::kF32, {n});
  for (int64_t s = 0; s < steps; ++s) {
    const CView<float> g(grads.view<const float>().data + s * n, {n});
    AdamWStep<float>(g, opts, s + 1, Mut<float>(param), Mut<float>(m), Mut<float>(v), ctx);
    // The step is ~lr per element; compare the parameters at lr-relative precision.
    const CView<float> want(params.view<const float>().data + s * n, {n});
    EXPECT_TRUE(ExpectClose(param.view<const float>().data, want.data, n,
                            {1e-4 * opts.lr, 1e-6, 1e-9},
                            "param after step " + std::to_string(s + 1)));
  }
  EXPECT_TRUE(Close(m, f.Load("m", DType::kF32), "m"));
  EXPECT_TRUE(Close(v, f.Load("v", DType::kF32), "v"));

  const double max_norm = nlohmann::json::parse(f.Metadata("clip")).at("max_norm").get<double>();
  Tensor a = f.Load("clip.a", DType::kF32), b = f.Load("clip.b", DType::kF32);
  const std::vector<View<float>> grads_to_clip = {Mut<float>(a), Mut<float>(b)};
  const double norm = ClipGradNorm<float>(grads_to_clip, max_norm, ctx);
  EXPECT_NEAR(norm, Scalar(f, "clip.norm"), 1e-6 * norm);
  EXPECT_TRUE(Close(a, f.Load("clip.a_clipped", DType::kF32), "a clipped"));
  EXPECT_TRUE(Close(b, f.Load("clip.b_clipped", DType::kF32), "b clipped"));
}

INSTANTIATE_TEST_SUITE_P(Threads, Golden, ::testing::Values(1, 2),
                         [](const auto& info) { return "threads" + std::to_string(info.param); });

}  // namespace
}  // namespace moe::kernels
