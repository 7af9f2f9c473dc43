// The per-ISA row kernels (scalar, AVX2, AVX-512; each one this CPU and MOE_ISA allow) against the
// double references: every tail length, m = 1..9 rows, strided rows, accumulate on and off, large
// |g| for the exp, softmax scores spread wide, and no writes outside the outputs.
#include "moe/kernels/isa/row_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "moe/core/cpu.h"
#include "moe/testing/compare.h"
#include "moe/testing/reference.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using testing::ExpectClose;
using testing::MatMulTolerance;
using testing::ToDouble;
using testing::Tolerance;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = -12345.0f;
constexpr int64_t kGuard = 16;  // sentinel elements after each output

const int64_t kLengths[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 513};

// Every ISA is instantiated (a stable test list on any machine or MOE_ISA); the ones this CPU or
// MOE_ISA does not allow are skipped.
class RowOpsTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (static_cast<int>(GetParam()) > static_cast<int>(ActiveIsa()))
      GTEST_SKIP() << IsaName(GetParam()) << " is not available (active: " << IsaName(ActiveIsa())
                   << ")";
  }
  const RowOps& ops() const { return RowOpsFor(GetParam()); }
};

// Checks the kGuard elements after n are still the sentinel.
::testing::AssertionResult GuardIntact(const std::vector<float>& v, int64_t n, const char* what) {
  for (int64_t i = n; i < n + kGuard; ++i)
    if (v[static_cast<size_t>(i)] != kSentinel)
      return ::testing::AssertionFailure()
             << what << ": wrote past the end at " << i << " (n=" << n << ")";
  return ::testing::AssertionSuccess();
}

// g: a mix of ordinary values and |g| up to 100, where a naive exp overflows f32.
std::vector<float> GateValues(Rng& rng, int64_t n, bool large) {
  return large ? RandomUniform<float>(rng, n, -100.0, 100.0) : RandomNormal<float>(rng, n, 3.0);
}

TEST_P(RowOpsTest, TableReportsItsIsa) { EXPECT_EQ(ops().isa, GetParam()); }

TEST_P(RowOpsTest, SwiGluMatchesReference) {
  Rng rng(61);
  for (int64_t n : kLengths) {
    for (bool large : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " large=" << large);
      const std::vector<float> g = GateValues(rng, n, large);
      const std::vector<float> u = RandomNormal<float>(rng, n);
      std::vector<float> a(static_cast<size_t>(n + kGuard), kSentinel);
      ops().swiglu(g.data(), u.data(), a.data(), n);
      EXPECT_TRUE(GuardIntact(a, n, "a"));
      a.resize(static_cast<size_t>(n));
      ASSERT_TRUE(AllFinite(a));
      std::vector<double> want(static_cast<size_t>(n));
      for (size_t i = 0; i < want.size(); ++i) want[i] = testing::RefSilu(g[i]) * u[i];
      EXPECT_TRUE(ExpectClose(a.data(), want.data(), n, NmseIfMeaningful({1e-6, 1e-5, 1e-7}, want),
                              "swiglu"));
    }
  }
}

TEST_P(RowOpsTest, SwiGluBackwardMatchesReference) {
  Rng rng(62);
  for (int64_t n : kLengths) {
    for (bool large : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " large=" << large);
      const std::vector<float> g = GateValues(rng, n, large);
      const std::vector<float> u = RandomNormal<float>(rng, n);
      const std::vector<float> da = RandomNormal<float>(rng, n);
      std::vector<float> dg(static_cast<size_t>(n + kGuard), kSentinel), du = dg;
      ops().swiglu_backward(g.data(), u.data(), da.data(), dg.data(), du.data(), n);
      EXPECT_TRUE(GuardIntact(dg, n, "dg"));
      EXPECT_TRUE(GuardIntact(du, n, "du"));
      dg.resize(static_cast<size_t>(n));
      du.resize(static_cast<size_t>(n));
      ASSERT_TRUE(AllFinite(dg));
      ASSERT_TRUE(AllFinite(du));
      // Reference via the fused layout h = [g | u].
      std::vector<double> h = ToDouble(g.data(), n);
      const std::vector<double> ud = ToDouble(u.data(), n);
      h.insert(h.end(), ud.begin(), ud.end());
      const std::vector<double> dad = ToDouble(da.data(), n);
      const std::vector<double> dh = testing::RefSwiGluBackward(h.data(), dad.data(), 1, n);
      const std::vector<double> want_dg(dh.begin(), dh.begin() + n),
          want_du(dh.begin() + n, dh.end());
      EXPECT_TRUE(ExpectClose(dg.data(), want_dg.data(), n,
                              NmseIfMeaningful({1e-5, 1e-5, 1e-7}, want_dg), "dg"));
      EXPECT_TRUE(ExpectClose(du.data(), want_du.data(), n,
                              NmseIfMeaningful({1e-6, 1e-5, 1e-7}, want_du), "du"));
    }
  }
}

TEST_P(RowOpsTest, SwiGluSaturatesCleanlyAtHugeGates) {
  // silu(g) -> g for g >> 0 and -> 0 for g << 0; its derivative -> 1 and 0.
  const std::vector<float> g = {100.0f, -100.0f, 88.0f,  -88.0f,  1e4f,  -1e4f,
                                30.0f,  -30.0f,  100.0f, -100.0f, 88.0f, -88.0f,
                                1e4f,   -1e4f,   30.0f,  -30.0f,  50.0f};
  const int64_t n = Size(g);
  const std::vector<float> u(g.size(), 2.0f), da(g.size(), 1.0f);
  std::vector<float> a(g.size()), dg(g.size()), du(g.size());
  ops().swiglu(g.data(), u.data(), a.data(), n);
  ops().swiglu_backward(g.data(), u.data(), da.data(), dg.data(), du.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    SCOPED_TRACE(::testing::Message() << "g=" << g[static_cast<size_t>(i)]);
    const double gi = g[static_cast<size_t>(i)];
    ASSERT_TRUE(std::isfinite(a[static_cast<size_t>(i)]));
    ASSERT_TRUE(std::isfinite(dg[static_cast<size_t>(i)]));
    ASSERT_TRUE(std::isfinite(du[static_cast<size_t>(i)]));
    if (gi > 0) {
      EXPECT_FLOAT_EQ(a[static_cast<size_t>(i)], static_cast<float>(2 * gi));
      EXPECT_FLOAT_EQ(dg[static_cast<size_t>(i)], 2.0f);
    } else {
      EXPECT_NEAR(a[static_cast<size_t>(i)], 0.0f, 1e-9f);
      EXPECT_NEAR(dg[static_cast<size_t>(i)], 0.0f, 1e-9f);
    }
  }
}

TEST_P(RowOpsTest, SoftmaxMatchesReference) {
  Rng rng(63);
  for (int64_t n : kLengths) {
    if (n == 0) continue;                // the op needs at least one score
    for (double spread : {1.0, 30.0}) {  // exp(30) * 513 would overflow f32 without the shift
      SCOPED_TRACE(::testing::Message() << "n=" << n << " spread=" << spread);
      std::vector<float> s = RandomNormal<float>(rng, n, spread);
      s.resize(static_cast<size_t>(n + kGuard), kSentinel);
      const float scale = 0.7f;
      double mx = -HUGE_VAL, sum = 0;
      for (int64_t i = 0; i < n; ++i) mx = std::max(mx, scale * static_cast<double>(s[i]));
      std::vector<double> want(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        sum += want[i] = std::exp(scale * static_cast<double>(s[i]) - mx);
      for (double& w : want) w /= sum;
      const float lse = ops().softmax(s.data(), n, scale);
      EXPECT_TRUE(GuardIntact(s, n, "s"));
      EXPECT_NEAR(lse, mx + std::log(sum), 1e-5 * std::max(1.0, std::abs(mx)));
      EXPECT_TRUE(ExpectClose(s.data(), want.data(), n, {1e-6, 1e-5, 1e-10}, "softmax"));
    }
  }
}

// y[m, n] (+)= x[m, k] * op(w) through `run`, against RefGemm in double: w is [n, k] when
// trans_w (NT), else [k, n] (NN). Padded leading dimensions; y's padding must not be touched and,
// without accumulate, its old values must not be read.
using FewRowProduct = std::function<void(const float* x, int64_t ldx, const float* w, int64_t ldw,
                                         float* y, int64_t ldy)>;
void CheckFewRowProduct(Rng& rng, bool trans_w, int64_t m, int64_t k, int64_t n, double scale,
                        bool accumulate, const FewRowProduct& run, const char* what) {
  SCOPED_TRACE(::testing::Message()
               << what << " m=" << m << " k=" << k << " n=" << n << " accumulate=" << accumulate);
  const int64_t ldx = k + 3, ldw = (trans_w ? k : n) + 1, ldy = n + 2;
  const std::vector<float> x = RandomNormal<float>(rng, m * ldx, scale);
  const std::vector<float> w = RandomNormal<float>(rng, (trans_w ? n : k) * ldw);
  std::vector<float> y = RandomNormal<float>(rng, m * ldy);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < ldy; ++j) {
      float& v = y[static_cast<size_t>(i * ldy + j)];
      if (j >= n)
        v = kSentinel;
      else if (!accumulate)
        v = kNaN;  // must be overwritten, not read
    }
  std::vector<double> want = ToDouble(y.data(), Size(y));
  const std::vector<double> xd = ToDouble(x.data(), Size(x)), wd = ToDouble(w.data(), Size(w));
  testing::RefGemm(false, trans_w, m, n, k, 1.0, xd.data(), ldx, wd.data(), ldw,
                   accumulate ? 1.0 : 0.0, want.data(), ldy);
  run(x.data(), ldx, w.data(), ldw, y.data(), ldy);
  Tolerance tol = MatMulTolerance(k, MaxAbs(x), MaxAbs(w));
  tol.atol += 1e-6;  // the accumulated old value
  ASSERT_TRUE(ExpectClose(y.data(), want.data(), Size(y), tol, what));
}

TEST_P(RowOpsTest, MatMulNtSmallMatchesReference) {
  Rng rng(63);
  // k = 16..256 in whole vectors with n >= 16: the short-row path (16 dot products reduced
  // together; rows of x in pairs for k <= 64, x in registers for k / 16 = 1..4 and 8), then the
  // tail rows of w.
  const int64_t ks[] = {1, 7, 15, 16, 17, 32, 48, 64, 100, 128, 256, 513};
  const int64_t ns[] = {1, 2, 3, 5, 7, 13, 16, 24, 37};
  for (int64_t m = 1; m <= kSmallM + 1; ++m)
    for (int64_t k : ks)
      for (int64_t n : ns)
        for (bool acc : {false, true})
          CheckFewRowProduct(
              rng, true, m, k, n, k == 17 ? 50.0 : 1.0, acc,  // one large-magnitude case
              [&](const float* x, int64_t ldx, const float* w, int64_t ldw, float* y,
                  int64_t ldy) { ops().matmul_nt_small(x, ldx, m, w, ldw, n, k, y, ldy, acc); },
              "matmul_nt_small");
}

TEST_P(RowOpsTest, MatMulNnSmallMatchesReference) {
  Rng rng(64);
  // n around the vector widths (8, 16) and the column chunks (32, 64), with masked tails.
  const int64_t ks[] = {1, 3, 32, 57};
  const int64_t ns[] = {1, 7, 8, 9, 16, 31, 33, 64, 65, 130};
  for (int64_t m = 1; m <= kSmallM; ++m)
    for (int64_t k : ks)
      for (int64_t n : ns)
        for (bool acc : {false, true})
          CheckFewRowProduct(
              rng, false, m, k, n, 1.0, acc,
              [&](const float* x, int64_t ldx, const float* w, int64_t ldw, float* y,
                  int64_t ldy) { ops().matmul_nn_small(x, ldx, m, w, ldw, k, n, y, ldy, acc); },
              "matmul_nn_small");
}

TEST_P(RowOpsTest, MatMulNtSmallWithNoRowsOrColumnsWritesNothing) {
  std::vector<float> x(8, 1.0f), w(8, 1.0f), y(8, kSentinel);
  ops().matmul_nt_small(x.data(), 4, 0, w.data(), 4, 2, 4, y.data(), 2, false);
  ops().matmul_nt_small(x.data(), 4, 2, w.data(), 4, 0, 4, y.data(), 2, false);
  for (float v : y) EXPECT_EQ(v, kSentinel);
  // k = 0: an empty dot product is 0.
  ops().matmul_nt_small(x.data(), 4, 2, w.data(), 4, 2, 0, y.data(), 2, false);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[static_cast<size_t>(i)], 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Isas, RowOpsTest,
                         ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

TEST(RowOps, ActiveTableMatchesActiveIsa) {
  EXPECT_EQ(ActiveRowOps().isa, ActiveIsa());
  EXPECT_EQ(&ActiveRowOps(), &RowOpsFor(ActiveIsa()));
}

TEST(RowOps, UnsupportedIsaIsAnError) {
  if (ActiveIsa() == Isa::kAvx512) GTEST_SKIP() << "every ISA is available on this CPU";
  EXPECT_THROW(RowOpsFor(Isa::kAvx512), Error);
}

}  // namespace
}  // namespace moe::kernels
