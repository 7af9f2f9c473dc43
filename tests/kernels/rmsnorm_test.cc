// RmsNormForward / RmsNormBackward against the double references (full Jacobian), gradient checks
// of the double instantiation, reproducibility of the dw reduction and shape errors.
#include "moe/kernels/rmsnorm.h"

#include <gtest/gtest.h>

#include <cstring>
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

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kEps = 1e-5f;

struct NormShape {
  int64_t t, d;
};
// T below, at and above the thread counts (the dw partials of idle workers must stay zero).
const NormShape kShapes[] = {{1, 1}, {1, 64}, {2, 8}, {7, 63}, {40, 256}};

TEST(RmsNorm, ForwardMatchesReference) {
  Rng rng(41);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const NormShape& s : kShapes) {
      for (double scale : {1e-3, 1.0, 100.0}) {
        SCOPED_TRACE(::testing::Message() << "threads=" << threads << " t=" << s.t << " d=" << s.d
                                          << " scale=" << scale);
        const std::vector<float> x = RandomNormal<float>(rng, s.t * s.d, scale);
        const std::vector<float> w = RandomNormal<float>(rng, s.d);
        std::vector<float> y(x.size(), kNaN), rstd(static_cast<size_t>(s.t), kNaN);
        RmsNormForward<float>(CViewOf(x, {s.t, s.d}), CViewOf(w, {s.d}), kEps,
                              ViewOf(y, {s.t, s.d}), ViewOf(rstd, {s.t}), ctx);
        const std::vector<double> xd = ToDouble(x.data(), Size(x)),
                                  wd = ToDouble(w.data(), Size(w));
        const testing::RefRmsNormOut want =
            testing::RefRmsNorm(xd.data(), wd.data(), s.t, s.d, kEps);
        EXPECT_TRUE(ExpectClose(rstd.data(), want.rstd.data(), s.t, {0, 1e-5, 1e-7}, "rstd"));
        EXPECT_TRUE(ExpectClose(y.data(), want.y.data(), Size(y), {1e-6, 1e-5, 1e-7}, "y"));
      }
    }
  }
}

TEST(RmsNorm, BackwardAccumulatesReference) {
  Rng rng(42);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const NormShape& s : kShapes) {
      SCOPED_TRACE(::testing::Message() << "threads=" << threads << " t=" << s.t << " d=" << s.d);
      const std::vector<float> x = RandomNormal<float>(rng, s.t * s.d, 2.0);
      const std::vector<float> w = RandomNormal<float>(rng, s.d);
      const std::vector<float> dy = RandomNormal<float>(rng, s.t * s.d);
      std::vector<float> y(x.size()), rstd(static_cast<size_t>(s.t));
      RmsNormForward<float>(CViewOf(x, {s.t, s.d}), CViewOf(w, {s.d}), kEps, ViewOf(y, {s.t, s.d}),
                            ViewOf(rstd, {s.t}), ctx);
      std::vector<float> dx = RandomNormal<float>(rng, s.t * s.d);
      std::vector<float> dw = RandomNormal<float>(rng, s.d);
      std::vector<double> want_dx = ToDouble(dx.data(), Size(dx));
      std::vector<double> want_dw = ToDouble(dw.data(), Size(dw));
      const std::vector<double> xd = ToDouble(x.data(), Size(x)), wd = ToDouble(w.data(), Size(w));
      const std::vector<double> dyd = ToDouble(dy.data(), Size(dy));
      const testing::RefRmsNormGrads g =
          testing::RefRmsNormBackward(dyd.data(), xd.data(), wd.data(), s.t, s.d, kEps);
      for (size_t i = 0; i < want_dx.size(); ++i) want_dx[i] += g.dx[i];
      for (size_t i = 0; i < want_dw.size(); ++i) want_dw[i] += g.dw[i];
      RmsNormBackward<float>(CViewOf(dy, {s.t, s.d}), CViewOf(x, {s.t, s.d}), CViewOf(w, {s.d}),
                             CViewOf(rstd, {s.t}), ViewOf(dx, {s.t, s.d}), ViewOf(dw, {s.d}), ctx);
      EXPECT_TRUE(ExpectClose(dx.data(), want_dx.data(), Size(dx), {1e-5, 1e-5, 1e-7}, "dx"));
      // dw sums over the T tokens.
      const double dw_atol = 1e-6 * static_cast<double>(s.t) * MaxAbs(dy) * 4;
      EXPECT_TRUE(ExpectClose(dw.data(), want_dw.data(), Size(dw), {dw_atol, 1e-5, 1e-7}, "dw"));
    }
  }
}

TEST(RmsNorm, BackwardIsBitwiseReproducibleForAThreadCount) {
  Rng rng(43);
  const int64_t t = 37, d = 48;
  const std::vector<float> x = RandomNormal<float>(rng, t * d), w = RandomNormal<float>(rng, d);
  const std::vector<float> dy = RandomNormal<float>(rng, t * d);
  std::vector<float> y(x.size()), rstd(static_cast<size_t>(t));
  Context ctx({.threads = 3});
  RmsNormForward<float>(CViewOf(x, {t, d}), CViewOf(w, {d}), kEps, ViewOf(y, {t, d}),
                        ViewOf(rstd, {t}), ctx);
  std::vector<float> dw_first;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<float> dx(x.size(), 0.0f), dw(static_cast<size_t>(d), 0.0f);
    RmsNormBackward<float>(CViewOf(dy, {t, d}), CViewOf(x, {t, d}), CViewOf(w, {d}),
                           CViewOf(rstd, {t}), ViewOf(dx, {t, d}), ViewOf(dw, {d}), ctx);
    if (rep == 0) dw_first = dw;
    ASSERT_EQ(std::memcmp(dw.data(), dw_first.data(), dw.size() * sizeof(float)), 0)
        << "rep " << rep;
  }
}

TEST(RmsNorm, GradCheckInDouble) {
  Rng rng(44);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const NormShape& s : {NormShape{1, 6}, NormShape{5, 9}}) {
      SCOPED_TRACE(::testing::Message() << "threads=" << threads << " t=" << s.t << " d=" << s.d);
      const double eps = 1e-5;
      std::vector<double> x = RandomNormal<double>(rng, s.t * s.d);
      std::vector<double> w = RandomNormal<double>(rng, s.d);
      const std::vector<double> r = RandomNormal<double>(rng, s.t * s.d);
      std::vector<double> y(x.size()), rstd(static_cast<size_t>(s.t));
      auto objective = [&] {
        RmsNormForward<double>(CViewOf(x, {s.t, s.d}), CViewOf(w, {s.d}), eps,
                               ViewOf(y, {s.t, s.d}), ViewOf(rstd, {s.t}), ctx);
        return testing::WeightedSum(y.data(), r.data(), Size(y));
      };
      objective();  // leaves the saved rstd at the unperturbed point
      std::vector<double> dx(x.size(), 0.0), dw(w.size(), 0.0);
      RmsNormBackward<double>(CViewOf(r, {s.t, s.d}), CViewOf(x, {s.t, s.d}), CViewOf(w, {s.d}),
                              CViewOf(rstd, {s.t}), ViewOf(dx, {s.t, s.d}), ViewOf(dw, {s.d}), ctx);
      EXPECT_TRUE(GradCheck(
          objective, {{"x", x.data(), dx.data(), Size(x)}, {"w", w.data(), dw.data(), Size(w)}}));
    }
  }
}

TEST(RmsNorm, ShapeErrorsThrow) {
  Context ctx({.threads = 1});
  std::vector<float> x(64), w(64), y(64), rstd(64), dy(64), dx(64), dw(64);
  auto V = [](std::vector<float>& v, Shape s) { return View<float>(v.data(), s); };
  EXPECT_NO_THROW(
      RmsNormForward<float>(V(x, {4, 8}), V(w, {8}), kEps, V(y, {4, 8}), V(rstd, {4}), ctx));
  EXPECT_THROW(
      RmsNormForward<float>(V(x, {4, 8}), V(w, {7}), kEps, V(y, {4, 8}), V(rstd, {4}), ctx), Error);
  EXPECT_THROW(
      RmsNormForward<float>(V(x, {4, 8}), V(w, {8}), kEps, V(y, {8, 4}), V(rstd, {4}), ctx), Error);
  EXPECT_THROW(
      RmsNormForward<float>(V(x, {4, 8}), V(w, {8}), kEps, V(y, {4, 8}), V(rstd, {3}), ctx), Error);
  EXPECT_THROW(
      RmsNormForward<float>(V(x, {4, 8}), V(w, {8}), -1e-6f, V(y, {4, 8}), V(rstd, {4}), ctx),
      Error);

  EXPECT_NO_THROW(RmsNormBackward<float>(V(dy, {4, 8}), V(x, {4, 8}), V(w, {8}), V(rstd, {4}),
                                         V(dx, {4, 8}), V(dw, {8}), ctx));
  EXPECT_THROW(RmsNormBackward<float>(V(dy, {4, 7}), V(x, {4, 8}), V(w, {8}), V(rstd, {4}),
                                      V(dx, {4, 8}), V(dw, {8}), ctx),
               Error);
  EXPECT_THROW(RmsNormBackward<float>(V(dy, {4, 8}), V(x, {4, 8}), V(w, {8}), V(rstd, {4}),
                                      V(dx, {8, 4}), V(dw, {8}), ctx),
               Error);
  EXPECT_THROW(RmsNormBackward<float>(V(dy, {4, 8}), V(x, {4, 8}), V(w, {8}), V(rstd, {4}),
                                      V(dx, {4, 8}), V(dw, {4}), ctx),
               Error);
  EXPECT_THROW(RmsNormBackward<float>(V(dy, {4, 8}), V(x, {4, 8}), V(w, {8}), V(rstd, {2}),
                                      V(dx, {4, 8}), V(dw, {8}), ctx),
               Error);
  // A too-short w would be read out of bounds.
  EXPECT_THROW(RmsNormBackward<float>(V(dy, {4, 8}), V(x, {4, 8}), V(w, {3}), V(rstd, {4}),
                                      V(dx, {4, 8}), V(dw, {8}), ctx),
               Error);
}

}  // namespace
}  // namespace moe::kernels
