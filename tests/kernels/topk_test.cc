// TopKForward / TopKBackward: exact agreement with the stable-sort reference (ties to the lower
// index), both the insertion path (k <= 8) and the partial-sort path, gradient checks with
// well-separated scores and shape errors.
#include "moe/kernels/topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include "moe/testing/gradcheck.h"
#include "moe/testing/reference.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using testing::GradCheck;
using testing::ToDouble;

enum class Values { kNormal, kFewDistinct, kWithInfinities };

std::vector<float> MakeScores(Rng& rng, int64_t count, Values kind) {
  std::vector<float> x = RandomNormal<float>(rng, count);
  for (float& v : x) {
    if (kind == Values::kFewDistinct) v = static_cast<float>(rng.Below(4));  // many ties
    if (kind == Values::kWithInfinities && rng.Below(4) == 0)
      v = rng.Below(2) ? -std::numeric_limits<float>::infinity() : 1e30f;
  }
  return x;
}

TEST(TopK, ForwardMatchesStableSortReference) {
  Rng rng(51);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (int64_t k : {1, 2, 4, 8, 9, 16}) {
      for (int64_t n : {k, k + 1, int64_t{64}}) {
        for (Values kind : {Values::kNormal, Values::kFewDistinct, Values::kWithInfinities}) {
          const int64_t t = 13;
          SCOPED_TRACE(::testing::Message() << "threads=" << threads << " k=" << k << " n=" << n
                                            << " kind=" << static_cast<int>(kind));
          const std::vector<float> x = MakeScores(rng, t * n, kind);
          std::vector<int32_t> idx(static_cast<size_t>(t * k), -1);
          std::vector<float> val(static_cast<size_t>(t * k));
          TopKForward<float>(CViewOf(x, {t, n}), k, ViewOf(idx, {t, k}), ViewOf(val, {t, k}), ctx);
          const std::vector<double> xd = ToDouble(x.data(), Size(x));
          const std::vector<int32_t> want = testing::RefTopK(xd.data(), t, n, k);
          ASSERT_EQ(idx, want);
          for (int64_t r = 0; r < t; ++r)
            for (int64_t j = 0; j < k; ++j)
              ASSERT_EQ(val[static_cast<size_t>(r * k + j)],
                        x[static_cast<size_t>(r * n + idx[static_cast<size_t>(r * k + j)])]);
        }
      }
    }
  }
}

TEST(TopK, RowHelperByHand) {
  const float x[] = {0.5f, 2.0f, 2.0f, -1.0f, 2.0f, 3.0f};
  int32_t idx[4];
  TopKRow<float>(x, 6, 4, idx);
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 4), (std::vector<int32_t>{5, 1, 2, 4}));
  int32_t all[6];
  TopKRow<float>(x, 6, 6, all);
  EXPECT_EQ(std::vector<int32_t>(all, all + 6), (std::vector<int32_t>{5, 1, 2, 4, 0, 3}));
  // The partial-sort path (k > 8) with ties.
  std::vector<double> y(20, 1.0);
  y[7] = 2.0;
  std::vector<int32_t> top(10);
  TopKRow<double>(y.data(), 20, 10, top.data());
  EXPECT_EQ(top, (std::vector<int32_t>{7, 0, 1, 2, 3, 4, 5, 6, 8, 9}));
}

TEST(TopK, BackwardScattersAndAccumulates) {
  Rng rng(52);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    const int64_t t = 11, n = 16, k = 3;
    const std::vector<float> x = RandomNormal<float>(rng, t * n);
    std::vector<int32_t> idx(static_cast<size_t>(t * k));
    std::vector<float> val(static_cast<size_t>(t * k));
    TopKForward<float>(CViewOf(x, {t, n}), k, ViewOf(idx, {t, k}), ViewOf(val, {t, k}), ctx);
    const std::vector<float> dval = RandomNormal<float>(rng, t * k);
    std::vector<float> dx = RandomNormal<float>(rng, t * n);
    std::vector<float> want = dx;
    for (int64_t r = 0; r < t; ++r)
      for (int64_t j = 0; j < k; ++j)
        want[static_cast<size_t>(r * n + idx[static_cast<size_t>(r * k + j)])] +=
            dval[static_cast<size_t>(r * k + j)];
    TopKBackward<float>(CViewOf(idx, {t, k}), CViewOf(dval, {t, k}), ViewOf(dx, {t, n}), ctx);
    EXPECT_EQ(dx, want) << "threads=" << threads;
  }
}

TEST(TopK, GradCheckInDoubleWithSeparatedScores) {
  Rng rng(53);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (int64_t k : {2, 10}) {
      const int64_t t = 4, n = 12;
      // Each row is a shuffled 0.1 * (0..n-1) plus small noise: neighbours differ by >= 0.08,
      // far above the step, so the selection does not change under perturbation.
      std::vector<double> x(static_cast<size_t>(t * n));
      for (int64_t r = 0; r < t; ++r) {
        std::vector<int> perm(static_cast<size_t>(n));
        std::iota(perm.begin(), perm.end(), 0);
        for (int64_t i = n - 1; i > 0; --i)
          std::swap(perm[static_cast<size_t>(i)], perm[rng.Below(static_cast<uint64_t>(i + 1))]);
        for (int64_t j = 0; j < n; ++j)
          x[static_cast<size_t>(r * n + j)] =
              0.1 * perm[static_cast<size_t>(j)] + 0.01 * rng.Uniform();
      }
      const std::vector<double> weights = RandomNormal<double>(rng, t * k);
      std::vector<int32_t> idx(static_cast<size_t>(t * k));
      std::vector<double> val(static_cast<size_t>(t * k));
      auto objective = [&] {
        TopKForward<double>(CViewOf(x, {t, n}), k, ViewOf(idx, {t, k}), ViewOf(val, {t, k}), ctx);
        return testing::WeightedSum(val.data(), weights.data(), Size(val));
      };
      objective();
      std::vector<double> dx(x.size(), 0.0);
      TopKBackward<double>(CViewOf(idx, {t, k}), CViewOf(weights, {t, k}), ViewOf(dx, {t, n}), ctx);
      EXPECT_TRUE(GradCheck(objective, {{"x", x.data(), dx.data(), Size(x)}}))
          << "threads=" << threads << " k=" << k;
    }
  }
}

TEST(TopK, ShapeErrorsThrow) {
  Context ctx({.threads = 1});
  std::vector<float> x(64), val(64), dval(64), dx(64);
  std::vector<int32_t> idx(64);
  auto V = [](auto& v, Shape s) {
    return View<std::remove_reference_t<decltype(v[0])>>(v.data(), s);
  };
  EXPECT_NO_THROW(TopKForward<float>(V(x, {4, 8}), 2, V(idx, {4, 2}), V(val, {4, 2}), ctx));
  EXPECT_THROW(TopKForward<float>(V(x, {4, 8}), 0, V(idx, {4, 0}), V(val, {4, 0}), ctx), Error);
  EXPECT_THROW(TopKForward<float>(V(x, {4, 8}), 9, V(idx, {4, 9}), V(val, {4, 9}), ctx), Error);
  EXPECT_THROW(TopKForward<float>(V(x, {4, 8}), 2, V(idx, {4, 3}), V(val, {4, 2}), ctx), Error);
  EXPECT_THROW(TopKForward<float>(V(x, {4, 8}), 2, V(idx, {4, 2}), V(val, {3, 2}), ctx), Error);
  EXPECT_THROW(TopKBackward<float>(V(idx, {4, 2}), V(dval, {4, 3}), V(dx, {4, 8}), ctx), Error);
  EXPECT_THROW(TopKBackward<float>(V(idx, {4, 2}), V(dval, {4, 2}), V(dx, {5, 8}), ctx), Error);
  try {
    TopKForward<float>(V(x, {4, 8}), 9, V(idx, {4, 9}), V(val, {4, 9}), ctx);
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[topk] k = 9 not in 1..8");
  }
}

}  // namespace
}  // namespace moe::kernels
