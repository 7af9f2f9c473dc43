// SwiGluForward / SwiGluBackward (View level, through the active ISA) against the double
// references, gradient checks of the double instantiation and shape errors. The per-ISA row kernels
// are covered in row_ops_test.cc.
#include "moe/kernels/swiglu.h"

#include <gtest/gtest.h>

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
const int64_t kHidden[] = {1, 7, 16, 33, 100};

TEST(SwiGlu, ForwardMatchesReference) {
  Rng rng(31);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (int64_t t : {1, 5, 17}) {
      for (int64_t f : kHidden) {
        for (double scale : {1.0, 30.0}) {
          SCOPED_TRACE(::testing::Message()
                       << "threads=" << threads << " t=" << t << " f=" << f << " scale=" << scale);
          const std::vector<float> h = RandomNormal<float>(rng, t * 2 * f, scale);
          std::vector<float> a(static_cast<size_t>(t * f), kNaN);
          SwiGluForward<float>(CViewOf(h, {t, 2 * f}), ViewOf(a, {t, f}), ctx);
          ASSERT_TRUE(AllFinite(a));
          const std::vector<double> hd = ToDouble(h.data(), Size(h));
          const std::vector<double> want = testing::RefSwiGlu(hd.data(), t, f);
          EXPECT_TRUE(ExpectClose(a.data(), want.data(), Size(a),
                                  NmseIfMeaningful({1e-6, 1e-5, 1e-7}, want), "swiglu"));
        }
      }
    }
  }
}

TEST(SwiGlu, BackwardAccumulatesReference) {
  Rng rng(32);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (int64_t t : {1, 5, 17}) {
      for (int64_t f : kHidden) {
        SCOPED_TRACE(::testing::Message() << "threads=" << threads << " t=" << t << " f=" << f);
        const std::vector<float> h = RandomNormal<float>(rng, t * 2 * f, 3.0);
        const std::vector<float> da = RandomNormal<float>(rng, t * f);
        std::vector<float> dh = RandomNormal<float>(rng, t * 2 * f);
        std::vector<double> want = ToDouble(dh.data(), Size(dh));
        const std::vector<double> hd = ToDouble(h.data(), Size(h)),
                                  dad = ToDouble(da.data(), Size(da));
        const std::vector<double> g = testing::RefSwiGluBackward(hd.data(), dad.data(), t, f);
        for (size_t i = 0; i < want.size(); ++i) want[i] += g[i];
        SwiGluBackward<float>(CViewOf(h, {t, 2 * f}), CViewOf(da, {t, f}), ViewOf(dh, {t, 2 * f}),
                              ctx);
        EXPECT_TRUE(ExpectClose(dh.data(), want.data(), Size(dh), {1e-5, 1e-5, 1e-7}, "swiglu dh"));
      }
    }
  }
}

TEST(SwiGlu, GradCheckInDouble) {
  Rng rng(33);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    const int64_t t = 6, f = 5;
    std::vector<double> h = RandomNormal<double>(rng, t * 2 * f, 2.0);
    const std::vector<double> r = RandomNormal<double>(rng, t * f);
    std::vector<double> a(static_cast<size_t>(t * f));
    auto objective = [&] {
      SwiGluForward<double>(CViewOf(h, {t, 2 * f}), ViewOf(a, {t, f}), ctx);
      return testing::WeightedSum(a.data(), r.data(), Size(a));
    };
    std::vector<double> dh(h.size(), 0.0);
    SwiGluBackward<double>(CViewOf(h, {t, 2 * f}), CViewOf(r, {t, f}), ViewOf(dh, {t, 2 * f}), ctx);
    EXPECT_TRUE(GradCheck(objective, {{"h", h.data(), dh.data(), Size(h)}}))
        << "threads=" << threads;
  }
}

TEST(SwiGlu, DoubleRowHelpersMatchReference) {
  Rng rng(34);
  const int64_t f = 19;
  const std::vector<double> h = RandomNormal<double>(rng, 2 * f, 4.0);
  const std::vector<double> da = RandomNormal<double>(rng, f);
  std::vector<double> a(static_cast<size_t>(f)), dh(static_cast<size_t>(2 * f));
  SwiGluRow<double>(h.data(), h.data() + f, a.data(), f);
  SwiGluBackwardRow<double>(h.data(), h.data() + f, da.data(), dh.data(), dh.data() + f, f);
  const std::vector<double> want_a = testing::RefSwiGlu(h.data(), 1, f);
  const std::vector<double> want_dh = testing::RefSwiGluBackward(h.data(), da.data(), 1, f);
  EXPECT_TRUE(ExpectClose(a.data(), want_a.data(), f, {1e-14, 1e-13, 1e-24}, "a"));
  EXPECT_TRUE(ExpectClose(dh.data(), want_dh.data(), 2 * f, {1e-14, 1e-13, 1e-24}, "dh"));
}

TEST(SwiGlu, ShapeErrorsThrow) {
  Context ctx({.threads = 1});
  std::vector<float> h(64), a(64), da(64), dh(64);
  auto V = [](std::vector<float>& v, Shape s) { return View<float>(v.data(), s); };
  EXPECT_NO_THROW(SwiGluForward<float>(V(h, {3, 8}), V(a, {3, 4}), ctx));
  // h must be [T, 2F] for a [T, F].
  EXPECT_THROW(SwiGluForward<float>(V(h, {3, 8}), V(a, {3, 3}), ctx), Error);
  EXPECT_THROW(SwiGluForward<float>(V(h, {3, 7}), V(a, {3, 3}), ctx), Error);
  EXPECT_THROW(SwiGluForward<float>(V(h, {3, 8}), V(a, {4, 4}), ctx), Error);
  EXPECT_NO_THROW(SwiGluBackward<float>(V(h, {3, 8}), V(da, {3, 4}), V(dh, {3, 8}), ctx));
  EXPECT_THROW(SwiGluBackward<float>(V(h, {3, 8}), V(da, {3, 4}), V(dh, {3, 6}), ctx), Error);
  EXPECT_THROW(SwiGluBackward<float>(V(h, {3, 8}), V(da, {3, 4}), V(dh, {4, 8}), ctx), Error);
  EXPECT_THROW(SwiGluBackward<float>(V(h, {3, 8}), V(da, {3, 3}), V(dh, {3, 8}), ctx), Error);
  EXPECT_THROW(SwiGluBackward<float>(V(h, {3, 8}), V(da, {2, 4}), V(dh, {3, 8}), ctx), Error);
}

}  // namespace
}  // namespace moe::kernels
