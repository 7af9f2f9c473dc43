// AdamWStep against the double reference over several steps (f32 and double params), a
// hand-computed first step, GlobalGradNorm / ClipGradNorm against torch's definition, and errors.
#include "moe/kernels/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "moe/testing/compare.h"
#include "moe/testing/reference.h"
#include "moe/testing/reference_transformer.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using testing::ExpectClose;
using testing::ToDouble;

template <typename P>
void CheckAgainstReference(const AdamWOptions& opts, int threads) {
  Rng rng(91);
  Context ctx({.threads = threads});
  const int64_t n = 5000;
  std::vector<P> p = RandomNormal<P>(rng, n);
  std::vector<float> m(static_cast<size_t>(n), 0.0f), v(static_cast<size_t>(n), 0.0f);
  std::vector<double> rp = ToDouble(p.data(), n), rm(static_cast<size_t>(n), 0.0), rv = rm;
  for (int64_t step = 1; step <= 4; ++step) {
    // Gradients of very different sizes, exact in f32.
    const std::vector<P> g = RandomNormal<P>(rng, n, step == 2 ? 1e-4 : 3.0);
    const std::vector<double> gd = ToDouble(g.data(), n);
    AdamWStep<P>(CViewOf(g, {n}), opts, step, ViewOf(p, {n}), ViewOf(m, {n}), ViewOf(v, {n}), ctx);
    testing::RefAdamWStep(rp.data(), gd.data(), rm.data(), rv.data(), n, opts, step);
    SCOPED_TRACE(::testing::Message() << "step " << step);
    // The moments are stored in f32: relative 1e-7 per step.
    // m = b1 m + (1 - b1) g cancels: its error is relative to the gradients (|g| <~ 12).
    EXPECT_TRUE(ExpectClose(m.data(), rm.data(), n, {1e-6, 1e-6, 1e-12}, "m"));
    EXPECT_TRUE(ExpectClose(v.data(), rv.data(), n, {1e-14, 1e-6, 1e-12}, "v"));
    EXPECT_TRUE(ExpectClose(p.data(), rp.data(), n, {1e-6 * opts.lr + 1e-7, 1e-6, 1e-12}, "p"));
  }
}

TEST(AdamW, MatchesReferenceOverSteps) {
  for (int threads : kThreadCounts) {
    CheckAgainstReference<float>(AdamWOptions{}, threads);
    CheckAgainstReference<float>(
        {.lr = 3e-2, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.1}, threads);
    CheckAgainstReference<double>({.lr = 1e-2, .weight_decay = 0.0}, threads);
  }
}

TEST(AdamW, FirstStepIsSignDescentWithDecoupledDecay) {
  // Step 1: m / (1 - b1) = g and sqrt(v / (1 - b2)) = |g|, so p1 = p0 (1 - lr wd) - lr g / (|g| +
  // eps).
  Context ctx({.threads = 1});
  const AdamWOptions o{.lr = 0.1, .eps = 1e-3, .weight_decay = 0.5};
  std::vector<double> p = {2.0, -1.0, 0.5}, g = {0.5, -4.0, 0.0};
  std::vector<float> m(3, 0.0f), v(3, 0.0f);
  AdamWStep<double>(CViewOf(g, {3}), o, 1, ViewOf(p, {3}), ViewOf(m, {3}), ViewOf(v, {3}), ctx);
  EXPECT_NEAR(p[0], 2.0 * 0.95 - 0.1 * 0.5 / (0.5 + 1e-3), 1e-7);
  EXPECT_NEAR(p[1], -1.0 * 0.95 + 0.1 * 4.0 / (4.0 + 1e-3), 1e-7);
  EXPECT_DOUBLE_EQ(p[2], 0.5 * 0.95);  // zero gradient: decay only
  EXPECT_FLOAT_EQ(m[1], -0.4f);
  EXPECT_FLOAT_EQ(v[1], 0.016f);
}

TEST(AdamW, ClipGradNormMatchesTorchDefinition) {
  Rng rng(92);
  std::vector<std::vector<float>> grads = {RandomNormal<float>(rng, 40000),
                                           RandomNormal<float>(rng, 3),
                                           {},
                                           RandomNormal<float>(rng, 17000)};
  std::vector<std::vector<double>> gd;
  for (const auto& g : grads) gd.push_back(ToDouble(g.data(), Size(g)));
  const double want = testing::RefGlobalNorm(gd);
  std::vector<CView<float>> views;
  for (const auto& g : grads) views.push_back(CView<float>(g.data(), {Size(g)}));
  double first = 0;
  for (int threads : {1, 2, 3}) {
    Context ctx({.threads = threads});
    const double norm = GlobalGradNorm<float>(views, ctx);
    EXPECT_NEAR(norm, want, 1e-12 * want);
    if (threads == 1) first = norm;
    EXPECT_EQ(std::memcmp(&norm, &first, sizeof norm), 0) << threads;
  }
  Context ctx({.threads = 2});
  std::vector<View<float>> mut;
  for (auto& g : grads) mut.push_back(View<float>(g.data(), {Size(g)}));
  // Above the threshold: scaled by max_norm / (norm + 1e-6).
  const double max_norm = want / 4;
  EXPECT_EQ(ClipGradNorm<float>(mut, max_norm, ctx), first);
  const double factor = max_norm / (want + 1e-6);
  for (size_t i = 0; i < grads.size(); ++i)
    for (size_t j = 0; j < grads[i].size(); ++j)
      ASSERT_EQ(grads[i][j], static_cast<float>(gd[i][j]) * static_cast<float>(factor));
  // Below the threshold: unchanged.
  const std::vector<float> before = grads[0];
  ClipGradNorm<float>(mut, 1e9, ctx);
  EXPECT_EQ(grads[0], before);
}

TEST(AdamW, ErrorsThrow) {
  Context ctx({.threads = 1});
  std::vector<float> p(4), g(4), m(4), v(4), short_m(3);
  EXPECT_NO_THROW(AdamWStep<float>(CViewOf(g, {4}), {}, 1, ViewOf(p, {4}), ViewOf(m, {4}),
                                   ViewOf(v, {4}), ctx));
  EXPECT_THROW(
      AdamWStep<float>(CViewOf(g, {4}), {}, 0, ViewOf(p, {4}), ViewOf(m, {4}), ViewOf(v, {4}), ctx),
      Error);
  EXPECT_THROW(AdamWStep<float>(CViewOf(g, {4}), {}, 1, ViewOf(p, {4}), ViewOf(short_m, {3}),
                                ViewOf(v, {4}), ctx),
               Error);
  EXPECT_THROW(AdamWStep<float>(CViewOf(g, {4}), {.beta2 = 1.0}, 1, ViewOf(p, {4}), ViewOf(m, {4}),
                                ViewOf(v, {4}), ctx),
               Error);
  std::vector<View<float>> none;
  EXPECT_THROW(ClipGradNorm<float>(none, 0.0, ctx), Error);
}

}  // namespace
}  // namespace moe::kernels
