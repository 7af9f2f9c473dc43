// The test oracles themselves: the double references on hand-computed cases and against central
// differences of their own forwards, and GradCheck catching wrong gradients.
#include "moe/testing/reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "moe/testing/gradcheck.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::testing {
namespace {

using kernels::RandomNormal;

TEST(Reference, MatMulNTByHand) {
  // x = [[1,2],[3,4]], w = [[1,0],[1,1],[0,2]]  ->  y = x w^T = [[1,3,4],[3,7,8]]
  const std::vector<double> x = {1, 2, 3, 4}, w = {1, 0, 1, 1, 0, 2};
  EXPECT_EQ(RefMatMulNT(x.data(), w.data(), 2, 3, 2), (std::vector<double>{1, 3, 4, 3, 7, 8}));
  // dy = ones: dx[i,p] = sum_j w[j,p] = [2,3], dw[j,p] = sum_i x[i,p] = [4,6]
  const std::vector<double> dy(6, 1.0);
  const RefLinearGrads g = RefMatMulNTBackward(dy.data(), x.data(), w.data(), 2, 3, 2);
  EXPECT_EQ(g.dx, (std::vector<double>{2, 3, 2, 3}));
  EXPECT_EQ(g.dw, (std::vector<double>{4, 6, 4, 6, 4, 6}));
}

TEST(Reference, GemmTransposesByHand) {
  // A = [[1,2,3],[4,5,6]] (2x3), B = [[1,2],[3,4],[5,6]] (3x2): A B = [[22,28],[49,64]]
  const std::vector<double> a = {1, 2, 3, 4, 5, 6}, b = {1, 2, 3, 4, 5, 6};
  std::vector<double> c(4, 100.0);
  RefGemm(false, false, 2, 2, 3, 1.0, a.data(), 3, b.data(), 2, 0.0, c.data(), 2);
  EXPECT_EQ(c, (std::vector<double>{22, 28, 49, 64}));
  // A^T A with A seen as 3x2 transposed... use op(A) = A^T where A is [3,2] = b: b^T b
  RefGemm(true, false, 2, 2, 3, 2.0, b.data(), 2, b.data(), 2, 1.0, c.data(), 2);
  // b^T b = [[35,44],[44,56]]; c = 2 * that + old c
  EXPECT_EQ(c, (std::vector<double>{22 + 70, 28 + 88, 49 + 88, 64 + 112}));
  // beta == 0 ignores NaN in C.
  std::vector<double> d(4, std::nan(""));
  RefGemm(false, true, 2, 2, 3, 1.0, a.data(), 3, a.data(), 3, 0.0, d.data(), 2);
  EXPECT_EQ(d, (std::vector<double>{14, 32, 32, 77}));  // A A^T
}

TEST(Reference, SigmoidAndSiluTails) {
  EXPECT_DOUBLE_EQ(RefSigmoid(0.0), 0.5);
  EXPECT_EQ(RefSigmoid(1000.0), 1.0);
  EXPECT_EQ(RefSigmoid(-1000.0), 0.0);
  EXPECT_NEAR(RefSigmoid(-30.0), std::exp(-30.0), 1e-25);
  EXPECT_DOUBLE_EQ(RefSilu(2.0), 2.0 / (1.0 + std::exp(-2.0)));
  EXPECT_TRUE(std::isfinite(RefSilu(-1000.0)));
}

TEST(Reference, SoftmaxRowsSumToOneAndLogSumExpIsStable) {
  const std::vector<double> x = {1000.0, 1000.0, 999.0, -5.0, 0.0, 5.0};
  const std::vector<double> y = RefSoftmax(x.data(), 2, 3);
  for (int r = 0; r < 2; ++r) EXPECT_NEAR(y[r * 3] + y[r * 3 + 1] + y[r * 3 + 2], 1.0, 1e-15);
  EXPECT_DOUBLE_EQ(y[0], y[1]);
  EXPECT_NEAR(RefLogSumExp(x.data(), 3), 1000.0 + std::log(2.0 + std::exp(-1.0)), 1e-12);
}

TEST(Reference, TopKDescendingWithTiesToTheLowerIndex) {
  const std::vector<double> x = {1, 3, 3, 2, 3, -1};
  EXPECT_EQ(RefTopK(x.data(), 1, 6, 4), (std::vector<int32_t>{1, 2, 4, 3}));
  EXPECT_EQ(RefTopK(x.data(), 2, 3, 1), (std::vector<int32_t>{1, 1}));
}

TEST(Reference, RmsNormByHand) {
  // x = [3, 4]: mean x^2 = 12.5, rstd = 1/sqrt(12.5)
  const std::vector<double> x = {3, 4}, w = {1, 2};
  const RefRmsNormOut o = RefRmsNorm(x.data(), w.data(), 1, 2, 0.0);
  EXPECT_DOUBLE_EQ(o.rstd[0], 1.0 / std::sqrt(12.5));
  EXPECT_DOUBLE_EQ(o.y[1], 4.0 * 2.0 / std::sqrt(12.5));
}

// The reference backwards agree with central differences of the reference forwards.
TEST(Reference, BackwardsMatchFiniteDifferences) {
  Rng rng(11);
  const int64_t t = 3, n = 4, k = 5, f = 6, d = 7;
  const double eps = 1e-5;
  {  // matmul
    std::vector<double> x = RandomNormal<double>(rng, t * k), w = RandomNormal<double>(rng, n * k);
    const std::vector<double> r = RandomNormal<double>(rng, t * n);
    const RefLinearGrads g = RefMatMulNTBackward(r.data(), x.data(), w.data(), t, n, k);
    auto obj = [&] {
      return WeightedSum(RefMatMulNT(x.data(), w.data(), t, n, k).data(), r.data(), t * n);
    };
    EXPECT_TRUE(
        GradCheck(obj, {{"x", x.data(), g.dx.data(), t * k}, {"w", w.data(), g.dw.data(), n * k}}));
  }
  {  // softmax
    std::vector<double> x = RandomNormal<double>(rng, t * n, 2.0);
    const std::vector<double> r = RandomNormal<double>(rng, t * n);
    const std::vector<double> y = RefSoftmax(x.data(), t, n);
    const std::vector<double> dx = RefSoftmaxBackward(y.data(), r.data(), t, n);
    auto obj = [&] { return WeightedSum(RefSoftmax(x.data(), t, n).data(), r.data(), t * n); };
    EXPECT_TRUE(GradCheck(obj, {{"x", x.data(), dx.data(), t * n}}));
  }
  {  // sigmoid
    std::vector<double> x = RandomNormal<double>(rng, n, 3.0);
    const std::vector<double> r = RandomNormal<double>(rng, n);
    const std::vector<double> y = RefSigmoidForward(x.data(), n);
    const std::vector<double> dx = RefSigmoidBackward(y.data(), r.data(), n);
    auto obj = [&] { return WeightedSum(RefSigmoidForward(x.data(), n).data(), r.data(), n); };
    EXPECT_TRUE(GradCheck(obj, {{"x", x.data(), dx.data(), n}}));
  }
  {  // swiglu
    std::vector<double> h = RandomNormal<double>(rng, t * 2 * f, 2.0);
    const std::vector<double> r = RandomNormal<double>(rng, t * f);
    const std::vector<double> dh = RefSwiGluBackward(h.data(), r.data(), t, f);
    auto obj = [&] { return WeightedSum(RefSwiGlu(h.data(), t, f).data(), r.data(), t * f); };
    EXPECT_TRUE(GradCheck(obj, {{"h", h.data(), dh.data(), t * 2 * f}}));
  }
  {  // rmsnorm
    std::vector<double> x = RandomNormal<double>(rng, t * d), w = RandomNormal<double>(rng, d);
    const std::vector<double> r = RandomNormal<double>(rng, t * d);
    const RefRmsNormGrads g = RefRmsNormBackward(r.data(), x.data(), w.data(), t, d, eps);
    auto obj = [&] {
      return WeightedSum(RefRmsNorm(x.data(), w.data(), t, d, eps).y.data(), r.data(), t * d);
    };
    EXPECT_TRUE(
        GradCheck(obj, {{"x", x.data(), g.dx.data(), t * d}, {"w", w.data(), g.dw.data(), d}}));
  }
}

TEST(GradCheck, PassesExactGradientsAndRestoresValues) {
  // f(a, b) = sum a_i^2 b_i + sin(b_0)
  std::vector<double> a = {0.5, -1.0, 2.0}, b = {1.5, 0.25, -0.75};
  auto f = [&] {
    double s = std::sin(b[0]);
    for (size_t i = 0; i < 3; ++i) s += a[i] * a[i] * b[i];
    return s;
  };
  std::vector<double> da(3), db(3);
  for (size_t i = 0; i < 3; ++i) {
    da[i] = 2 * a[i] * b[i];
    db[i] = a[i] * a[i];
  }
  db[0] += std::cos(b[0]);
  const std::vector<double> a0 = a, b0 = b;
  EXPECT_TRUE(GradCheck(f, {{"a", a.data(), da.data(), 3}, {"b", b.data(), db.data(), 3}}));
  EXPECT_EQ(a, a0);  // bit-exact restore
  EXPECT_EQ(b, b0);
}

TEST(GradCheck, ReportsBufferIndexAndValuesOfAWrongGradient) {
  std::vector<double> a = {0.5, -1.0, 2.0};
  auto f = [&] { return a[0] * a[0] + 3 * a[1] + a[2] * a[2] * a[2]; };
  std::vector<double> da = {1.0, 3.0, 12.0};
  da[2] = 12.5;  // wrong: 3 a^2 = 12
  const ::testing::AssertionResult r = GradCheck(f, {{"weights", a.data(), da.data(), 3}});
  ASSERT_FALSE(r);
  const std::string msg = r.message();
  EXPECT_NE(msg.find("1 of 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("weights[2]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("analytic 12.5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("numeric 12"), std::string::npos) << msg;
  // A NaN gradient fails too.
  da[2] = std::nan("");
  EXPECT_FALSE(GradCheck(f, {{"weights", a.data(), da.data(), 3}}));
}

TEST(GradCheck, SamplesLargeBuffersIncludingTheEnds) {
  const int64_t n = 100000;
  std::vector<double> v(static_cast<size_t>(n), 1.0), g(static_cast<size_t>(n), 2.0);
  int64_t calls = 0;
  auto f = [&] {
    ++calls;
    return 2.0 * (v.front() + v.back() + v[static_cast<size_t>(n / 2)]);
  };
  // Only 3 elements carry weight in f; the rest have true gradient 0, so an analytic 2 fails there.
  GradCheckOptions opts;
  opts.max_per_param = 50;
  const ::testing::AssertionResult r = GradCheck(f, {{"v", v.data(), g.data(), n}}, opts);
  EXPECT_EQ(calls, 2 * 50);  // two evaluations per sampled element
  ASSERT_FALSE(r);
  const std::string msg = r.message();
  // The first and last elements are always sampled and pass; at least 47 of the others fail.
  EXPECT_EQ(msg.find("v[0]:"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("v[99999]:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("of 50 checked"), std::string::npos) << msg;
  g.assign(static_cast<size_t>(n), 0.0);
  g.front() = g.back() = g[static_cast<size_t>(n / 2)] = 2.0;
  EXPECT_TRUE(GradCheck(f, {{"v", v.data(), g.data(), n}}, opts));
}

}  // namespace
}  // namespace moe::testing
