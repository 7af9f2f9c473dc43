// The MoE layer (f32) against PyTorch float64 goldens written by scripts/gen_moe_goldens.py:
// outputs, auxiliary losses, routing counts, and the gradients of sum(y * dy) + aux + z with
// respect to the input and every trained weight. Fixtures: tests/data/moe_<case>.safetensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <tuple>

#include <nlohmann/json.hpp>

#include "moe/core/context.h"
#include "moe/io/safetensors.h"
#include "moe/mixture/moe_layer.h"
#include "moe/testing/compare.h"

namespace moe::mixture {
namespace {

using io::SafetensorsFile;
using moe::testing::ExpectClose;
using moe::testing::Tolerance;

const char* const kCases[] = {"mixtral", "switch",        "deepseek",
                              "qwen2",   "expert_choice", "grouped_capacity"};

// MoeConfig from the fixture's JSON; every field must be present and no other may appear.
MoeConfig ConfigFromJson(const std::string& text) {
  const auto j = nlohmann::json::parse(text);
  const std::set<std::string> known = {
      "d_model",     "d_ff",        "n_experts",       "top_k",         "router",
      "score",       "renormalize", "route_scale",     "selection_bias", "n_groups",
      "topk_groups", "group_score", "capacity_factor", "shared_d_ff",   "shared_gate",
      "aux_loss_coef", "z_loss_coef"};
  for (const auto& [key, unused] : j.items()) {
    (void)unused;
    if (!known.count(key)) Fail("golden", "unknown config field '{}'", key);
  }
  MoeConfig c;
  c.d_model = j.at("d_model").get<int64_t>();
  c.d_ff = j.at("d_ff").get<int64_t>();
  c.n_experts = j.at("n_experts").get<int64_t>();
  c.top_k = j.at("top_k").get<int64_t>();
  c.router = ParseRouterKind(j.at("router").get<std::string>());
  c.score = ParseScoreFn(j.at("score").get<std::string>());
  c.renormalize = j.at("renormalize").get<bool>();
  c.route_scale = j.at("route_scale").get<double>();
  c.selection_bias = j.at("selection_bias").get<bool>();
  c.n_groups = j.at("n_groups").get<int64_t>();
  c.topk_groups = j.at("topk_groups").get<int64_t>();
  c.group_score = ParseGroupScore(j.at("group_score").get<std::string>());
  c.capacity_factor = j.at("capacity_factor").get<double>();
  c.shared_d_ff = j.at("shared_d_ff").get<int64_t>();
  c.shared_gate = j.at("shared_gate").get<bool>();
  c.aux_loss_coef = j.at("aux_loss_coef").get<double>();
  c.z_loss_coef = j.at("z_loss_coef").get<double>();
  c.Validate();
  return c;
}

// f32 against a float64 reference rounded to f32: the per-element bound scales with the
// tensor's magnitude (errors come from sums of O(D) or O(F) products of O(max) terms).
Tolerance F32Tolerance(const Tensor& expected) {
  auto v = expected.view<const float>();
  double max_abs = 0;
  for (int64_t i = 0; i < v.numel(); ++i) max_abs = std::max(max_abs, std::fabs(double(v[i])));
  return Tolerance{.atol = std::max(1e-7, 1e-5 * max_abs), .rtol = 1e-4, .nmse = 1e-7};
}

::testing::AssertionResult Close(const Tensor& actual, const Tensor& expected,
                                 const std::string& what) {
  if (!(actual.shape() == expected.shape()))
    return ::testing::AssertionFailure() << what << ": shape " << actual.shape().str()
                                         << ", golden " << expected.shape().str();
  return ExpectClose(actual.view<const float>().data, expected.view<const float>().data,
                     actual.numel(), F32Tolerance(expected), what);
}

bool NonZero(const Tensor& t) {
  auto v = t.view<const float>();
  for (int64_t i = 0; i < v.numel(); ++i)
    if (v[i] != 0) return true;
  return false;
}

class MoeGolden : public ::testing::TestWithParam<std::tuple<const char*, int>> {};

TEST_P(MoeGolden, MatchesPyTorch) {
  const auto [name, threads] = GetParam();
  const auto file = SafetensorsFile::Open(std::string(MOE_TEST_DATA_DIR) + "/moe_" + name +
                                          ".safetensors");
  const MoeConfig cfg = ConfigFromJson(file.Metadata("config"));
  SCOPED_TRACE(cfg.ToString());

  MoeWeights w;
  w.Allocate(cfg, DType::kF32);
  int loaded = 0;
  w.ForEachTensor([&](std::string_view wname, Tensor& t) {
    Tensor v = file.Load(wname, DType::kF32);
    ASSERT_EQ(v.shape(), t.shape()) << wname;
    t = std::move(v);
    ++loaded;
  });
  const Tensor x = file.Load("x", DType::kF32);
  const Tensor dy = file.Load("dy", DType::kF32);
  const int64_t nt = x.shape()[0];
  ASSERT_EQ(x.shape(), Shape({nt, cfg.d_model}));

  Context ctx(ContextOptions{.threads = threads});
  MoeState<float> st;
  Tensor y(DType::kF32, x.shape());
  MoeForward<float>(cfg, w, Const<float>(x), Mut<float>(y), st, ctx);

  EXPECT_TRUE(Close(y, file.Load("y", DType::kF32), "y"));
  EXPECT_EQ(st.stats.tokens_per_expert, file.LoadIntegers("tokens_per_expert"));
  EXPECT_EQ(std::vector<int64_t>{st.stats.dropped}, file.LoadIntegers("dropped"));
  const Tolerance loss_tol{.atol = 1e-9, .rtol = 2e-5, .nmse = 1e-9};
  const Tensor aux = file.Load("aux_loss", DType::kF64), z = file.Load("z_loss", DType::kF64);
  EXPECT_TRUE(ExpectClose(&st.stats.aux_loss, aux.view<const double>().data, 1, loss_tol, "aux_loss"));
  EXPECT_TRUE(ExpectClose(&st.stats.z_loss, z.view<const double>().data, 1, loss_tol, "z_loss"));
  EXPECT_EQ(aux.view<const double>()[0] > 0, cfg.aux_loss_coef > 0);
  EXPECT_EQ(z.view<const double>()[0] > 0, cfg.z_loss_coef > 0);

  // Gradients of sum(y * dy) + aux + z.
  MoeWeights grad;
  grad.Allocate(cfg, DType::kF32);
  Tensor dx(DType::kF32, x.shape());
  MoeBackward<float>(cfg, w, Const<float>(x), Const<float>(dy), st, grad, Mut<float>(dx), ctx,
                     1.0);
  const Tensor dx_ref = file.Load("d_x", DType::kF32);
  ASSERT_TRUE(NonZero(dx_ref));
  EXPECT_TRUE(Close(dx, dx_ref, "d_x"));
  int compared = 1;
  grad.ForEachParameter([&](std::string_view pname, Tensor& g) {
    const std::string gname = "d_" + std::string(pname);
    const Tensor ref = file.Load(gname, DType::kF32);
    EXPECT_TRUE(NonZero(ref)) << gname << " is all zero in the golden";
    EXPECT_TRUE(Close(g, ref, gname));
    ++compared;
  });

  // Every tensor in the fixture was used: weights, x, dy, outputs, and every gradient.
  int grads_in_file = 0;
  for (const auto& t : file.tensors()) grads_in_file += t.name.rfind("d_", 0) == 0;
  EXPECT_EQ(compared, grads_in_file);
  EXPECT_EQ(static_cast<size_t>(loaded + 2 + 5 + grads_in_file), file.tensors().size());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MoeGolden,
                         ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Values(1, 2)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param)) + "_threads" +
                                  std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace moe::mixture
