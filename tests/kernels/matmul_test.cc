// Gemm, MatMulNT, LinearForward and LinearBackward against the double references, plus gradient
// checks of LinearBackward<double> and shape errors.
#include "moe/kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
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
using testing::MatMulTolerance;
using testing::ToDouble;
using testing::Tolerance;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- Gemm
// ----------------------------------------------------------------------------------------

struct GemmCase {
  bool ta, tb;
  int64_t m, n, k;
  float alpha, beta;
};

TEST(Gemm, AllTransposesWithLeadingDimsAlphaAndBeta) {
  Rng rng(1);
  std::vector<GemmCase> cases;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float beta : {0.0f, 1.0f, -0.5f}) {
        cases.push_back({ta, tb, 5, 7, 11, 0.5f, beta});
        cases.push_back({ta, tb, 37, 29, 65, 1.0f, beta});
        cases.push_back({ta, tb, 1, 3, 1, 2.0f, beta});
      }
  for (const GemmCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "ta=" << c.ta << " tb=" << c.tb << " m=" << c.m
                                      << " n=" << c.n << " k=" << c.k << " beta=" << c.beta);
    // Stored shapes (row-major) and padded leading dimensions.
    const int64_t a_rows = c.ta ? c.k : c.m, a_cols = c.ta ? c.m : c.k;
    const int64_t b_rows = c.tb ? c.n : c.k, b_cols = c.tb ? c.k : c.n;
    const int64_t lda = a_cols + 3, ldb = b_cols + 1, ldc = c.n + 2;
    const std::vector<float> a = RandomNormal<float>(rng, a_rows * lda);
    const std::vector<float> b = RandomNormal<float>(rng, b_rows * ldb);
    std::vector<float> cm = RandomNormal<float>(rng, c.m * ldc);
    // beta == 0 must ignore whatever C held (NaN included); the padding must stay untouched.
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < ldc; ++j)
        if (j >= c.n)
          cm[static_cast<size_t>(i * ldc + j)] = 12345.0f;
        else if (c.beta == 0.0f)
          cm[static_cast<size_t>(i * ldc + j)] = kNaN;
    std::vector<double> want = ToDouble(cm.data(), Size(cm));
    const std::vector<double> ad = ToDouble(a.data(), Size(a)), bd = ToDouble(b.data(), Size(b));
    testing::RefGemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, ad.data(), lda, bd.data(), ldb, c.beta,
                     want.data(), ldc);
    Gemm<float>(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta, cm.data(),
                ldc);
    Tolerance tol = MatMulTolerance(c.k, MaxAbs(a), MaxAbs(b));
    tol.atol = tol.atol * std::fabs(c.alpha) + 1e-6;  // + rounding of beta * C
    EXPECT_TRUE(ExpectClose(cm.data(), want.data(), Size(cm), tol, "gemm f32"));

    // The double instantiation agrees to double precision.
    std::vector<double> cd = ToDouble(cm.data(), Size(cm));
    std::vector<double> want_d = cd;
    testing::RefGemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, ad.data(), lda, bd.data(), ldb, c.beta,
                     want_d.data(), ldc);
    Gemm<double>(c.ta, c.tb, c.m, c.n, c.k, c.alpha, ad.data(), lda, bd.data(), ldb, c.beta,
                 cd.data(), ldc);
    EXPECT_TRUE(ExpectClose(cd.data(), want_d.data(), Size(cd), {1e-12, 1e-12, 1e-24}, "gemm f64"));
  }
}

// One region over several weights gives exactly the products one by one, for decode-sized and
// prefill-sized x, with weight row counts that do not divide evenly between the threads.
TEST(Gemm, EmptyOutputIsANoOp) {
  std::vector<float> c = {7.0f};
  const float a = 1.0f;
  Gemm<float>(false, false, 0, 1, 1, 1.0f, &a, 1, &a, 1, 0.0f, c.data(), 1);
  Gemm<float>(false, false, 1, 0, 1, 1.0f, &a, 1, &a, 1, 0.0f, c.data(), 1);
  EXPECT_EQ(c[0], 7.0f);
}

// An empty inner dimension (K = 0) is a valid product: C = beta * C. The natural leading dimension
// of a [M,0] or [0,N] operand is 0, which a strict BLAS rejects (it reports an illegal parameter
// and leaves C untouched; OpenBLAS happens to accept it), so Gemm must not pass it through.
TEST(Gemm, EmptyInnerDimensionScalesC) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float beta : {0.0f, 1.0f, -0.5f}) {
        SCOPED_TRACE(::testing::Message() << "ta=" << ta << " tb=" << tb << " beta=" << beta);
        const int64_t m = 3, n = 4, ldc = n + 1;
        // Natural leading dims of op(A) [m,0] and op(B) [0,n] stored row-major.
        const int64_t lda = ta ? m : 0, ldb = tb ? 0 : n;
        const float dummy = 1.0f;
        std::vector<float> cf(static_cast<size_t>(m * ldc));
        for (size_t i = 0; i < cf.size(); ++i)
          cf[i] = (i % ldc) >= static_cast<size_t>(n) ? 12345.0f
                  : beta == 0.0f                      ? kNaN
                                                      : static_cast<float>(i) - 5.0f;
        std::vector<double> want = ToDouble(cf.data(), Size(cf));
        std::vector<double> cd = want;
        const double dd = 1.0;
        testing::RefGemm(ta, tb, m, n, 0, 2.0, &dd, lda, &dd, ldb, beta, want.data(), ldc);
        Gemm<float>(ta, tb, m, n, 0, 2.0f, &dummy, lda, &dummy, ldb, beta, cf.data(), ldc);
        Gemm<double>(ta, tb, m, n, 0, 2.0, &dd, lda, &dd, ldb, beta, cd.data(), ldc);
        for (size_t i = 0; i < want.size(); ++i) {
          EXPECT_EQ(static_cast<double>(cf[i]), want[i]) << "f32 at " << i;
          EXPECT_EQ(cd[i], want[i]) << "f64 at " << i;
        }
      }
}

// ---- MatMulNT
// ------------------------------------------------------------------------------------

// K = 0 on both paths (own few-row kernel, BLAS): y = 0, or y unchanged when accumulating.
TEST(MatMulNT, EmptyInnerDimension) {
  for (int64_t m : {int64_t{2}, int64_t{20}})
    for (bool accumulate : {false, true}) {
      const int64_t n = 3;
      std::vector<float> y(static_cast<size_t>(m * n), accumulate ? 1.5f : kNaN);
      const float dummy = 1.0f;
      MatMulNT<float>(&dummy, 0, m, &dummy, 0, n, 0, y.data(), n, accumulate);
      for (float v : y) EXPECT_EQ(v, accumulate ? 1.5f : 0.0f) << "m=" << m;
    }
}

TEST(MatMulNT, SmallAndLargeMWithStridesAndAccumulate) {
  Rng rng(2);
  // m <= kSmallM takes the row-ops path, larger m goes through BLAS.
  for (int64_t m : {1, 2, 5, 8, 9, 20}) {
    for (int64_t k : {1, 17, 100}) {
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "m=" << m << " k=" << k << " acc=" << accumulate);
        const int64_t n = 13, ldx = k + 5, ldw = k + 1, ldy = n + 3;
        const std::vector<float> x = RandomNormal<float>(rng, m * ldx);
        const std::vector<float> w = RandomNormal<float>(rng, n * ldw);
        std::vector<float> y = RandomNormal<float>(rng, m * ldy);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < ldy; ++j)
            if (j >= n)
              y[static_cast<size_t>(i * ldy + j)] = -777.0f;
            else if (!accumulate)
              y[static_cast<size_t>(i * ldy + j)] = kNaN;
        std::vector<double> want = ToDouble(y.data(), Size(y));
        const std::vector<double> xd = ToDouble(x.data(), Size(x)),
                                  wd = ToDouble(w.data(), Size(w));
        testing::RefGemm(false, true, m, n, k, 1.0, xd.data(), ldx, wd.data(), ldw,
                         accumulate ? 1.0 : 0.0, want.data(), ldy);
        MatMulNT<float>(x.data(), ldx, m, w.data(), ldw, n, k, y.data(), ldy, accumulate);
        Tolerance tol = MatMulTolerance(k, MaxAbs(x), MaxAbs(w));
        tol.atol += 1e-6;
        EXPECT_TRUE(ExpectClose(y.data(), want.data(), Size(y), tol, "matmul_nt"));
      }
    }
  }
}

// ---- LinearForward / LinearBackward
// ----------------------------------------------------------------

struct LinearShape {
  int64_t t, n, k;
};
// Token counts on both sides of the split heuristic (t <= kSmallM * threads splits the columns).
const LinearShape kLinearShapes[] = {{1, 7, 17},   {5, 33, 100}, {8, 16, 16}, {24, 9, 31},
                                     {25, 40, 64}, {64, 33, 7},  {3, 1, 5}};

TEST(LinearForward, MatchesReferenceForSeveralThreadCounts) {
  Rng rng(3);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const LinearShape& s : kLinearShapes) {
      SCOPED_TRACE(::testing::Message()
                   << "threads=" << threads << " t=" << s.t << " n=" << s.n << " k=" << s.k);
      const std::vector<float> x = RandomNormal<float>(rng, s.t * s.k, 2.0);
      const std::vector<float> w = RandomNormal<float>(rng, s.n * s.k, 0.5);
      std::vector<float> y(static_cast<size_t>(s.t * s.n), kNaN);  // must be overwritten
      LinearForward<float>(CViewOf(x, {s.t, s.k}), CViewOf(w, {s.n, s.k}), ViewOf(y, {s.t, s.n}),
                           ctx);
      const std::vector<double> xd = ToDouble(x.data(), Size(x)), wd = ToDouble(w.data(), Size(w));
      const std::vector<double> want = testing::RefMatMulNT(xd.data(), wd.data(), s.t, s.n, s.k);
      EXPECT_TRUE(ExpectClose(y.data(), want.data(), Size(y),
                              MatMulTolerance(s.k, MaxAbs(x), MaxAbs(w)), "linear forward"));
    }
  }
}

TEST(LinearBackward, AccumulatesReferenceGradients) {
  Rng rng(4);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const LinearShape& s : kLinearShapes) {
      SCOPED_TRACE(::testing::Message()
                   << "threads=" << threads << " t=" << s.t << " n=" << s.n << " k=" << s.k);
      const std::vector<float> x = RandomNormal<float>(rng, s.t * s.k);
      const std::vector<float> w = RandomNormal<float>(rng, s.n * s.k);
      const std::vector<float> dy = RandomNormal<float>(rng, s.t * s.n);
      // Prefilled: the kernel adds to what is there.
      std::vector<float> dx = RandomNormal<float>(rng, s.t * s.k);
      std::vector<float> dw = RandomNormal<float>(rng, s.n * s.k);
      std::vector<double> want_dx = ToDouble(dx.data(), Size(dx));
      std::vector<double> want_dw = ToDouble(dw.data(), Size(dw));
      const std::vector<double> xd = ToDouble(x.data(), Size(x)), wd = ToDouble(w.data(), Size(w));
      const std::vector<double> dyd = ToDouble(dy.data(), Size(dy));
      const testing::RefLinearGrads g =
          testing::RefMatMulNTBackward(dyd.data(), xd.data(), wd.data(), s.t, s.n, s.k);
      for (size_t i = 0; i < want_dx.size(); ++i) want_dx[i] += g.dx[i];
      for (size_t i = 0; i < want_dw.size(); ++i) want_dw[i] += g.dw[i];

      LinearBackward<float>(CViewOf(dy, {s.t, s.n}), CViewOf(x, {s.t, s.k}), CViewOf(w, {s.n, s.k}),
                            ViewOf(dx, {s.t, s.k}), ViewOf(dw, {s.n, s.k}), ctx);
      EXPECT_TRUE(ExpectClose(dx.data(), want_dx.data(), Size(dx),
                              MatMulTolerance(s.n, MaxAbs(dy), MaxAbs(w)), "dx"));
      EXPECT_TRUE(ExpectClose(dw.data(), want_dw.data(), Size(dw),
                              MatMulTolerance(s.t, MaxAbs(dy), MaxAbs(x)), "dw"));
    }
  }
}

TEST(LinearBackward, EmptyDxOrDwIsSkipped) {
  Rng rng(5);
  Context ctx({.threads = 3});
  const int64_t t = 6, n = 5, k = 4;
  const std::vector<float> x = RandomNormal<float>(rng, t * k), w = RandomNormal<float>(rng, n * k);
  const std::vector<float> dy = RandomNormal<float>(rng, t * n);
  std::vector<float> dx(static_cast<size_t>(t * k), 0.0f), dw(static_cast<size_t>(n * k), 0.0f);
  LinearBackward<float>(CViewOf(dy, {t, n}), CViewOf(x, {t, k}), CViewOf(w, {n, k}),
                        ViewOf(dx, {t, k}), View<float>(), ctx);
  LinearBackward<float>(CViewOf(dy, {t, n}), CViewOf(x, {t, k}), CViewOf(w, {n, k}),
                        View<float>(nullptr, {0, k}), ViewOf(dw, {n, k}), ctx);
  const std::vector<double> xd = ToDouble(x.data(), Size(x)), wd = ToDouble(w.data(), Size(w));
  const std::vector<double> dyd = ToDouble(dy.data(), Size(dy));
  const testing::RefLinearGrads g =
      testing::RefMatMulNTBackward(dyd.data(), xd.data(), wd.data(), t, n, k);
  EXPECT_TRUE(ExpectClose(dx.data(), g.dx.data(), Size(dx), MatMulTolerance(n, 5, 5), "dx"));
  EXPECT_TRUE(ExpectClose(dw.data(), g.dw.data(), Size(dw), MatMulTolerance(t, 5, 5), "dw"));
}

TEST(LinearBackward, GradCheckInDouble) {
  Rng rng(6);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const LinearShape& s :
         {LinearShape{3, 4, 5}, LinearShape{11, 6, 9}, LinearShape{40, 3, 2}}) {
      SCOPED_TRACE(::testing::Message() << "threads=" << threads << " t=" << s.t);
      std::vector<double> x = RandomNormal<double>(rng, s.t * s.k);
      std::vector<double> w = RandomNormal<double>(rng, s.n * s.k);
      const std::vector<double> r = RandomNormal<double>(rng, s.t * s.n);
      std::vector<double> y(static_cast<size_t>(s.t * s.n));
      auto objective = [&] {
        LinearForward<double>(CViewOf(x, {s.t, s.k}), CViewOf(w, {s.n, s.k}), ViewOf(y, {s.t, s.n}),
                              ctx);
        return testing::WeightedSum(y.data(), r.data(), Size(y));
      };
      std::vector<double> dx(x.size(), 0.0), dw(w.size(), 0.0);
      LinearBackward<double>(CViewOf(r, {s.t, s.n}), CViewOf(x, {s.t, s.k}), CViewOf(w, {s.n, s.k}),
                             ViewOf(dx, {s.t, s.k}), ViewOf(dw, {s.n, s.k}), ctx);
      EXPECT_TRUE(GradCheck(
          objective, {{"x", x.data(), dx.data(), Size(x)}, {"w", w.data(), dw.data(), Size(w)}}));
    }
  }
}

TEST(Linear, ShapeErrorsThrow) {
  Context ctx({.threads = 1});
  std::vector<float> x(12), w(15), y(20), dx(12), dw(15);
  // x [4,3], w [5,3], y [4,5]
  EXPECT_NO_THROW(
      LinearForward<float>(CViewOf(x, {4, 3}), CViewOf(w, {5, 3}), ViewOf(y, {4, 5}), ctx));
  EXPECT_THROW(LinearForward<float>(CViewOf(x, {3, 4}), CViewOf(w, {5, 3}), ViewOf(y, {4, 5}), ctx),
               Error);
  EXPECT_THROW(LinearForward<float>(CViewOf(x, {4, 3}), CViewOf(w, {3, 5}), ViewOf(y, {4, 5}), ctx),
               Error);
  EXPECT_THROW(LinearForward<float>(CViewOf(x, {4, 3}), CViewOf(w, {5, 3}), ViewOf(y, {5, 4}), ctx),
               Error);
  EXPECT_THROW(LinearBackward<float>(CViewOf(y, {5, 4}), CViewOf(x, {4, 3}), CViewOf(w, {5, 3}),
                                     ViewOf(dx, {4, 3}), ViewOf(dw, {5, 3}), ctx),
               Error);
  EXPECT_THROW(LinearBackward<float>(CViewOf(y, {4, 5}), CViewOf(x, {4, 3}), CViewOf(w, {5, 3}),
                                     ViewOf(dx, {3, 4}), ViewOf(dw, {5, 3}), ctx),
               Error);
  EXPECT_THROW(LinearBackward<float>(CViewOf(y, {4, 5}), CViewOf(x, {4, 3}), CViewOf(w, {5, 3}),
                                     ViewOf(dx, {4, 3}), ViewOf(dw, {3, 5}), ctx),
               Error);
  try {
    LinearForward<float>(CViewOf(x, {4, 3}), CViewOf(w, {3, 5}), ViewOf(y, {4, 5}), ctx);
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[linear] x [4,3] * w [3,5]^T does not fit y [4,5]");
  }
}

}  // namespace
}  // namespace moe::kernels
