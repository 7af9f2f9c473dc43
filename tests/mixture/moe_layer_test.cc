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
#include <ostream>
#include <numeric>
#include <string>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/rng.h"
#include "moe/mixture/presets.h"
#include "moe/mixture/routing.h"
#include "moe/testing/compare.h"
#include "moe/testing/gradcheck.h"
#include "moe/testing/reference.h"

namespace moe::mixture {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using moe::testing::ExpectClose;
using moe::testing::GradCheck;
using moe::testing::GradCheckOptions;
using moe::testing::GradParam;
using moe::testing::Tolerance;

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
void Forward(const MoeConfig& cfg, const MoeWeights& w, const Tensor& x, LayerRun<T>& r, Context& ctx,
             const MoeForwardOptions& opts = {}) {
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
// token-choice choices with their plan positions (-1 = dropped). Gates are continuous: not part of it.
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

// Every parameter gradient of a and b, by name, in ForEachParameter order.
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
    return ::testing::AssertionFailure() << what << ": shape " << actual.shape().str() << " vs "
                                         << expected.shape().str();
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

// The message of the moe::Error fn throws, or "(no error)".
std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}


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
      {"negative capacity_factor", [](MoeConfig& c) { c.capacity_factor = -0.5; },
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

  std::vector<GradParam> params = {{"x", Mut<double>(p.x).data, Const<double>(base.dx).data,
                                    p.x.numel()}};
  const auto values = Params(p.w), grads = Params(base.grad);
  ASSERT_EQ(values.size(), grads.size());
  for (size_t i = 0; i < values.size(); ++i) {
    params.push_back({values[i].first, Mut<double>(*values[i].second).data,
                      Const<double>(*grads[i].second).data, values[i].second->numel()});
    // A gradient that is all zero would make the check vacuous.
    EXPECT_FALSE(AllZero(*grads[i].second)) << "d_" << values[i].first << " is all zero";
  }
  EXPECT_FALSE(AllZero(base.dx));
  EXPECT_TRUE(GradCheck(objective, params, GradCheckOptions{.step = 1e-6, .atol = 1e-7, .rtol = 1e-5}));
  EXPECT_EQ(routing_changes, 0) << "the routing plan changed under a perturbation of 1e-6: the "
                                   "finite differences crossed a routing boundary; choose another seed";
}

INSTANTIATE_TEST_SUITE_P(Routers, MoeGradCheck, ::testing::ValuesIn(GradCases()),
                         [](const auto& info) { return std::string(info.param.name); });


}  // namespace
}  // namespace moe::mixture
