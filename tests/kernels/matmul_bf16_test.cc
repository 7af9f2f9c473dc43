// The bf16 GEMM (AVX512-BF16) against a double reference of the bf16-rounded inputs (tight: only
// the f32 accumulation rounds) and of the f32 inputs (bf16 tolerance), for every transpose, sizes
// off the block sizes, alpha/beta and padded leading dims; the kBf16 dispatch of Gemm, MatMulNT and
// the Linear ops; the Context precision switch. Skipped on CPUs without AVX512-BF16.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "moe/core/cpu.h"
#include "moe/core/dtype.h"
#include "moe/core/error.h"
#include "moe/kernels/isa/row_ops.h"
#include "moe/kernels/matmul.h"
#include "moe/testing/compare.h"
#include "moe/testing/reference.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using testing::ExpectClose;
using testing::ToDouble;
using testing::Tolerance;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr double kU = 0x1.0p-24;  // unit roundoff of f32

#define MOE_SKIP_WITHOUT_BF16()                                                       \
  do {                                                                                \
    if (!HasBf16Matmul()) GTEST_SKIP() << "this CPU has no AVX512-BF16 (or MOE_ISA caps it)"; \
  } while (0)

double RoundBf16(float x) { return static_cast<double>(FromBf16(ToBf16(x))); }

// Random normal values, with every 5th one a tie halfway between two bf16 numbers (bf16 spacing at 1
// is 2^-7: 1 + 2^-8 rounds down to 1, 1 + 3 * 2^-8 up to 1 + 2^-6; scaled and signed) so that
// round-to-nearest-even is exercised both ways.
std::vector<float> Inputs(Rng& rng, int64_t n) {
  std::vector<float> v = RandomNormal<float>(rng, n);
  for (int64_t i = 0; i < n; i += 5) {
    const float tie = (i / 5) % 2 == 0 ? 1.0f + 0x1.0p-8f : 1.0f + 3 * 0x1.0p-8f;
    v[static_cast<size_t>(i)] = std::ldexp(tie, static_cast<int>(i % 7) - 3) * (i % 3 == 0 ? -1.0f : 1.0f);
  }
  return v;
}

struct Case {
  bool ta, tb;
  int64_t m, n, k;
  float alpha, beta;
};

// One product, checked element by element: against the bf16-rounded inputs with the f32
// accumulation bound (k + 8) u (|alpha| sum|a b| + |beta c|) (k additions, plus the alpha/beta
// roundings of each k block), and against the f32 inputs with the
// bf16 rounding bound on top (each product is off by at most (1 + 2^-8)^2 - 1 relative).
void CheckCase(const Case& c, Rng& rng) {
  SCOPED_TRACE(::testing::Message() << "ta=" << c.ta << " tb=" << c.tb << " m=" << c.m << " n=" << c.n
                                    << " k=" << c.k << " alpha=" << c.alpha << " beta=" << c.beta);
  const int64_t a_rows = c.ta ? c.k : c.m, a_cols = c.ta ? c.m : c.k;
  const int64_t b_rows = c.tb ? c.n : c.k, b_cols = c.tb ? c.k : c.n;
  const int64_t lda = a_cols + 3, ldb = b_cols + 5, ldc = c.n + 2;
  const std::vector<float> a = Inputs(rng, a_rows * lda), b = Inputs(rng, b_rows * ldb);
  std::vector<float> cm = RandomNormal<float>(rng, c.m * ldc);
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < ldc; ++j)
      if (j >= c.n)
        cm[static_cast<size_t>(i * ldc + j)] = 12345.0f;  // padding: must stay
      else if (c.beta == 0.0f)
        cm[static_cast<size_t>(i * ldc + j)] = kNaN;  // beta == 0 ignores C
  const std::vector<float> c0 = cm;
  GemmBf16(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta, cm.data(), ldc);

  auto at = [&](int64_t i, int64_t p) { return a[static_cast<size_t>(c.ta ? p * lda + i : i * lda + p)]; };
  auto bt = [&](int64_t p, int64_t j) { return b[static_cast<size_t>(c.tb ? j * ldb + p : p * ldb + j)]; };
  int bad = 0;
  std::vector<double> want_f32(static_cast<size_t>(c.m * c.n)), got(want_f32.size());
  double worst_tight = 0;
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      const float v = cm[static_cast<size_t>(i * ldc + j)];
      if (j >= c.n) {
        if (v != 12345.0f && bad++ < 5) ADD_FAILURE() << "padding C[" << i << "," << j << "] changed to " << v;
        continue;
      }
      double s16 = 0, s32 = 0, abs16 = 0;
      for (int64_t p = 0; p < c.k; ++p) {
        const double x16 = RoundBf16(at(i, p)) * RoundBf16(bt(p, j));
        s16 += x16;
        abs16 += std::fabs(x16);
        s32 += static_cast<double>(at(i, p)) * static_cast<double>(bt(p, j));
      }
      const double cprev = c.beta == 0.0f ? 0.0 : static_cast<double>(c.beta) * c0[static_cast<size_t>(i * ldc + j)];
      const double want16 = c.alpha * s16 + cprev;
      const double bound16 = static_cast<double>(c.k + 8) * kU * (std::fabs(c.alpha) * abs16 + std::fabs(cprev)) + 1e-37;
      const double err = std::fabs(static_cast<double>(v) - want16);
      worst_tight = std::max(worst_tight, err / bound16);
      if (!(err <= bound16) && bad++ < 5)
        ADD_FAILURE() << "C[" << i << "," << j << "] = " << v << ", bf16-input reference " << want16
                      << ", |error| " << err << " > f32 accumulation bound " << bound16;
      // The f32 inputs: bf16 keeps 8 significant bits (unit roundoff 2^-8), so rounding both
      // factors moves each product by at most 2^-7 + 2^-16 relative.
      const double want32 = c.alpha * s32 + cprev;
      const double bound32 = bound16 + 0x1.02p-7 * std::fabs(c.alpha) * abs16 * 1.01;
      if (!(std::fabs(static_cast<double>(v) - want32) <= bound32) && bad++ < 5)
        ADD_FAILURE() << "C[" << i << "," << j << "] = " << v << ", f32-input reference " << want32
                      << " beyond the bf16 bound " << bound32;
      want_f32[static_cast<size_t>(i * c.n + j)] = want32;
      got[static_cast<size_t>(i * c.n + j)] = v;
    }
  }
  // Against the f32 inputs the normalised MSE is the bf16 one.
  EXPECT_TRUE(ExpectClose(got.data(), want_f32.data(), Size(got), Tolerance{1e30, 0, 1e-4}, "bf16 vs f32"));
  EXPECT_LE(worst_tight, 1.0);
}

TEST(GemmBf16, MatchesRoundedInputReferenceForAllTransposesAndOddSizes) {
  MOE_SKIP_WITHOUT_BF16();
  Rng rng(11);
  // Block sizes are 8 rows x 32 columns, k blocks of 512, B blocks of 1024 columns: sizes below,
  // at and past them, odd k (a half-empty last pair).
  const int64_t shapes[][3] = {{1, 1, 1},   {5, 7, 11},   {8, 32, 2},    {9, 33, 3},   {16, 16, 16},
                               {37, 29, 65}, {23, 47, 513}, {13, 1030, 9}, {100, 70, 1025}};
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (const auto& s : shapes)
        for (const auto& [alpha, beta] : {std::pair{1.0f, 0.0f}, {0.5f, 1.0f}, {-2.0f, -0.5f}})
          CheckCase({ta, tb, s[0], s[1], s[2], alpha, beta}, rng);
}

// Products of small integers are exact in bf16 and in the f32 accumulation: bit-exact results.
TEST(GemmBf16, SmallIntegersAreExact) {
  MOE_SKIP_WITHOUT_BF16();
  Rng rng(12);
  const int64_t m = 19, n = 45, k = 301;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      std::vector<float> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n));
      for (auto& x : a) x = static_cast<float>(static_cast<int>(rng.Below(17)) - 8);
      for (auto& x : b) x = static_cast<float>(static_cast<int>(rng.Below(9)) - 4);
      std::vector<float> cm(static_cast<size_t>(m * n), 1.0f);
      GemmBf16(ta, tb, m, n, k, 1.0f, a.data(), ta ? m : k, b.data(), tb ? k : n, 2.0f, cm.data(), n);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 2.0;
          for (int64_t p = 0; p < k; ++p)
            s += static_cast<double>(a[static_cast<size_t>(ta ? p * m + i : i * k + p)]) *
                 b[static_cast<size_t>(tb ? j * k + p : p * n + j)];
          ASSERT_EQ(static_cast<double>(cm[static_cast<size_t>(i * n + j)]), s) << "ta=" << ta << " tb=" << tb;
        }
    }
}

TEST(GemmBf16, NaNAndInfinityPropagateToTheirRowsOnly) {
  MOE_SKIP_WITHOUT_BF16();
  Rng rng(13);
  const int64_t m = 10, n = 40, k = 33;  // n is not a multiple of 32: padded columns meet the Inf
  std::vector<float> a = RandomNormal<float>(rng, m * k), b = RandomNormal<float>(rng, k * n);
  a[static_cast<size_t>(2 * k + 5)] = kNaN;
  a[static_cast<size_t>(7 * k + 32)] = std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) b[static_cast<size_t>(32 * n + j)] = 1.0f;  // Inf * 1 = Inf
  std::vector<float> cm(static_cast<size_t>(m * n), 0.0f);
  GemmBf16(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, cm.data(), n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const float v = cm[static_cast<size_t>(i * n + j)];
      if (i == 2) EXPECT_TRUE(std::isnan(v)) << j;
      else if (i == 7) EXPECT_TRUE(std::isinf(v) && v > 0) << j;
      else EXPECT_TRUE(std::isfinite(v)) << i << "," << j;
    }
}

TEST(GemmBf16, EmptyProducts) {
  MOE_SKIP_WITHOUT_BF16();
  std::vector<float> c = {7.0f, 8.0f};
  const float one = 1.0f;
  GemmBf16(false, false, 0, 1, 1, 1.0f, &one, 1, &one, 1, 0.0f, c.data(), 1);
  GemmBf16(false, false, 1, 0, 1, 1.0f, &one, 1, &one, 1, 0.0f, c.data(), 1);
  EXPECT_EQ(c[0], 7.0f);
  GemmBf16(false, false, 1, 2, 0, 1.0f, &one, 0, &one, 2, 0.5f, c.data(), 2);  // K = 0: C = beta C
  EXPECT_EQ(c[0], 3.5f);
  EXPECT_EQ(c[1], 4.0f);
}

// Gemm<float> with kBf16: the bf16 kernel for products big enough (bit-identical to GemmBf16),
// sgemm (bit-identical to kF32) for small ones; MatMulNT keeps few-row products in f32.
TEST(GemmBf16, PrecisionDispatchOfGemmAndMatMulNT) {
  MOE_SKIP_WITHOUT_BF16();
  Rng rng(14);
  for (const auto& [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{64, 48, 40}, {8, 64, 64}, {64, 8, 64}, {20, 20, 20}}) {
    SCOPED_TRACE(::testing::Message() << m << "x" << n << "x" << k);
    const std::vector<float> a = RandomNormal<float>(rng, m * k), b = RandomNormal<float>(rng, n * k);
    std::vector<float> c16(static_cast<size_t>(m * n)), c32 = c16, cmix = c16, cnt = c16;
    GemmBf16(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c16.data(), n);
    Gemm<float>(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c32.data(), n);
    Gemm<float>(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, cmix.data(), n, MatmulPrecision::kBf16);
    EXPECT_EQ(cmix, UsesBf16Kernel(m, n, k) ? c16 : c32);
    EXPECT_NE(c16, c32);  // the bf16 path really rounds
    MatMulNT<float>(a.data(), k, m, b.data(), k, n, k, cnt.data(), n, false, MatmulPrecision::kBf16);
    if (m <= kSmallM) {
      EXPECT_TRUE(ExpectClose(cnt.data(), c32.data(), Size(cnt), testing::MatMulTolerance(k, MaxAbs(a), MaxAbs(b))));
    } else {
      EXPECT_EQ(cnt, UsesBf16Kernel(m, n, k) ? c16 : c32);
    }
  }
  EXPECT_TRUE(UsesBf16Kernel(16, 16, 128));
  EXPECT_FALSE(UsesBf16Kernel(15, 64, 64));
  EXPECT_FALSE(UsesBf16Kernel(64, 8, 64));
  EXPECT_FALSE(UsesBf16Kernel(16, 16, 16));
}

// LinearForward / LinearBackward take the precision from the Context; the double instantiation
// ignores it.
TEST(GemmBf16, LinearOpsFollowTheContextPrecision) {
  MOE_SKIP_WITHOUT_BF16();
  Rng rng(15);
  const int64_t t = 96, n = 80, k = 72;
  const std::vector<float> x = RandomNormal<float>(rng, t * k), w = RandomNormal<float>(rng, n * k, 0.1);
  const std::vector<float> dy = RandomNormal<float>(rng, t * n);
  for (int threads : {1, 2}) {
    Context c32({.threads = threads});
    Context c16({.threads = threads, .matmul_precision = MatmulPrecision::kBf16});
    EXPECT_EQ(c16.matmul_precision(), MatmulPrecision::kBf16);
    std::vector<float> y32(static_cast<size_t>(t * n)), y16 = y32;
    LinearForward<float>(CViewOf(x, {t, k}), CViewOf(w, {n, k}), ViewOf(y32, {t, n}), c32);
    LinearForward<float>(CViewOf(x, {t, k}), CViewOf(w, {n, k}), ViewOf(y16, {t, n}), c16);
    EXPECT_NE(y16, y32);
    const std::vector<double> y32d = ToDouble(y32.data(), Size(y32));
    EXPECT_TRUE(ExpectClose(y16.data(), y32d.data(), Size(y16), Tolerance{0.05, 0.02, 1e-4}, "forward"));
    std::vector<float> dx32(static_cast<size_t>(t * k), 0.0f), dw32(static_cast<size_t>(n * k), 0.0f);
    std::vector<float> dx16 = dx32, dw16 = dw32;
    LinearBackward<float>(CViewOf(dy, {t, n}), CViewOf(x, {t, k}), CViewOf(w, {n, k}), ViewOf(dx32, {t, k}),
                          ViewOf(dw32, {n, k}), c32);
    LinearBackward<float>(CViewOf(dy, {t, n}), CViewOf(x, {t, k}), CViewOf(w, {n, k}), ViewOf(dx16, {t, k}),
                          ViewOf(dw16, {n, k}), c16);
    EXPECT_NE(dw16, dw32);
    const std::vector<double> dx32d = ToDouble(dx32.data(), Size(dx32)), dw32d = ToDouble(dw32.data(), Size(dw32));
    EXPECT_TRUE(ExpectClose(dx16.data(), dx32d.data(), Size(dx16), Tolerance{0.05, 0.02, 1e-4}, "dx"));
    EXPECT_TRUE(ExpectClose(dw16.data(), dw32d.data(), Size(dw16), Tolerance{0.5, 0.02, 1e-4}, "dw"));
  }
}

TEST(MatmulPrecision, ContextSwitchAndScope) {
  Context ctx({.threads = 1});
  EXPECT_EQ(ctx.matmul_precision(), MatmulPrecision::kF32);
  if (!HasBf16Matmul()) {
    EXPECT_THROW(ctx.set_matmul_precision(MatmulPrecision::kBf16), Error);
    EXPECT_THROW(Context({.threads = 1, .matmul_precision = MatmulPrecision::kBf16}), Error);
    try {
      CheckBf16Matmul("x");
      ADD_FAILURE() << "no Error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::AnyOf(::testing::HasSubstr("AVX512-BF16"), ::testing::HasSubstr("MOE_ISA")));
    }
    EXPECT_EQ(ctx.matmul_precision(), MatmulPrecision::kF32);
    return;
  }
  ctx.set_matmul_precision(MatmulPrecision::kBf16);
  {
    ScopedMatmulPrecision f32(ctx, MatmulPrecision::kF32);
    EXPECT_EQ(ctx.matmul_precision(), MatmulPrecision::kF32);
  }
  EXPECT_EQ(ctx.matmul_precision(), MatmulPrecision::kBf16);
  ctx.set_matmul_precision(MatmulPrecision::kF32);
  EXPECT_EQ(ctx.matmul_precision(), MatmulPrecision::kF32);
}

}  // namespace
}  // namespace moe::kernels
