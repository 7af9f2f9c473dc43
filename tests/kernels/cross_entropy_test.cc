// CrossEntropyForward / CrossEntropyBackward against the double reference (ignored rows, large
// logits), by gradcheck of the mean loss, in place, and the bad-target error.
#include "moe/kernels/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "moe/testing/compare.h"
#include "moe/testing/gradcheck.h"
#include "moe/testing/reference.h"
#include "moe/testing/reference_transformer.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using testing::ExpectClose;
using testing::ToDouble;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<int32_t> RandomTargets(Rng& rng, int64_t t, int64_t v) {
  std::vector<int32_t> targets(static_cast<size_t>(t));
  for (auto& x : targets) x = static_cast<int32_t>(rng.Below(static_cast<uint64_t>(v)));
  return targets;
}

TEST(CrossEntropy, ForwardAndBackwardMatchReference) {
  Rng rng(71);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const auto& [t, v] : {std::pair<int64_t, int64_t>{1, 1}, {5, 7}, {9, 300}, {33, 1000}}) {
      for (double scale : {1.0, 30.0, 1e4}) {
        SCOPED_TRACE(::testing::Message()
                     << "threads=" << threads << " t=" << t << " v=" << v << " scale=" << scale);
        const std::vector<float> logits = RandomNormal<float>(rng, t * v, scale);
        std::vector<int32_t> targets = RandomTargets(rng, t, v);
        if (t > 2) targets[1] = -100;  // PyTorch's ignore_index
        if (t > 4) targets[4] = -1;
        std::vector<float> row(static_cast<size_t>(t), kNaN), lse(static_cast<size_t>(t), kNaN);
        const CrossEntropyResult r =
            CrossEntropyForward<float>(CViewOf(logits, {t, v}), CViewOf(targets, {t}),
                                       ViewOf(row, {t}), ViewOf(lse, {t}), ctx);
        const std::vector<double> ld = ToDouble(logits.data(), Size(logits));
        const testing::RefCrossEntropyOut want =
            testing::RefCrossEntropy(ld.data(), targets.data(), t, v);
        EXPECT_EQ(r.count, want.count);
        ASSERT_TRUE(std::isfinite(r.loss));
        // lse and the losses are O(scale); f32 logits rounding is already in the inputs.
        const double atol = 1e-6 * std::max(1.0, scale);
        EXPECT_NEAR(r.loss, want.loss, atol + 1e-6 * std::fabs(want.loss));
        EXPECT_TRUE(ExpectClose(row.data(), want.row_loss.data(), t, {atol, 1e-6, 1e-10}, "row"));

        const float gscale = want.count ? 1.0f / static_cast<float>(want.count) : 0.0f;
        std::vector<float> dlogits(logits.size(), kNaN);
        CrossEntropyBackward<float>(CViewOf(logits, {t, v}), CViewOf(targets, {t}),
                                    CViewOf(lse, {t}), gscale, ViewOf(dlogits, {t, v}), ctx);
        const std::vector<double> dwant =
            testing::RefCrossEntropyBackward(ld.data(), targets.data(), t, v, gscale);
        // exp(x - lse) with |x| ~ scale: relative error ~ scale * eps_f32.
        const double gatol = 2e-7 * std::max(1.0, scale) * gscale + 1e-9;
        EXPECT_TRUE(ExpectClose(dlogits.data(), dwant.data(), Size(dlogits),
                                NmseIfMeaningful({gatol, 1e-5, 1e-9}, dwant, 1e-6), "dlogits"));
        if (t > 2) {
          for (int64_t j = 0; j < v; ++j) EXPECT_EQ(dlogits[static_cast<size_t>(v + j)], 0.0f);
        }

        // In place: dlogits written over the logits.
        std::vector<float> inplace = logits;
        CrossEntropyBackward<float>(CViewOf(inplace, {t, v}), CViewOf(targets, {t}),
                                    CViewOf(lse, {t}), gscale, ViewOf(inplace, {t, v}), ctx);
        EXPECT_EQ(std::memcmp(inplace.data(), dlogits.data(), inplace.size() * sizeof(float)), 0);
      }
    }
  }
}

TEST(CrossEntropy, GradCheckOfMeanLossInDouble) {
  Rng rng(72);
  Context ctx({.threads = 1});
  const int64_t t = 6, v = 11;
  std::vector<double> logits = RandomNormal<double>(rng, t * v, 3.0);
  std::vector<int32_t> targets = RandomTargets(rng, t, v);
  targets[2] = -100;
  std::vector<double> row(static_cast<size_t>(t)), lse(static_cast<size_t>(t));
  auto objective = [&] {
    return CrossEntropyForward<double>(CViewOf(logits, {t, v}), CViewOf(targets, {t}),
                                       ViewOf(row, {t}), ViewOf(lse, {t}), ctx)
        .loss;
  };
  const CrossEntropyResult r = CrossEntropyForward<double>(
      CViewOf(logits, {t, v}), CViewOf(targets, {t}), ViewOf(row, {t}), ViewOf(lse, {t}), ctx);
  ASSERT_EQ(r.count, 5);
  std::vector<double> d(logits.size());
  CrossEntropyBackward<double>(CViewOf(logits, {t, v}), CViewOf(targets, {t}), CViewOf(lse, {t}),
                               1.0 / static_cast<double>(r.count), ViewOf(d, {t, v}), ctx);
  EXPECT_TRUE(testing::GradCheck(objective, {{"logits", logits.data(), d.data(), Size(logits)}}));
}

TEST(CrossEntropy, LossIsBitwiseEqualForAnyThreadCount) {
  Rng rng(73);
  const int64_t t = 37, v = 50;
  const std::vector<float> logits = RandomNormal<float>(rng, t * v);
  const std::vector<int32_t> targets = RandomTargets(rng, t, v);
  std::vector<float> row(static_cast<size_t>(t)), lse(static_cast<size_t>(t));
  double first = 0;
  for (int threads : {1, 2, 3, 7}) {
    Context ctx({.threads = threads});
    const double loss = CrossEntropyForward<float>(CViewOf(logits, {t, v}), CViewOf(targets, {t}),
                                                   ViewOf(row, {t}), ViewOf(lse, {t}), ctx)
                            .loss;
    if (threads == 1) first = loss;
    EXPECT_EQ(std::memcmp(&loss, &first, sizeof loss), 0) << threads;
  }
}

TEST(CrossEntropy, AllIgnoredGivesZeroLossAndZeroGradient) {
  Context ctx({.threads = 2});
  const std::vector<float> logits = {1, 2, 3, 4, 5, 6};
  const std::vector<int32_t> targets = {-100, -100};
  std::vector<float> row(2, kNaN), lse(2), d(6, kNaN);
  const CrossEntropyResult r = CrossEntropyForward<float>(
      CViewOf(logits, {2, 3}), CViewOf(targets, {2}), ViewOf(row, {2}), ViewOf(lse, {2}), ctx);
  EXPECT_EQ(r.count, 0);
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_EQ(row, std::vector<float>(2, 0.0f));
  CrossEntropyBackward<float>(CViewOf(logits, {2, 3}), CViewOf(targets, {2}), CViewOf(lse, {2}),
                              1.0f, ViewOf(d, {2, 3}), ctx);
  EXPECT_EQ(d, std::vector<float>(6, 0.0f));
}

TEST(CrossEntropy, HugeLogitsStayFinite) {
  Context ctx({.threads = 1});
  const std::vector<float> logits = {1e30f, -1e30f, 0.0f, 3e38f, 3e38f, -3e38f};
  const std::vector<int32_t> targets = {1, 0};
  std::vector<float> row(2), lse(2), d(6);
  const CrossEntropyResult r = CrossEntropyForward<float>(
      CViewOf(logits, {2, 3}), CViewOf(targets, {2}), ViewOf(row, {2}), ViewOf(lse, {2}), ctx);
  EXPECT_TRUE(std::isfinite(r.loss));
  EXPECT_NEAR(row[1], std::log(2.0), 1e-6);  // two equal maxima
  CrossEntropyBackward<float>(CViewOf(logits, {2, 3}), CViewOf(targets, {2}), CViewOf(lse, {2}),
                              1.0f, ViewOf(d, {2, 3}), ctx);
  // Finite everywhere; row 1's probabilities are only as good as lse = 3e38 rounded to f32.
  EXPECT_TRUE(AllFinite(d));
  EXPECT_EQ(d[0], 1.0f);
  EXPECT_EQ(d[1], -1.0f);
  EXPECT_EQ(d[2], 0.0f);
}

TEST(CrossEntropy, BadTargetsAndShapesThrow) {
  Context ctx({.threads = 2});
  const std::vector<float> logits(4 * 10, 0.0f);
  std::vector<int32_t> targets = {1, 2, 3, 10};
  std::vector<float> row(4), lse(4), d(40);
  try {
    CrossEntropyForward<float>(CViewOf(logits, {4, 10}), CViewOf(targets, {4}), ViewOf(row, {4}),
                               ViewOf(lse, {4}), ctx);
    ADD_FAILURE() << "target 10 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("targets[3] = 10"), std::string::npos) << e.what();
  }
  EXPECT_THROW(CrossEntropyBackward<float>(CViewOf(logits, {4, 10}), CViewOf(targets, {4}),
                                           CViewOf(lse, {4}), 1.0f, ViewOf(d, {4, 10}), ctx),
               Error);
  targets[3] = 9;
  EXPECT_THROW(
      CrossEntropyForward<float>(CViewOf(logits, {4, 10}), CView<int32_t>(targets.data(), {3}),
                                 ViewOf(row, {4}), ViewOf(lse, {4}), ctx),
      Error);
  EXPECT_THROW(CrossEntropyForward<float>(CViewOf(logits, {4, 10}), CViewOf(targets, {4}),
                                          View<float>(row.data(), {3}), ViewOf(lse, {4}), ctx),
               Error);
  EXPECT_THROW(
      CrossEntropyBackward<float>(CViewOf(logits, {4, 10}), CViewOf(targets, {4}),
                                  CViewOf(lse, {4}), 1.0f, View<float>(d.data(), {10, 4}), ctx),
      Error);
}

}  // namespace
}  // namespace moe::kernels
