// The whole MoE layer (MoeForward / MoeBackward in double and float): central-difference gradient
// checks for every routing mode, invariants against the double references in moe/testing,
// routing statistics, configuration errors, and the DeepSeek-V3 selection bias.
//
// Shapes are tiny (T <= 12, D = 8, F = 6, E <= 8 for the gradient checks) so that the file runs in
// well under a second in release.
#include "moe/mixture/moe_layer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <ostream>
#include <string>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/rng.h"
#include "moe/kernels/quant.h"
#include "moe/mixture/presets.h"
#include "moe/mixture/routing.h"
#include "moe/testing/compare.h"
#include "moe/testing/gradcheck.h"
#include "moe/testing/reference.h"

namespace moe::mixture {
namespace {

using moe::testing::ExpectClose;
using moe::testing::GradCheck;
using moe::testing::GradCheckOptions;
using moe::testing::GradParam;
using moe::testing::Tolerance;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// ---- helpers ------------------------------------------------------------------------------------

constexpr int64_t kD = 8, kF = 6;

// D = 8, F = 6, E experts, top-k; everything else at its default (softmax, renormalised, dropless).
MoeConfig SmallConfig(int64_t experts, int64_t top_k) {
  MoeConfig c;
  c.d_model = kD;
  c.d_ff = kF;
  c.n_experts = experts;
  c.top_k = top_k;
  return c;
}

void FillNormal(Tensor& t, Rng& rng, double scale) {
  if (t.dtype() == DType::kF64) {
    auto v = t.view<double>();
    for (int64_t i = 0; i < v.numel(); ++i) v[i] = scale * rng.Normal();
  } else {
    auto v = t.view<float>();
    for (int64_t i = 0; i < v.numel(); ++i) v[i] = static_cast<float>(scale * rng.Normal());
  }
}

// A layer, its input and the weights of the objective sum(y * dy), all in double.
struct Problem {
  MoeConfig cfg;
  MoeWeights w;
  Tensor x;   // [T, D]
  Tensor dy;  // [T, D]
};

Problem MakeProblem(const MoeConfig& cfg, int64_t tokens, uint64_t seed) {
  Problem p;
  p.cfg = cfg;
  Rng rng(seed);
  p.w.InitRandom(cfg, DType::kF64, rng);
  if (p.w.bias.defined()) FillNormal(p.w.bias, rng, 0.1);  // exercise the bias in selection
  p.x = Tensor(DType::kF64, {tokens, cfg.d_model});
  p.dy = Tensor(DType::kF64, {tokens, cfg.d_model});
  FillNormal(p.x, rng, 1.0);
  FillNormal(p.dy, rng, 1.0);
  return p;
}

Tensor ToF32(const Tensor& t) {
  Tensor out(DType::kF32, t.shape());
  auto s = t.view<const double>();
  auto d = out.view<float>();
  for (int64_t i = 0; i < s.numel(); ++i) d[i] = static_cast<float>(s[i]);
  return out;
}

// The same weights as f32 (routing and outputs are then compared with the double layer).
MoeWeights ToF32(const MoeConfig& cfg, MoeWeights& w) {
  std::vector<const Tensor*> src;
  w.ForEachTensor([&](std::string_view, Tensor& t) { src.push_back(&t); });
  MoeWeights out;
  out.Allocate(cfg, DType::kF32);
  size_t i = 0;
  out.ForEachTensor([&](std::string_view, Tensor& t) { t = ToF32(*src[i++]); });
  return out;
}

// One forward (and optionally backward) of the layer, keeping everything for inspection.
template <typename T>
struct LayerRun {
  Tensor y;  // [T, D]
  MoeState<T> st;
  MoeWeights grad;
  Tensor dx;  // [T, D]
};

template <typename T>
void Forward(const MoeConfig& cfg, const MoeWeights& w, const Tensor& x, LayerRun<T>& r,
             Context& ctx, const MoeForwardOptions& opts = {}) {
  r.y = Tensor(DTypeOf<T>(), x.shape());
  MoeForward<T>(cfg, w, Const<T>(x), Mut<T>(r.y), r.st, ctx, opts);
}

// Gradients of sum(y * dy) + aux_total (loss_scale 1) after Forward.
template <typename T>
void Backward(const MoeConfig& cfg, const MoeWeights& w, const Tensor& x, const Tensor& dy,
              LayerRun<T>& r, Context& ctx) {
  r.grad.Allocate(cfg, DTypeOf<T>());
  r.dx = Tensor(DTypeOf<T>(), x.shape());
  MoeBackward<T>(cfg, w, Const<T>(x), Const<T>(dy), r.st, r.grad, Mut<T>(r.dx), ctx, 1.0);
}

template <typename T>
LayerRun<T> ForwardBackward(const MoeConfig& cfg, const MoeWeights& w, const Tensor& x,
                            const Tensor& dy, Context& ctx, const MoeForwardOptions& opts = {}) {
  LayerRun<T> r;
  Forward<T>(cfg, w, x, r, ctx, opts);
  Backward<T>(cfg, w, x, dy, r, ctx);
  return r;
}

// The discrete part of a routing decision: the kept (token, expert) pairs in plan order, and the
// token-choice choices with their plan positions (-1 = dropped). Gates are continuous: not part of
// it.
struct PlanKey {
  std::vector<int32_t> token, expert, choice, choice_pos;
  std::vector<int64_t> offsets;
  bool operator==(const PlanKey&) const = default;
};

template <typename T>
PlanKey KeyOf(const MoeState<T>& st) {
  return {st.plan.token, st.plan.expert, st.router.choice, st.router.choice_pos,
          st.plan.expert_offsets};
}

bool BitwiseEqual(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

bool AllZero(const Tensor& t) {
  auto v = t.view<const double>();
  return std::all_of(v.data, v.data + v.numel(), [](double e) { return e == 0.0; });
}

// The tensors of w that get gradients (or the gradients themselves), in ForEachParameter order.
std::vector<std::pair<std::string, Tensor*>> Params(MoeWeights& w) {
  std::vector<std::pair<std::string, Tensor*>> out;
  w.ForEachParameter([&](std::string_view name, Tensor& t) { out.emplace_back(name, &t); });
  return out;
}

// f32 against double: the per-element bound scales with the tensor's magnitude (as in the
// goldens), since every value is a sum of O(D) or O(F) products of O(max) terms.
::testing::AssertionResult CloseF32(const Tensor& actual, const Tensor& expected,
                                    const std::string& what) {
  auto e = expected.view<const double>();
  double max_abs = 0;
  for (int64_t i = 0; i < e.numel(); ++i) max_abs = std::max(max_abs, std::fabs(e[i]));
  const Tolerance tol{.atol = std::max(1e-7, 2e-5 * max_abs), .rtol = 1e-4, .nmse = 1e-7};
  return ExpectClose(actual.view<const float>().data, e.data, actual.numel(), tol, what);
}

// Two double results of the same math computed in a different order.
::testing::AssertionResult CloseF64(const double* actual, const double* expected, int64_t n,
                                    const std::string& what) {
  return ExpectClose(actual, expected, n, Tolerance{.atol = 1e-12, .rtol = 1e-10, .nmse = 1e-20},
                     what);
}
::testing::AssertionResult CloseF64(const Tensor& actual, const Tensor& expected,
                                    const std::string& what) {
  if (!(actual.shape() == expected.shape()))
    return ::testing::AssertionFailure()
           << what << ": shape " << actual.shape().str() << " vs " << expected.shape().str();
  return CloseF64(actual.view<const double>().data, expected.view<const double>().data,
                  actual.numel(), what);
}

// Dense SwiGLU FFN of expert e from the references: W2 (silu(W1 x) * W3 x) for every token.
std::vector<double> RefExpert(const double* x, int64_t tokens, const MoeWeights& w, int64_t e,
                              int64_t d, int64_t f) {
  const double* w13 = w.w13.view<const double>().data + e * 2 * f * d;
  const double* w2 = w.w2.view<const double>().data + e * d * f;
  const std::vector<double> h = moe::testing::RefMatMulNT(x, w13, tokens, 2 * f, d);
  const std::vector<double> a = moe::testing::RefSwiGlu(h.data(), tokens, f);
  return moe::testing::RefMatMulNT(a.data(), w2, tokens, d, f);
}

using moe::testing::ErrorOf;

// ---- configuration and input errors ------------------------------------------------------------

// RouteForward is public: with selection_bias it must be handed a bias of E values. An undefined
// view has rank 0 and numel() 1, so a size check alone let a missing bias through when E = 1
// (silently routing without bias) and reported "got 1" otherwise; a [2,2] bias passed for E = 4.
TEST(MoeErrors, RouteForwardNeedsABiasOfEValues) {
  for (int64_t experts : {int64_t{1}, int64_t{4}}) {
    MoeConfig cfg = SmallConfig(experts, 1);
    cfg.score = ScoreFn::kSigmoid;
    cfg.selection_bias = true;
    Problem p = MakeProblem(cfg, 3, 1);
    Context ctx(ContextOptions{.threads = 1});
    RouterState<double> st;
    RoutingPlan<double> plan;
    const auto route = [&](CView<double> bias) {
      RouteForward<double>(cfg, Const<double>(p.x), Const<double>(p.w.router), bias, {}, st, plan,
                           ctx);
    };
    const std::string missing = ErrorOf([&] { route(CView<double>()); });
    EXPECT_THAT(missing, StartsWith("[moe] "));
    EXPECT_THAT(missing, HasSubstr("selection_bias"));
    EXPECT_THAT(missing, HasSubstr(fmt::format("[{}] (n_experts), got none", experts)));
    EXPECT_EQ(ErrorOf([&] { route(Const<double>(p.w.bias)); }), "(no error)");
  }
  MoeConfig cfg = SmallConfig(4, 1);
  cfg.selection_bias = true;
  Problem p = MakeProblem(cfg, 3, 1);
  Tensor square(DType::kF64, {2, 2});
  Context ctx(ContextOptions{.threads = 1});
  RouterState<double> st;
  RoutingPlan<double> plan;
  EXPECT_THAT(ErrorOf([&] {
                RouteForward<double>(cfg, Const<double>(p.x), Const<double>(p.w.router),
                                     Const<double>(square), {}, st, plan, ctx);
              }),
              HasSubstr("needs a bias of shape [4] (n_experts), got [2,2]"));
}

struct BadConfig {
  const char* what;
  std::function<void(MoeConfig&)> edit;
  std::vector<std::string> message;  // substrings: the field and its value
};

// Each bad configuration is rejected by Validate, by Allocate and by MoeForward (with weights of a
// valid configuration), always as moe::Error naming the field and the value.
TEST(MoeErrors, BadConfigsNameTheFieldAndValue) {
  const std::vector<BadConfig> cases = {
      {"top_k > n_experts", [](MoeConfig& c) { c.top_k = 5; }, {"top_k = 5", "n_experts (4)"}},
      {"negative capacity_factor",
       [](MoeConfig& c) { c.capacity_factor = -0.5; },
       {"capacity_factor = -0.5"}},
      {"no experts", [](MoeConfig& c) { c.n_experts = 0; }, {"n_experts = 0"}},
      {"expert choice without capacity",
       [](MoeConfig& c) {
         c.router = RouterKind::kExpertChoice;
         c.renormalize = false;
         c.capacity_factor = 0;
       },
       {"expert choice", "capacity_factor > 0 (got 0)"}},
      {"n_groups does not divide E",
       [](MoeConfig& c) {
         c.n_experts = 8;
         c.n_groups = 3;
       },
       {"n_groups = 3", "n_experts = 8"}},
      {"topk_groups > n_groups",
       [](MoeConfig& c) {
         c.n_experts = 8;
         c.n_groups = 4;
         c.topk_groups = 5;
       },
       {"topk_groups = 5", "n_groups (4)"}},
  };
  const MoeConfig good = SmallConfig(4, 2);
  Problem p = MakeProblem(good, 3, 1);
  Context ctx(ContextOptions{.threads = 1});
  for (const BadConfig& bc : cases) {
    SCOPED_TRACE(bc.what);
    MoeConfig cfg = good;
    bc.edit(cfg);
    MoeWeights w;
    MoeState<double> st;
    Tensor y(DType::kF64, p.x.shape());
    const std::string errors[] = {
        ErrorOf([&] { cfg.Validate(); }),
        ErrorOf([&] { w.Allocate(cfg, DType::kF64); }),
        ErrorOf([&] { MoeForward<double>(cfg, p.w, Const<double>(p.x), Mut<double>(y), st, ctx); }),
    };
    for (const std::string& msg : errors) {
      EXPECT_THAT(msg, StartsWith("[moe] "));
      for (const std::string& part : bc.message) EXPECT_THAT(msg, HasSubstr(part));
    }
  }
}

TEST(MoeErrors, InputOfTheWrongWidth) {
  const MoeConfig cfg = SmallConfig(4, 2);
  Problem p = MakeProblem(cfg, 3, 1);
  Context ctx(ContextOptions{.threads = 1});
  MoeState<double> st;
  Tensor x(DType::kF64, {6, 7}), y(DType::kF64, {6, 8});
  const std::string msg =
      ErrorOf([&] { MoeForward<double>(cfg, p.w, Const<double>(x), Mut<double>(y), st, ctx); });
  EXPECT_THAT(msg, StartsWith("[moe] "));
  EXPECT_THAT(msg, HasSubstr("input x [6,7]"));
  EXPECT_THAT(msg, HasSubstr("d_model = 8"));
  // An output of the wrong shape, and weights of the wrong dtype or shape.
  Tensor x_ok(DType::kF64, {6, 8}), y_ok(DType::kF64, {6, 8}), y_bad(DType::kF64, {5, 8});
  EXPECT_THAT(ErrorOf([&] {
                MoeForward<double>(cfg, p.w, Const<double>(x_ok), Mut<double>(y_bad), st, ctx);
              }),
              HasSubstr("output [5,8] expected [6,8]"));
  MoeState<float> stf;
  Tensor xf(DType::kF32, {6, 8}), yf(DType::kF32, {6, 8});
  EXPECT_THAT(
      ErrorOf([&] { MoeForward<float>(cfg, p.w, Const<float>(xf), Mut<float>(yf), stf, ctx); }),
      HasSubstr("weight 'router' is F64, expected F32"));
  p.w.w2 = Tensor(DType::kF64, {4, 8, 5});
  EXPECT_THAT(ErrorOf([&] {
                MoeForward<double>(cfg, p.w, Const<double>(x_ok), Mut<double>(y_ok), st, ctx);
              }),
              HasSubstr("weight 'w2' has shape [4,8,5], expected [4,8,6]"));
}

// ---- gradient checks of the whole layer ---------------------------------------------------------

struct GradCase {
  const char* name;
  MoeConfig cfg;
  int64_t tokens;
  uint64_t seed;  // weights and inputs
  MoeForwardOptions opts;
};

std::vector<GradCase> GradCases() {
  std::vector<GradCase> cases;
  {  // Mixtral: softmax top-2, renormalised, with the load-balancing loss.
    MoeConfig c = SmallConfig(8, 2);
    c.aux_loss_coef = 0.05;
    cases.push_back({"mixtral_softmax_top2_renorm", c, 10, 11, {}});
  }
  {  // Switch: top-1 softmax gate (no renormalisation), capacity C = ceil(0.75*12/4) = 3 < 12/4,
     // so tokens drop; load-balancing and z losses.
    MoeConfig c = SmallConfig(4, 1);
    c.renormalize = false;
    c.capacity_factor = 0.75;
    c.aux_loss_coef = 0.1;
    c.z_loss_coef = 0.01;
    cases.push_back({"switch_top1_capacity_aux_z", c, 12, 12, {}});
  }
  {  // DeepSeek-V3: sigmoid, selection bias, 4 groups of 2 of which 2 are eligible (top-2-sum
     // group score), renormalised top-3 scaled by 2.5, one shared expert; sigmoid balance loss.
    MoeConfig c = SmallConfig(8, 3);
    c.score = ScoreFn::kSigmoid;
    c.selection_bias = true;
    c.n_groups = 4;
    c.topk_groups = 2;
    c.route_scale = 2.5;
    c.shared_d_ff = kF;
    c.aux_loss_coef = 0.05;
    cases.push_back({"deepseek_v3_sigmoid_bias_groups_shared", c, 10, 13, {}});
  }
  {  // DeepSeek-V2 group-limited greedy: softmax, max group score, no renormalisation.
    MoeConfig c = SmallConfig(8, 2);
    c.renormalize = false;
    c.n_groups = 4;
    c.topk_groups = 2;
    c.group_score = GroupScore::kMax;
    c.route_scale = 2.0;
    cases.push_back({"deepseek_v2_softmax_group_max", c, 10, 14, {}});
  }
  {  // Qwen2-MoE: softmax top-4 without renormalisation plus a sigmoid-gated shared expert.
    MoeConfig c = SmallConfig(8, 4);
    c.renormalize = false;
    c.shared_d_ff = kF;
    c.shared_gate = true;
    c.z_loss_coef = 0.01;
    cases.push_back({"qwen2_softmax_top4_gated_shared", c, 8, 15, {}});
  }
  {  // Expert choice, cf = 1: each of 4 experts takes C = round(1*10*1/4) = 3 of 10 tokens.
    MoeConfig c = SmallConfig(4, 1);
    c.router = RouterKind::kExpertChoice;
    c.renormalize = false;
    c.capacity_factor = 1.0;
    c.z_loss_coef = 0.01;
    cases.push_back({"expert_choice_cf1", c, 10, 16, {}});
  }
  {  // Expert choice, cf = 2: each of 8 experts takes C = round(2*12*1/8) = 3 of 12 tokens.
    MoeConfig c = SmallConfig(8, 1);
    c.router = RouterKind::kExpertChoice;
    c.renormalize = false;
    c.capacity_factor = 2.0;
    cases.push_back({"expert_choice_cf2", c, 12, 20, {}});
  }
  {  // Multiplicative router jitter in training mode: the noise is a function of the seed only.
    MoeConfig c = SmallConfig(4, 2);
    c.jitter = 0.3;
    c.aux_loss_coef = 0.05;
    cases.push_back({"jitter_training_top2", c, 8, 18, {.training = true, .seed = 1234}});
  }
  return cases;
}

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class MoeGradCheck : public ::testing::TestWithParam<GradCase> {};

// Objective f = sum(y * dy) + aux + z, checked by central differences in x and every parameter.
//
// Routing is piecewise constant in the inputs, so f is smooth only between routing changes. The
// test makes the check robust instead of hoping: each perturbed evaluation's discrete plan (kept
// (token, expert) pairs in order, the token-choice choices and which of them were dropped) must
// equal the unperturbed one; a change fails with a clear message (pick another seed) instead of a
// confusing gradient mismatch. With h = 1e-6 and O(1) scores, a routing flip needs a k-th/(k+1)-th
// gap below ~1e-6, which the fixed seeds do not have.
TEST_P(MoeGradCheck, MatchesCentralDifferences) {
  const GradCase& gc = GetParam();
  SCOPED_TRACE(gc.cfg.ToString());
  Problem p = MakeProblem(gc.cfg, gc.tokens, gc.seed);
  Context ctx(ContextOptions{.threads = 1});
  LayerRun<double> base = ForwardBackward<double>(p.cfg, p.w, p.x, p.dy, ctx, gc.opts);
  const PlanKey key = KeyOf(base.st);

  // The case exercises what it claims to.
  const MoeStats& stats = base.st.stats;
  if (p.cfg.capacity_factor > 0 && p.cfg.router == RouterKind::kTokenChoice) {
    EXPECT_GT(stats.dropped, 0) << "the capacity case drops nothing";
  }
  if (p.cfg.router == RouterKind::kExpertChoice) {
    std::vector<int64_t> per_token(static_cast<size_t>(gc.tokens), 0);
    for (int32_t t : base.st.plan.token) ++per_token[static_cast<size_t>(t)];
    EXPECT_EQ(*std::min_element(per_token.begin(), per_token.end()), 0)
        << "every token has an expert";
    EXPECT_GE(*std::max_element(per_token.begin(), per_token.end()), 2)
        << "no token has several experts";
  }
  EXPECT_EQ(stats.aux_loss > 0, p.cfg.aux_loss_coef > 0);
  EXPECT_EQ(stats.z_loss > 0, p.cfg.z_loss_coef > 0);
  EXPECT_EQ(base.st.router.noise.defined(), gc.opts.training && p.cfg.jitter > 0);

  LayerRun<double> probe;
  int routing_changes = 0;
  const auto objective = [&]() {
    Forward<double>(p.cfg, p.w, p.x, probe, ctx, gc.opts);
    if (!(KeyOf(probe.st) == key)) ++routing_changes;
    return moe::testing::WeightedSum(probe.y.view<const double>().data,
                                     p.dy.view<const double>().data, p.x.numel()) +
           probe.st.aux_total();
  };

  std::vector<GradParam> params = {
      {"x", Mut<double>(p.x).data, Const<double>(base.dx).data, p.x.numel()}};
  const auto values = Params(p.w), grads = Params(base.grad);
  ASSERT_EQ(values.size(), grads.size());
  for (size_t i = 0; i < values.size(); ++i) {
    params.push_back({values[i].first, Mut<double>(*values[i].second).data,
                      Const<double>(*grads[i].second).data, values[i].second->numel()});
    // A gradient that is all zero would make the check vacuous.
    EXPECT_FALSE(AllZero(*grads[i].second)) << "d_" << values[i].first << " is all zero";
  }
  EXPECT_FALSE(AllZero(base.dx));
  EXPECT_TRUE(
      GradCheck(objective, params, GradCheckOptions{.step = 1e-6, .atol = 1e-7, .rtol = 1e-5}));
  EXPECT_EQ(routing_changes, 0)
      << "the routing plan changed under a perturbation of 1e-6: the "
         "finite differences crossed a routing boundary; choose another seed";
}

INSTANTIATE_TEST_SUITE_P(Routers, MoeGradCheck, ::testing::ValuesIn(GradCases()),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- invariants
// ----------------------------------------------------------------------------------

// One expert chosen by every token with gate 1 is a dense SwiGLU FFN: forward and every gradient
// equal the references, and the router (softmax over one logit) gets exactly zero gradient.
TEST(MoeInvariants, OneExpertIsADenseFfn) {
  const MoeConfig cfg = SmallConfig(1, 1);
  Problem p = MakeProblem(cfg, 7, 21);
  Context ctx(ContextOptions{.threads = 2});
  LayerRun<double> r = ForwardBackward<double>(cfg, p.w, p.x, p.dy, ctx);
  const int64_t nt = 7, d = kD, f = kF;
  const double* x = p.x.view<const double>().data;
  EXPECT_TRUE(
      CloseF64(r.y.view<const double>().data, RefExpert(x, nt, p.w, 0, d, f).data(), nt * d, "y"));
  EXPECT_EQ(r.st.stats.assignments, nt);

  // Dense backward from the references: y = a W2^T, a = swiglu(h), h = x W13^T.
  const double* w13 = p.w.w13.view<const double>().data;
  const double* w2 = p.w.w2.view<const double>().data;
  const std::vector<double> h = moe::testing::RefMatMulNT(x, w13, nt, 2 * f, d);
  const std::vector<double> a = moe::testing::RefSwiGlu(h.data(), nt, f);
  const auto g2 =
      moe::testing::RefMatMulNTBackward(p.dy.view<const double>().data, a.data(), w2, nt, d, f);
  const std::vector<double> dh = moe::testing::RefSwiGluBackward(h.data(), g2.dx.data(), nt, f);
  const auto g13 = moe::testing::RefMatMulNTBackward(dh.data(), x, w13, nt, 2 * f, d);
  EXPECT_TRUE(CloseF64(r.dx.view<const double>().data, g13.dx.data(), nt * d, "dx"));
  EXPECT_TRUE(CloseF64(r.grad.w13.view<const double>().data, g13.dw.data(), 2 * f * d, "dw13"));
  EXPECT_TRUE(CloseF64(r.grad.w2.view<const double>().data, g2.dw.data(), d * f, "dw2"));
  EXPECT_TRUE(AllZero(r.grad.router));
}

// K = E with softmax + renormalisation is the dense soft mixture sum_i softmax_i(x W_r^T) E_i(x).
TEST(MoeInvariants, AllExpertsIsTheDenseSoftMixture) {
  const MoeConfig cfg = SmallConfig(4, 4);
  const int64_t nt = 9, e_count = 4;
  Problem p = MakeProblem(cfg, nt, 22);
  Context ctx(ContextOptions{.threads = 2});
  LayerRun<double> r;
  Forward<double>(cfg, p.w, p.x, r, ctx);
  const double* x = p.x.view<const double>().data;
  const std::vector<double> logits =
      moe::testing::RefMatMulNT(x, p.w.router.view<const double>().data, nt, e_count, kD);
  const std::vector<double> prob = moe::testing::RefSoftmax(logits.data(), nt, e_count);
  std::vector<double> want(static_cast<size_t>(nt * kD), 0.0);
  for (int64_t e = 0; e < e_count; ++e) {
    const std::vector<double> ye = RefExpert(x, nt, p.w, e, kD, kF);
    for (int64_t t = 0; t < nt; ++t)
      for (int64_t j = 0; j < kD; ++j)
        want[static_cast<size_t>(t * kD + j)] +=
            prob[static_cast<size_t>(t * e_count + e)] * ye[static_cast<size_t>(t * kD + j)];
  }
  EXPECT_TRUE(CloseF64(r.y.view<const double>().data, want.data(), nt * kD, "y"));
  EXPECT_EQ(r.st.stats.tokens_per_expert, std::vector<int64_t>(4, nt));
}

// Token choice without capacity treats tokens independently: permuting the input rows permutes
// the output rows and dx, and leaves the weight gradients, losses and loads unchanged.
TEST(MoeInvariants, PermutingTokensPermutesOutputs) {
  MoeConfig cfg = SmallConfig(8, 2);
  cfg.shared_d_ff = kF;
  cfg.shared_gate = true;
  cfg.aux_loss_coef = 0.05;
  cfg.z_loss_coef = 0.01;
  const int64_t nt = 11;
  Problem p = MakeProblem(cfg, nt, 23);
  std::vector<int64_t> perm(static_cast<size_t>(nt));
  std::iota(perm.begin(), perm.end(), 0);
  Rng rng(5);
  for (int64_t i = nt - 1; i > 0; --i)
    std::swap(perm[static_cast<size_t>(i)], perm[rng.Below(static_cast<uint64_t>(i + 1))]);
  const auto permute = [&](const Tensor& t) {
    Tensor out(DType::kF64, t.shape());
    for (int64_t i = 0; i < nt; ++i)
      std::memcpy(Mut<double>(out).row(i), Const<double>(t).row(perm[static_cast<size_t>(i)]),
                  sizeof(double) * kD);
    return out;
  };
  const Tensor xp = permute(p.x), dyp = permute(p.dy);
  Context ctx(ContextOptions{.threads = 2});
  LayerRun<double> a = ForwardBackward<double>(cfg, p.w, p.x, p.dy, ctx);
  LayerRun<double> b = ForwardBackward<double>(cfg, p.w, xp, dyp, ctx);
  EXPECT_TRUE(CloseF64(b.y, permute(a.y), "y"));
  EXPECT_TRUE(CloseF64(b.dx, permute(a.dx), "dx"));
  const auto ga = Params(a.grad), gb = Params(b.grad);
  for (size_t i = 0; i < ga.size(); ++i)
    EXPECT_TRUE(CloseF64(*gb[i].second, *ga[i].second, "d_" + ga[i].first));
  EXPECT_EQ(b.st.stats.tokens_per_expert, a.st.stats.tokens_per_expert);
  EXPECT_NEAR(b.st.stats.aux_loss, a.st.stats.aux_loss, 1e-14);
  EXPECT_NEAR(b.st.stats.z_loss, a.st.stats.z_loss, 1e-14);
  EXPECT_NEAR(b.st.stats.entropy, a.st.stats.entropy, 1e-14);
}

// A capacity of C >= T can hold every assignment: nothing drops, and the layer is the dropless
// one bit for bit (same plan, same arithmetic), gradients included.
TEST(MoeInvariants, CapacityOfAtLeastTDropsNothing) {
  MoeConfig dropless = SmallConfig(4, 2);
  dropless.aux_loss_coef = 0.05;
  const int64_t nt = 10;
  Problem p = MakeProblem(dropless, nt, 24);
  Context ctx(ContextOptions{.threads = 2});
  LayerRun<double> ref = ForwardBackward<double>(dropless, p.w, p.x, p.dy, ctx);
  ASSERT_EQ(ref.st.stats.dropped, 0);
  // cf = E/K gives C = ceil(T) = T exactly; cf = 10 gives C = 5T.
  for (double cf : {2.0, 10.0}) {
    SCOPED_TRACE(cf);
    MoeConfig cfg = dropless;
    cfg.capacity_factor = cf;
    ASSERT_GE(ExpertCapacity(cfg, nt), nt);
    LayerRun<double> r = ForwardBackward<double>(cfg, p.w, p.x, p.dy, ctx);
    EXPECT_EQ(r.st.router.capacity, ExpertCapacity(cfg, nt));
    EXPECT_EQ(r.st.stats.dropped, 0);
    EXPECT_EQ(r.st.stats.assignments, nt * 2);
    EXPECT_TRUE(KeyOf(r.st) == KeyOf(ref.st));
    EXPECT_TRUE(BitwiseEqual(r.y, ref.y));
    EXPECT_TRUE(BitwiseEqual(r.dx, ref.dx));
    const auto gr = Params(r.grad), gref = Params(ref.grad);
    for (size_t i = 0; i < gr.size(); ++i)
      EXPECT_TRUE(BitwiseEqual(*gr[i].second, *gref[i].second)) << gr[i].first;
    EXPECT_EQ(r.st.stats.aux_loss, ref.st.stats.aux_loss);
  }
  // And C = T - 1 is the first capacity that can drop: all 10 tokens choosing one expert would.
  MoeConfig tight = dropless;
  tight.capacity_factor = 1.8;
  EXPECT_EQ(ExpertCapacity(tight, nt), nt - 1);
}

// An expert that no token chooses costs nothing: no rows, no active weight bytes, and exactly
// zero w13/w2 gradient, while every other expert gets tokens and gradient. Feature 0 of every token
// is 1 and the dead expert's router row is (-20, 0, ...), so its logit is -20 for every token.
TEST(MoeInvariants, ExpertWithNoTokensGetsNoGradientAndCostsNothing) {
  MoeConfig cfg = SmallConfig(4, 2);
  cfg.shared_d_ff = kF;
  const int64_t nt = 12, dead = 2;
  Problem p = MakeProblem(cfg, nt, 25);
  auto x = Mut<double>(p.x);
  for (int64_t t = 0; t < nt; ++t) x.at(t, 0) = 1.0;
  auto router = Mut<double>(p.w.router);
  for (int64_t j = 0; j < kD; ++j) router.at(dead, j) = j == 0 ? -20.0 : 0.0;
  for (int threads : {1, 2}) {
    SCOPED_TRACE(threads);
    Context ctx(ContextOptions{.threads = threads});
    LayerRun<double> r = ForwardBackward<double>(cfg, p.w, p.x, p.dy, ctx);
    const MoeStats& s = r.st.stats;
    ASSERT_EQ(s.tokens_per_expert[dead], 0);
    EXPECT_EQ(s.selected_per_expert[dead], 0);
    EXPECT_EQ(s.assignments, nt * 2);
    EXPECT_EQ(r.st.xp.shape()[0], nt * 2);  // only the chosen rows are gathered
    std::vector<int64_t> used = s.tokens_per_expert;
    used[dead] = 1;
    EXPECT_EQ(ActiveWeightBytes(cfg, s.tokens_per_expert, nt),
              ActiveWeightBytes(cfg, used, nt) - 4.0 * 3.0 * kD * kF);
    const int64_t n13 = 2 * kF * kD, n2 = kD * kF;
    const double* g13 = r.grad.w13.view<const double>().data;
    const double* g2 = r.grad.w2.view<const double>().data;
    for (int64_t e = 0; e < cfg.n_experts; ++e) {
      const bool zero13 =
          std::all_of(g13 + e * n13, g13 + (e + 1) * n13, [](double v) { return v == 0; });
      const bool zero2 =
          std::all_of(g2 + e * n2, g2 + (e + 1) * n2, [](double v) { return v == 0; });
      EXPECT_EQ(zero13, e == dead) << "expert " << e;
      EXPECT_EQ(zero2, e == dead) << "expert " << e;
    }
  }
}

// The f32 layer agrees with the double layer to f32 accuracy on the same weights and inputs (the
// routing is the same: the seeds have no near-ties), forward and backward.
TEST(MoeInvariants, FloatAgreesWithDouble) {
  for (const GradCase& gc : GradCases()) {
    SCOPED_TRACE(gc.name);
    Problem p = MakeProblem(gc.cfg, gc.tokens, gc.seed);
    MoeWeights wf = ToF32(p.cfg, p.w);
    const Tensor xf = ToF32(p.x), dyf = ToF32(p.dy);
    Context ctx(ContextOptions{.threads = 2});
    LayerRun<double> d = ForwardBackward<double>(p.cfg, p.w, p.x, p.dy, ctx, gc.opts);
    LayerRun<float> f = ForwardBackward<float>(p.cfg, wf, xf, dyf, ctx, gc.opts);
    ASSERT_TRUE(KeyOf(f.st) == KeyOf(d.st)) << "f32 and f64 routed differently";
    EXPECT_TRUE(CloseF32(f.y, d.y, "y"));
    EXPECT_TRUE(ExpectClose(f.st.plan.gate.data(), d.st.plan.gate.data(), d.st.plan.size(),
                            Tolerance{.atol = 1e-6, .rtol = 1e-5, .nmse = 1e-10}, "gate"));
    const Tolerance loss_tol{.atol = 1e-9, .rtol = 1e-5, .nmse = 1e-9};
    EXPECT_TRUE(ExpectClose(&f.st.stats.aux_loss, &d.st.stats.aux_loss, 1, loss_tol, "aux"));
    EXPECT_TRUE(ExpectClose(&f.st.stats.z_loss, &d.st.stats.z_loss, 1, loss_tol, "z"));
    EXPECT_TRUE(ExpectClose(&f.st.stats.entropy, &d.st.stats.entropy, 1, loss_tol, "entropy"));
    EXPECT_TRUE(CloseF32(f.dx, d.dx, "dx"));
    const auto gf = Params(f.grad), gd = Params(d.grad);
    for (size_t i = 0; i < gf.size(); ++i)
      EXPECT_TRUE(CloseF32(*gf[i].second, *gd[i].second, "d_" + gf[i].first));
  }
}

// The same inputs give bit-identical results, whether the state is fresh or reused after a call
// of another size (STYLE.md: reproducible for a given thread count), jitter included.
TEST(MoeInvariants, RepeatedRunsAreBitwiseIdentical) {
  for (const GradCase& gc : GradCases()) {
    SCOPED_TRACE(gc.name);
    Problem p = MakeProblem(gc.cfg, gc.tokens, gc.seed);
    MoeWeights wf = ToF32(p.cfg, p.w);
    const Tensor xf = ToF32(p.x), dyf = ToF32(p.dy);
    Context ctx(ContextOptions{.threads = 2});
    LayerRun<float> a = ForwardBackward<float>(p.cfg, wf, xf, dyf, ctx, gc.opts);
    LayerRun<float> b;
    Tensor small(DType::kF32, {3, kD});
    Forward<float>(p.cfg, wf, small, b, ctx, gc.opts);  // leaves differently sized buffers
    Forward<float>(p.cfg, wf, xf, b, ctx, gc.opts);
    Backward<float>(p.cfg, wf, xf, dyf, b, ctx);
    EXPECT_TRUE(KeyOf(a.st) == KeyOf(b.st));
    EXPECT_TRUE(BitwiseEqual(a.y, b.y));
    EXPECT_TRUE(BitwiseEqual(a.dx, b.dx));
    EXPECT_EQ(a.st.plan.gate, b.st.plan.gate);
    EXPECT_EQ(a.st.stats.aux_loss, b.st.stats.aux_loss);
    EXPECT_EQ(a.st.stats.z_loss, b.st.stats.z_loss);
    EXPECT_EQ(a.st.stats.entropy, b.st.stats.entropy);
    const auto ga = Params(a.grad), gb = Params(b.grad);
    for (size_t i = 0; i < ga.size(); ++i)
      EXPECT_TRUE(BitwiseEqual(*ga[i].second, *gb[i].second)) << ga[i].first;
  }
}

// Across thread counts the library promises the same routing but not the same bits: the router
// matmul switches between its few-row kernel and BLAS with the split, and entropy and the balance
// loss sum per-worker partials. So the plan must be identical and the numbers close: to rounding
// in double, to f32 accuracy in float. Sizes are large enough (T = 40, F = 32) that the token,
// expert-column and weight-row splits really happen.
TEST(MoeInvariants, ThreadCountsAgree) {
  MoeConfig cfg;
  cfg.d_model = 16;
  cfg.d_ff = 32;
  cfg.n_experts = 8;
  cfg.top_k = 2;
  cfg.shared_d_ff = 32;
  cfg.shared_gate = true;
  cfg.aux_loss_coef = 0.05;
  cfg.z_loss_coef = 0.01;
  cfg.capacity_factor = 1.0;
  const int64_t nt = 40;
  Problem p = MakeProblem(cfg, nt, 26);
  MoeWeights wf = ToF32(cfg, p.w);
  const Tensor xf = ToF32(p.x), dyf = ToF32(p.dy);
  Context ctx1(ContextOptions{.threads = 1});
  LayerRun<double> d1 = ForwardBackward<double>(cfg, p.w, p.x, p.dy, ctx1);
  LayerRun<float> f1 = ForwardBackward<float>(cfg, wf, xf, dyf, ctx1);
  EXPECT_GT(d1.st.stats.dropped, 0);
  for (int threads : {2, 3}) {
    SCOPED_TRACE(threads);
    Context ctx(ContextOptions{.threads = threads});
    LayerRun<double> d = ForwardBackward<double>(cfg, p.w, p.x, p.dy, ctx);
    LayerRun<float> f = ForwardBackward<float>(cfg, wf, xf, dyf, ctx);
    EXPECT_TRUE(KeyOf(d.st) == KeyOf(d1.st));
    EXPECT_TRUE(KeyOf(f.st) == KeyOf(f1.st));
    EXPECT_TRUE(CloseF64(d.y, d1.y, "y f64"));
    EXPECT_TRUE(CloseF64(d.dx, d1.dx, "dx f64"));
    EXPECT_NEAR(d.st.stats.aux_loss, d1.st.stats.aux_loss, 1e-14);
    const auto g = Params(d.grad), g1 = Params(d1.grad);
    for (size_t i = 0; i < g.size(); ++i)
      EXPECT_TRUE(CloseF64(*g[i].second, *g1[i].second, "d_" + g[i].first + " f64"));
    // f32 with t threads against f32 with one thread, within f32 tolerance of the double result.
    EXPECT_TRUE(CloseF32(f.y, d1.y, "y f32"));
    EXPECT_TRUE(ExpectClose(Const<float>(f.y).data, Const<float>(f1.y).data, f.y.numel(),
                            Tolerance{.atol = 1e-6, .rtol = 1e-5, .nmse = 1e-12},
                            "y f32 vs 1 thread"));
    EXPECT_TRUE(CloseF32(f.dx, d1.dx, "dx f32"));
    const auto gf = Params(f.grad);
    for (size_t i = 0; i < gf.size(); ++i)
      EXPECT_TRUE(CloseF32(*gf[i].second, *g1[i].second, "d_" + gf[i].first + " f32"));
  }
}

// ---- statistics
// ----------------------------------------------------------------------------------

// Loads add up for every routing mode: kept assignments per expert sum to the assignments, token
// choice selects T*K before capacity (kept + dropped), expert choice fills every expert to C.
TEST(MoeStats, LoadsAddUp) {
  for (const GradCase& gc : GradCases()) {
    SCOPED_TRACE(gc.name);
    Problem p = MakeProblem(gc.cfg, gc.tokens, gc.seed);
    Context ctx(ContextOptions{.threads = 2});
    LayerRun<double> r;
    Forward<double>(p.cfg, p.w, p.x, r, ctx, gc.opts);
    const MoeStats& s = r.st.stats;
    const int64_t e_count = p.cfg.n_experts, tk = gc.tokens * p.cfg.top_k;
    ASSERT_EQ(static_cast<int64_t>(s.tokens_per_expert.size()), e_count);
    EXPECT_EQ(std::accumulate(s.tokens_per_expert.begin(), s.tokens_per_expert.end(), int64_t{0}),
              s.assignments);
    EXPECT_EQ(s.assignments, r.st.plan.size());
    for (int64_t e = 0; e < e_count; ++e) {
      EXPECT_EQ(s.tokens_per_expert[e], r.st.plan.count(e));
      EXPECT_LE(s.tokens_per_expert[e], s.selected_per_expert[e]);
    }
    const int64_t cap = r.st.router.capacity;
    if (p.cfg.router == RouterKind::kTokenChoice) {
      EXPECT_EQ(
          std::accumulate(s.selected_per_expert.begin(), s.selected_per_expert.end(), int64_t{0}),
          tk);
      EXPECT_EQ(s.assignments + s.dropped, tk);
      for (int64_t e = 0; e < e_count; ++e) {
        if (cap > 0)
          EXPECT_EQ(s.tokens_per_expert[e], std::min(cap, s.selected_per_expert[e]));
        else
          EXPECT_EQ(s.tokens_per_expert[e], s.selected_per_expert[e]);
      }
    } else {
      EXPECT_EQ(s.tokens_per_expert, std::vector<int64_t>(static_cast<size_t>(e_count), cap));
      EXPECT_EQ(s.dropped, 0);
    }
    EXPECT_EQ(s.max_load, static_cast<double>(*std::max_element(s.tokens_per_expert.begin(),
                                                                s.tokens_per_expert.end())));
    EXPECT_DOUBLE_EQ(s.mean_load,
                     static_cast<double>(s.assignments) / static_cast<double>(e_count));
    EXPECT_DOUBLE_EQ(s.imbalance, s.max_load / s.mean_load);
  }
}

// Every token prefers expert 0 and C = ceil(1 * 8 * 1 / 4) = 2: tokens 0 and 1 are kept (token
// order), the other six are dropped and their output is exactly zero (no shared expert).
TEST(MoeStats, DropsOverCapacityInTokenOrder) {
  MoeConfig cfg = SmallConfig(4, 1);
  cfg.capacity_factor = 1.0;
  const int64_t nt = 8;
  Problem p = MakeProblem(cfg, nt, 31);
  for (int64_t t = 0; t < nt; ++t) Mut<double>(p.x).at(t, 0) = 1.0;
  auto router = Mut<double>(p.w.router);
  for (int64_t i = 0; i < router.numel(); ++i) router[i] = 0.0;
  router.at(0, 0) = 5.0;  // logits (5, 0, 0, 0) for every token
  Context ctx(ContextOptions{.threads = 2});
  LayerRun<double> r;
  Forward<double>(cfg, p.w, p.x, r, ctx);
  const MoeStats& s = r.st.stats;
  EXPECT_EQ(r.st.router.capacity, 2);
  EXPECT_EQ(s.tokens_per_expert, (std::vector<int64_t>{2, 0, 0, 0}));
  EXPECT_EQ(s.selected_per_expert, (std::vector<int64_t>{8, 0, 0, 0}));
  EXPECT_EQ(s.assignments, 2);
  EXPECT_EQ(s.dropped, 6);
  EXPECT_EQ(s.max_load, 2.0);
  EXPECT_EQ(s.mean_load, 0.5);
  EXPECT_EQ(s.imbalance, 4.0);
  EXPECT_EQ(r.st.plan.token, (std::vector<int32_t>{0, 1}));
  // Kept tokens: gate 1 (top-1 renormalised) times expert 0.
  const std::vector<double> e0 = RefExpert(p.x.view<const double>().data, nt, p.w, 0, kD, kF);
  EXPECT_TRUE(CloseF64(r.y.view<const double>().data, e0.data(), 2 * kD, "kept rows"));
  for (int64_t i = 2 * kD; i < nt * kD; ++i) ASSERT_EQ(Const<double>(r.y)[i], 0.0) << i;
}

// With K = 2, capacity is granted by rank first (every first choice before any second choice, as in
// GShard): tokens 0,1 choose (1, 0) and tokens 2,3 choose (0, 1), C = 2, so each expert is filled
// by first choices and every second choice drops, although tokens 0 and 1 come first in token
// order. Gates are renormalised over the chosen pair before dropping.
TEST(MoeStats, CapacityGoesToFirstChoicesFirst) {
  MoeConfig cfg = SmallConfig(4, 2);
  cfg.capacity_factor = 1.0;
  const int64_t nt = 4;
  Problem p = MakeProblem(cfg, nt, 32);
  auto x = Mut<double>(p.x);
  for (int64_t t = 0; t < nt; ++t) {
    x.at(t, 0) = t < 2 ? 1.0 : 2.0;
    x.at(t, 1) = t < 2 ? 2.0 : 1.0;
  }
  auto router = Mut<double>(p.w.router);
  for (int64_t i = 0; i < router.numel(); ++i) router[i] = 0.0;
  router.at(0, 0) = 3.0;
  router.at(1, 1) = 3.0;  // logits (3, 6, 0, 0) for tokens 0,1 and (6, 3, 0, 0) for tokens 2,3
  Context ctx(ContextOptions{.threads = 1});
  LayerRun<double> r;
  Forward<double>(cfg, p.w, p.x, r, ctx);
  EXPECT_EQ(r.st.router.capacity, 2);
  EXPECT_EQ(r.st.router.choice, (std::vector<int32_t>{1, 0, 1, 0, 0, 1, 0, 1}));
  EXPECT_EQ(r.st.plan.token, (std::vector<int32_t>{2, 3, 0, 1}));
  EXPECT_EQ(r.st.plan.expert, (std::vector<int32_t>{0, 0, 1, 1}));
  EXPECT_EQ(r.st.router.choice_pos, (std::vector<int32_t>{2, -1, 3, -1, 0, -1, 1, -1}));
  EXPECT_EQ(r.st.stats.dropped, 4);
  EXPECT_EQ(r.st.stats.selected_per_expert, (std::vector<int64_t>{4, 4, 0, 0}));
  const double gate = 1.0 / (1.0 + std::exp(-3.0));  // e^6 / (e^6 + e^3)
  for (double g : r.st.plan.gate) EXPECT_NEAR(g, gate, 1e-15);
  const double* xd = p.x.view<const double>().data;
  const std::vector<double> e0 = RefExpert(xd, nt, p.w, 0, kD, kF);
  const std::vector<double> e1 = RefExpert(xd, nt, p.w, 1, kD, kF);
  std::vector<double> want(static_cast<size_t>(nt * kD));
  for (int64_t i = 0; i < nt * kD; ++i)
    want[static_cast<size_t>(i)] = gate * (i < 2 * kD ? e1 : e0)[static_cast<size_t>(i)];
  EXPECT_TRUE(CloseF64(r.y.view<const double>().data, want.data(), nt * kD, "y"));
}

// A uniform router (all logits 0) has entropy log(E), balance loss alpha * E * sum_i f_i / E =
// alpha whatever it selects, and z-loss beta * log(E)^2; for softmax and sigmoid scores alike.
TEST(MoeStats, UniformRouter) {
  for (ScoreFn score : {ScoreFn::kSoftmax, ScoreFn::kSigmoid}) {
    SCOPED_TRACE(Name(score));
    MoeConfig cfg = SmallConfig(8, 2);
    cfg.score = score;
    cfg.aux_loss_coef = 0.3;
    cfg.z_loss_coef = 0.2;
    Problem p = MakeProblem(cfg, 6, 33);
    p.w.router.SetZero();
    Context ctx(ContextOptions{.threads = 2});
    LayerRun<double> r;
    Forward<double>(cfg, p.w, p.x, r, ctx);
    EXPECT_NEAR(r.st.stats.entropy, std::log(8.0), 1e-14);
    EXPECT_NEAR(r.st.stats.aux_loss, 0.3, 1e-14);
    EXPECT_NEAR(r.st.stats.z_loss, 0.2 * std::log(8.0) * std::log(8.0), 1e-14);
  }
}

// Group-limited selection against a reference written from the definition: selection score =
// score + bias; a group's score is the sum of its two best (or its best) selection scores; only the
// topk_groups best groups are eligible; the K best eligible experts are chosen, in rank order.
TEST(MoeStats, GroupLimitedSelectionMatchesReference) {
  for (const GradCase& gc : GradCases()) {
    if (gc.cfg.n_groups == 1) continue;
    SCOPED_TRACE(gc.name);
    const MoeConfig& cfg = gc.cfg;
    const int64_t nt = 32, e_count = cfg.n_experts, gsize = e_count / cfg.n_groups;
    Problem p = MakeProblem(cfg, nt, gc.seed);
    Context ctx(ContextOptions{.threads = 2});
    LayerRun<double> r;
    Forward<double>(cfg, p.w, p.x, r, ctx);
    auto scores = Const<double>(r.st.router.scores);
    for (int64_t t = 0; t < nt; ++t) {
      std::vector<double> sel(static_cast<size_t>(e_count));
      for (int64_t e = 0; e < e_count; ++e)
        sel[static_cast<size_t>(e)] =
            scores.at(t, e) + (cfg.selection_bias ? Const<double>(p.w.bias)[e] : 0.0);
      std::vector<double> gscore(static_cast<size_t>(cfg.n_groups));
      for (int64_t g = 0; g < cfg.n_groups; ++g) {
        std::vector<double> m(sel.begin() + g * gsize, sel.begin() + (g + 1) * gsize);
        std::sort(m.rbegin(), m.rend());
        gscore[static_cast<size_t>(g)] = cfg.group_score == GroupScore::kMax ? m[0] : m[0] + m[1];
      }
      const std::vector<int32_t> groups =
          moe::testing::RefTopK(gscore.data(), 1, cfg.n_groups, cfg.topk_groups);
      for (int64_t e = 0; e < e_count; ++e)
        if (std::find(groups.begin(), groups.end(), e / gsize) == groups.end())
          sel[static_cast<size_t>(e)] = -HUGE_VAL;
      const std::vector<int32_t> want = moe::testing::RefTopK(sel.data(), 1, e_count, cfg.top_k);
      const std::vector<int32_t> got(r.st.router.choice.begin() + t * cfg.top_k,
                                     r.st.router.choice.begin() + (t + 1) * cfg.top_k);
      EXPECT_EQ(got, want) << "token " << t;
    }
  }
}

// ---- DeepSeek-V3 selection bias
// ------------------------------------------------------------------

// b_i += gamma * sign(mean load - load_i): under-loaded experts gain, over-loaded ones lose,
// experts at the mean stay.
TEST(SelectionBias, UpdateByHand) {
  MoeConfig cfg = SmallConfig(4, 1);
  cfg.score = ScoreFn::kSigmoid;
  cfg.selection_bias = true;
  cfg.bias_update_rate = 0.1;
  const std::vector<int64_t> loads = {5, 1, 3, 3};  // mean 3
  Tensor bd(DType::kF64, {4});
  Tensor bf(DType::kF32, {4});
  const double start[] = {0.5, 0.0, -0.2, 1.0};
  for (int i = 0; i < 4; ++i) {
    Mut<double>(bd)[i] = start[i];
    Mut<float>(bf)[i] = static_cast<float>(start[i]);
  }
  UpdateSelectionBias(cfg, loads, bd);
  UpdateSelectionBias(cfg, loads, bf);
  const double want[] = {0.5 - 0.1, 0.0 + 0.1, -0.2, 1.0};
  for (int i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(Const<double>(bd)[i], want[i]) << i;
    EXPECT_FLOAT_EQ(Const<float>(bf)[i], static_cast<float>(want[i])) << i;
  }
  // Balanced loads change nothing.
  UpdateSelectionBias(cfg, {2, 2, 2, 2}, bd);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(Const<double>(bd)[i], want[i]) << i;
  // Misuse is an Error.
  EXPECT_THAT(ErrorOf([&] {
                UpdateSelectionBias(cfg, {1, 2, 3}, bd);
              }),
              HasSubstr("3 loads and 4 biases for 4 experts"));
  MoeConfig no_bias = cfg;
  no_bias.selection_bias = false;
  no_bias.bias_update_rate = 0;
  EXPECT_THAT(ErrorOf([&] { UpdateSelectionBias(no_bias, loads, bd); }),
              HasSubstr("selection_bias = true"));
}

// The bias steers selection only: a large bias on expert j makes every token choose j first, but
// j's gate is its unbiased sigmoid score (renormalised over the chosen experts and scaled by
// route_scale as configured), and the other choice is the best unbiased score. The bias gets no
// gradient.
TEST(SelectionBias, ChangesSelectionButNotGates) {
  for (bool renorm : {true, false}) {
    SCOPED_TRACE(renorm);
    MoeConfig cfg = SmallConfig(4, 2);
    cfg.score = ScoreFn::kSigmoid;
    cfg.selection_bias = true;
    cfg.renormalize = renorm;
    cfg.route_scale = 2.5;
    const int64_t nt = 6, k = 2, e_count = 4;
    Problem p = MakeProblem(cfg, nt, 34);
    p.w.bias.SetZero();
    Context ctx(ContextOptions{.threads = 1});
    LayerRun<double> before;
    Forward<double>(cfg, p.w, p.x, before, ctx);
    const auto& load = before.st.stats.selected_per_expert;
    const int64_t j = std::min_element(load.begin(), load.end()) - load.begin();
    ASSERT_LT(load[j], nt) << "expert " << j << " is already chosen by every token";

    Mut<double>(p.w.bias)[j] = 10.0;
    LayerRun<double> r = ForwardBackward<double>(cfg, p.w, p.x, p.dy, ctx);
    EXPECT_EQ(r.st.stats.selected_per_expert[j], nt);
    EXPECT_TRUE(AllZero(r.grad.bias));

    const double* xd = p.x.view<const double>().data;
    const std::vector<double> logits =
        moe::testing::RefMatMulNT(xd, p.w.router.view<const double>().data, nt, e_count, kD);
    std::vector<std::vector<double>> experts;
    for (int64_t e = 0; e < e_count; ++e) experts.push_back(RefExpert(xd, nt, p.w, e, kD, kF));
    std::vector<double> want_y(static_cast<size_t>(nt * kD), 0.0);
    for (int64_t t = 0; t < nt; ++t) {
      std::vector<double> sc(static_cast<size_t>(e_count));
      for (int64_t e = 0; e < e_count; ++e)
        sc[static_cast<size_t>(e)] =
            moe::testing::RefSigmoid(logits[static_cast<size_t>(t * e_count + e)]);
      std::vector<double> others = sc;
      others[static_cast<size_t>(j)] = -HUGE_VAL;
      const int32_t second = moe::testing::RefTopK(others.data(), 1, e_count, 1)[0];
      ASSERT_EQ(r.st.router.choice[static_cast<size_t>(t * k)], j) << "token " << t;
      ASSERT_EQ(r.st.router.choice[static_cast<size_t>(t * k + 1)], second) << "token " << t;
      const double norm =
          renorm ? sc[static_cast<size_t>(j)] + sc[static_cast<size_t>(second)] : 1.0;
      for (int64_t a = r.st.plan.token_offsets[t]; a < r.st.plan.token_offsets[t + 1]; ++a) {
        const int32_t n = r.st.plan.token_assign[static_cast<size_t>(a)];
        const int32_t e = r.st.plan.expert[static_cast<size_t>(n)];
        const double gate = 2.5 * sc[static_cast<size_t>(e)] / norm;
        EXPECT_NEAR(r.st.plan.gate[static_cast<size_t>(n)], gate, 1e-14)
            << "token " << t << " expert " << e;
        for (int64_t d = 0; d < kD; ++d)
          want_y[static_cast<size_t>(t * kD + d)] +=
              gate * experts[static_cast<size_t>(e)][static_cast<size_t>(t * kD + d)];
      }
    }
    EXPECT_TRUE(CloseF64(r.y.view<const double>().data, want_y.data(), nt * kD, "y"));
  }
}

}  // namespace
}  // namespace moe::mixture

namespace moe::mixture {
namespace {

// The inference layout of the same experts: gate, up and down of each expert apart, as `dtype`
// (F32 copies, or quantised row by row; `dequantised` then gets the training layout of the values
// the quantised blocks encode, so both layouts hold the same numbers).
MoeWeights InferenceLayout(const MoeConfig& cfg, const MoeWeights& w, DType dtype,
                           MoeWeights* dequantised = nullptr) {
  const int64_t d = cfg.d_model, f = cfg.d_ff, fs = cfg.shared_d_ff;
  auto mat = [&](const float* src, int64_t rows, int64_t cols, float* back) {
    if (dtype == DType::kF32) {
      Tensor t(DType::kF32, {rows, cols});
      std::memcpy(t.raw(), src, static_cast<size_t>(rows * cols) * sizeof(float));
      if (back) std::memcpy(back, src, static_cast<size_t>(rows * cols) * sizeof(float));
      return t;
    }
    const kernels::QuantType q = kernels::QuantTypeOf(dtype);
    Tensor t(dtype, {rows, cols});
    const int64_t rb = kernels::QuantRowBytes(q, cols);
    auto* bytes = static_cast<uint8_t*>(t.raw());
    for (int64_t r = 0; r < rows; ++r) {
      kernels::Quantize(q, src + r * cols, bytes + r * rb, cols);
      if (back) kernels::Dequantize(q, bytes + r * rb, back + r * cols, cols);
    }
    return t;
  };
  MoeWeights out;
  out.router = w.router.Clone();
  if (w.bias.defined()) out.bias = w.bias.Clone();
  if (w.shared_gate.defined()) out.shared_gate = w.shared_gate.Clone();
  if (dequantised) {
    *dequantised = MoeWeights();
    dequantised->Allocate(cfg, DType::kF32);
    dequantised->router = w.router.Clone();
    if (w.bias.defined()) dequantised->bias = w.bias.Clone();
    if (w.shared_gate.defined()) dequantised->shared_gate = w.shared_gate.Clone();
  }
  auto back = [&](Tensor MoeWeights::*t, int64_t off) {
    return dequantised ? Mut<float>(dequantised->*t).data + off : nullptr;
  };
  const float* w13 = Const<float>(w.w13).data;
  const float* w2 = Const<float>(w.w2).data;
  for (int64_t e = 0; e < cfg.n_experts; ++e) {
    FfnMatrices m;
    const int64_t o13 = e * 2 * f * d, o2 = e * d * f;
    m.gate = mat(w13 + o13, f, d, back(&MoeWeights::w13, o13));
    m.up = mat(w13 + o13 + f * d, f, d, back(&MoeWeights::w13, o13 + f * d));
    m.down = mat(w2 + o2, d, f, back(&MoeWeights::w2, o2));
    out.experts.push_back(std::move(m));
  }
  if (fs > 0) {
    const float* s13 = Const<float>(w.shared_w13).data;
    out.shared.gate = mat(s13, fs, d, back(&MoeWeights::shared_w13, 0));
    out.shared.up = mat(s13 + fs * d, fs, d, back(&MoeWeights::shared_w13, fs * d));
    out.shared.down = mat(Const<float>(w.shared_w2).data, d, fs, back(&MoeWeights::shared_w2, 0));
  }
  return out;
}

TEST(MoeInferenceLayout, F32MatricesMatchTheTrainingLayout) {
  for (const GradCase& gc : GradCases()) {
    SCOPED_TRACE(gc.name);
    Problem p = MakeProblem(gc.cfg, gc.tokens, gc.seed);
    MoeWeights wf = ToF32(p.cfg, p.w);
    const MoeWeights wi = InferenceLayout(p.cfg, wf, DType::kF32);
    ASSERT_TRUE(wi.inference_layout());
    const Tensor xf = ToF32(p.x);
    Context ctx(ContextOptions{.threads = 2});
    Tensor ya(DType::kF32, xf.shape()), yb(DType::kF32, xf.shape());
    MoeState<float> sa, sb;
    MoeForward<float>(p.cfg, wf, Const<float>(xf), Mut<float>(ya), sa, ctx);
    MoeForward<float>(p.cfg, wi, Const<float>(xf), Mut<float>(yb), sb, ctx);
    ASSERT_TRUE(KeyOf(sa) == KeyOf(sb));
    EXPECT_TRUE(ExpectClose(Const<float>(yb).data, Const<float>(ya).data, ya.numel(),
                            Tolerance{.atol = 1e-5, .rtol = 1e-4, .nmse = 1e-10}, "y"));
    EXPECT_EQ(sa.stats.tokens_per_expert, sb.stats.tokens_per_expert);
    // Inference only: the backward names the layout.
    MoeWeights grad;
    grad.Allocate(p.cfg, DType::kF32);
    Tensor dx(DType::kF32, xf.shape());
    EXPECT_THAT(ErrorOf([&] {
                  MoeBackward<float>(p.cfg, wi, Const<float>(xf), Const<float>(xf), sb, grad,
                                     Mut<float>(dx), ctx);
                }),
                HasSubstr("training layout"));
  }
}

TEST(MoeInferenceLayout, QuantisedExpertsMatchTheirDequantisedValues) {
  // Widths of whole K-quant blocks; a gated shared expert; decode (1 token) and prefill (40).
  MoeConfig cfg;
  cfg.d_model = 256;
  cfg.d_ff = 256;
  cfg.n_experts = 4;
  cfg.top_k = 2;
  cfg.renormalize = false;
  cfg.shared_d_ff = 256;
  cfg.shared_gate = true;
  for (DType dt : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K}) {
    for (int64_t tokens : {1, 40}) {
      SCOPED_TRACE(std::string(DTypeName(dt)) + " tokens=" + std::to_string(tokens));
      Rng rng(11);
      MoeWeights w;
      w.InitRandom(cfg, DType::kF32, rng);
      MoeWeights deq;
      const MoeWeights wi = InferenceLayout(cfg, w, dt, &deq);
      Tensor x(DType::kF32, {tokens, cfg.d_model});
      FillNormal(x, rng, 1.0);
      Context ctx(ContextOptions{.threads = 2});
      Tensor ya(DType::kF32, x.shape()), yb(DType::kF32, x.shape());
      MoeState<float> sa, sb;
      MoeForward<float>(cfg, deq, Const<float>(x), Mut<float>(ya), sa, ctx);
      MoeForward<float>(cfg, wi, Const<float>(x), Mut<float>(yb), sb, ctx);
      // Only the 8-bit quantisation of the activations differs: one scale per 32 values for
      // Q8_0 / Q4_0 weights, per 256 for the K-quants (ggml's Q8_K), which costs more on the
      // heavy-tailed SwiGLU outputs that feed the down projection (measured ~4e-4 vs ~1e-4).
      const bool k_quant = dt == DType::kQ4_K || dt == DType::kQ6_K;
      EXPECT_TRUE(ExpectClose(Const<float>(yb).data, Const<float>(ya).data, ya.numel(),
                              Tolerance{.atol = 1e9, .rtol = 1e9, .nmse = k_quant ? 1e-3 : 2e-4},
                              "y"));
    }
  }
}

}  // namespace
}  // namespace moe::mixture
