// Softmax and sigmoid (router score functions): forward/backward against the double references,
// extreme inputs, gradient checks in double and shape errors.
#include "moe/kernels/activations.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iterator>
#include <limits>
#include <vector>

#include "moe/testing/compare.h"
#include "moe/testing/gradcheck.h"
#include "moe/testing/reference.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using testing::ExpectClose;
using testing::GradCheck;
using testing::ToDouble;
using testing::Tolerance;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- softmax
// -------------------------------------------------------------------------------------

TEST(Softmax, ForwardMatchesReference) {
  Rng rng(21);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (int64_t t : {1, 7, 33}) {
      for (int64_t e : {1, 2, 8, 60, 257}) {
        for (double scale : {1.0, 30.0}) {
          SCOPED_TRACE(::testing::Message()
                       << "threads=" << threads << " t=" << t << " e=" << e << " scale=" << scale);
          const std::vector<float> x = RandomNormal<float>(rng, t * e, scale);
          std::vector<float> y(x.size(), kNaN);
          SoftmaxForward<float>(CViewOf(x, {t, e}), ViewOf(y, {t, e}), ctx);
          const std::vector<double> xd = ToDouble(x.data(), Size(x));
          const std::vector<double> want = testing::RefSoftmax(xd.data(), t, e);
          EXPECT_TRUE(ExpectClose(y.data(), want.data(), Size(y), {1e-8, 1e-5, 1e-7}, "softmax"));
        }
      }
    }
  }
}

TEST(Softmax, RowReturnsTheLogPartition) {
  Rng rng(22);
  for (int64_t e : {1, 3, 64}) {
    const std::vector<float> x = RandomNormal<float>(rng, e, 10.0);
    std::vector<float> y(x.size());
    const float lse = SoftmaxRow<float>(x.data(), y.data(), e);
    const std::vector<double> xd = ToDouble(x.data(), e);
    EXPECT_NEAR(lse, testing::RefLogSumExp(xd.data(), e), 1e-5 * (1 + std::fabs(lse)));
  }
}

TEST(Softmax, ExtremeInputsStayFinite) {
  Context ctx({.threads = 1});
  // Huge logits would overflow exp() without the max subtraction.
  const std::vector<float> x = {1e30f,  -1e30f, 0.0f,    1e30f,   // two equal maxima
                                100.0f, 99.0f,  -100.0f, 88.0f,   // beyond exp's f32 range
                                -1e4f,  -1e4f,  -1e4f,   -1e4f};  // all equal and very negative
  std::vector<float> y(x.size());
  SoftmaxForward<float>(CViewOf(x, {3, 4}), ViewOf(y, {3, 4}), ctx);
  ASSERT_TRUE(AllFinite(y));
  for (int r = 0; r < 3; ++r) {
    float s = 0;
    for (int j = 0; j < 4; ++j) s += y[static_cast<size_t>(r * 4 + j)];
    EXPECT_NEAR(s, 1.0f, 1e-6f) << "row " << r;
  }
  EXPECT_FLOAT_EQ(y[0], 0.5f);
  EXPECT_FLOAT_EQ(y[3], 0.5f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_FLOAT_EQ(y[8], 0.25f);
  const std::vector<double> xd = ToDouble(x.data(), Size(x));
  const std::vector<double> want = testing::RefSoftmax(xd.data(), 3, 4);
  EXPECT_TRUE(ExpectClose(y.data(), want.data(), Size(y), {1e-8, 1e-5, 1e-7}, "extreme softmax"));
}

TEST(Softmax, BackwardAccumulatesReference) {
  Rng rng(23);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (int64_t t : {1, 9}) {
      for (int64_t e : {1, 5, 64}) {
        SCOPED_TRACE(::testing::Message() << "threads=" << threads << " t=" << t << " e=" << e);
        const std::vector<float> x = RandomNormal<float>(rng, t * e, 2.0);
        std::vector<float> y(x.size());
        SoftmaxForward<float>(CViewOf(x, {t, e}), ViewOf(y, {t, e}), ctx);
        const std::vector<float> dy = RandomNormal<float>(rng, t * e);
        std::vector<float> dx = RandomNormal<float>(rng, t * e);
        std::vector<double> want = ToDouble(dx.data(), Size(dx));
        const std::vector<double> yd = ToDouble(y.data(), Size(y)),
                                  dyd = ToDouble(dy.data(), Size(dy));
        const std::vector<double> g = testing::RefSoftmaxBackward(yd.data(), dyd.data(), t, e);
        for (size_t i = 0; i < want.size(); ++i) want[i] += g[i];
        SoftmaxBackward<float>(CViewOf(y, {t, e}), CViewOf(dy, {t, e}), ViewOf(dx, {t, e}), ctx);
        EXPECT_TRUE(
            ExpectClose(dx.data(), want.data(), Size(dx), {1e-6, 1e-5, 1e-7}, "softmax dx"));
      }
    }
  }
}

TEST(Softmax, GradCheckInDouble) {
  Rng rng(24);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    const int64_t t = 5, e = 7;
    std::vector<double> x = RandomNormal<double>(rng, t * e, 2.0);
    const std::vector<double> r = RandomNormal<double>(rng, t * e);
    std::vector<double> y(x.size());
    auto objective = [&] {
      SoftmaxForward<double>(CViewOf(x, {t, e}), ViewOf(y, {t, e}), ctx);
      return testing::WeightedSum(y.data(), r.data(), Size(y));
    };
    objective();
    std::vector<double> dx(x.size(), 0.0);
    SoftmaxBackward<double>(CViewOf(y, {t, e}), CViewOf(r, {t, e}), ViewOf(dx, {t, e}), ctx);
    EXPECT_TRUE(GradCheck(objective, {{"x", x.data(), dx.data(), Size(x)}}))
        << "threads=" << threads;
  }
}

TEST(Softmax, ShapeErrorsThrow) {
  Context ctx({.threads = 1});
  std::vector<float> a(12), b(12), c(12);
  EXPECT_THROW(SoftmaxForward<float>(CViewOf(a, {3, 4}), ViewOf(b, {4, 3}), ctx), Error);
  EXPECT_THROW(
      SoftmaxForward<float>(CView<float>(a.data(), {3, 0}), View<float>(b.data(), {3, 0}), ctx),
      Error);
  EXPECT_THROW(
      SoftmaxBackward<float>(CViewOf(a, {3, 4}), CViewOf(b, {3, 4}), ViewOf(c, {2, 6}), ctx),
      Error);
  EXPECT_THROW(SoftmaxBackward<float>(CViewOf(a, {3, 4}), CViewOf(b, {12}), ViewOf(c, {3, 4}), ctx),
               Error);
}

// ---- sigmoid
// -------------------------------------------------------------------------------------

TEST(Sigmoid, ForwardMatchesReferenceIncludingTails) {
  Rng rng(25);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    // n = 5000 is large enough to be split across the pool.
    for (int64_t n : {1, 100, 5000}) {
      SCOPED_TRACE(::testing::Message() << "threads=" << threads << " n=" << n);
      std::vector<float> x = RandomNormal<float>(rng, n, 5.0);
      const float extremes[] = {-1000.0f, -100.0f, -88.0f, -20.0f, 0.0f, 20.0f, 100.0f, 1000.0f};
      for (size_t i = 0; i < std::size(extremes) && i < x.size(); ++i)
        x[i * 7 % x.size()] = extremes[i];
      std::vector<float> y(x.size(), kNaN);
      SigmoidForward<float>(CViewOf(x, {n}), ViewOf(y, {n}), ctx);
      ASSERT_TRUE(AllFinite(y));
      for (float v : y) {
        ASSERT_GE(v, 0.0f);
        ASSERT_LE(v, 1.0f);
      }
      const std::vector<double> xd = ToDouble(x.data(), n);
      const std::vector<double> want = testing::RefSigmoidForward(xd.data(), n);
      EXPECT_TRUE(ExpectClose(y.data(), want.data(), n, {1e-12, 1e-6, 1e-7}, "sigmoid"));
    }
  }
}

TEST(Sigmoid, BackwardAccumulatesReference) {
  Rng rng(26);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (int64_t n : {3, 4099}) {
      const std::vector<float> x = RandomNormal<float>(rng, n, 3.0);
      std::vector<float> y(x.size());
      SigmoidForward<float>(CViewOf(x, {n}), ViewOf(y, {n}), ctx);
      const std::vector<float> dy = RandomNormal<float>(rng, n);
      std::vector<float> dx = RandomNormal<float>(rng, n);
      std::vector<double> want = ToDouble(dx.data(), n);
      const std::vector<double> yd = ToDouble(y.data(), n), dyd = ToDouble(dy.data(), n);
      const std::vector<double> g = testing::RefSigmoidBackward(yd.data(), dyd.data(), n);
      for (size_t i = 0; i < want.size(); ++i) want[i] += g[i];
      SigmoidBackward<float>(CViewOf(y, {n}), CViewOf(dy, {n}), ViewOf(dx, {n}), ctx);
      EXPECT_TRUE(ExpectClose(dx.data(), want.data(), n, {1e-7, 1e-6, 1e-7}, "sigmoid dx"))
          << "threads=" << threads << " n=" << n;
    }
  }
}

TEST(Sigmoid, GradCheckInDouble) {
  Rng rng(27);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    const int64_t t = 4, e = 9;
    std::vector<double> x = RandomNormal<double>(rng, t * e, 3.0);
    const std::vector<double> r = RandomNormal<double>(rng, t * e);
    std::vector<double> y(x.size());
    auto objective = [&] {
      SigmoidForward<double>(CViewOf(x, {t, e}), ViewOf(y, {t, e}), ctx);
      return testing::WeightedSum(y.data(), r.data(), Size(y));
    };
    objective();
    std::vector<double> dx(x.size(), 0.0);
    SigmoidBackward<double>(CViewOf(y, {t, e}), CViewOf(r, {t, e}), ViewOf(dx, {t, e}), ctx);
    EXPECT_TRUE(GradCheck(objective, {{"x", x.data(), dx.data(), Size(x)}}))
        << "threads=" << threads;
  }
}

TEST(Sigmoid, ShapeErrorsThrow) {
  Context ctx({.threads = 1});
  std::vector<float> a(12), b(12), c(12);
  EXPECT_THROW(SigmoidForward<float>(CViewOf(a, {3, 4}), ViewOf(b, {4, 3}), ctx), Error);
  EXPECT_THROW(SigmoidBackward<float>(CViewOf(a, {3, 4}), CViewOf(b, {3, 4}), ViewOf(c, {12}), ctx),
               Error);
}

}  // namespace
}  // namespace moe::kernels
