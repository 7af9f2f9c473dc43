// Quantised formats and products: Dequantize against hand-built blocks (element order of every
// format), Quantize -> Dequantize error bounds, QuantMatMul of every type with every ISA table
// against a double reference and bit for bit against the scalar table, and size errors.
#include "moe/kernels/quant.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/dtype.h"
#include "moe/core/error.h"
#include "moe/kernels/isa/quant_ops.h"
#include "moe/testing/compare.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using ::testing::HasSubstr;
using testing::ExpectClose;
using testing::Tolerance;

std::string Name(QuantType t) { return std::string(QuantTypeName(t)); }

void PutF16(uint8_t* p, float v) {
  const uint16_t h = ToF16(v);
  ASSERT_EQ(FromF16(h), v) << "test value not exact in f16";
  std::memcpy(p, &h, 2);
}

// 6-bit scales and mins packed as ggml's get_scale_min_k4 reads them, written out longhand.
void PackK4(const int sc[8], const int mn[8], uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
}

double Nmse(const std::vector<float>& a, const std::vector<float>& e) {
  double se = 0, sr = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    se += (static_cast<double>(a[i]) - e[i]) * (static_cast<double>(a[i]) - e[i]);
    sr += static_cast<double>(e[i]) * e[i];
  }
  return se / sr;
}

std::vector<uint8_t> QuantizeMatrix(QuantType t, const std::vector<float>& x, int64_t rows,
                                    int64_t k) {
  std::vector<uint8_t> q(static_cast<size_t>(QuantMatrixBytes(t, rows, k)));
  const int64_t rb = QuantRowBytes(t, k);
  for (int64_t r = 0; r < rows; ++r) Quantize(t, x.data() + r * k, q.data() + r * rb, k);
  return q;
}

// ---- type table and sizes -------------------------------------------------------------------------

TEST(QuantInfo, MatchesGgml) {
  EXPECT_EQ(QuantTypeName(QuantType::kQ8_0), "Q8_0");
  EXPECT_EQ(QuantBlockBytes(QuantType::kQ8_0), 34);
  EXPECT_EQ(QuantBlockBytes(QuantType::kQ4_0), 18);
  EXPECT_EQ(QuantBlockBytes(QuantType::kQ4_K), 144);
  EXPECT_EQ(QuantBlockBytes(QuantType::kQ5_K), 176);
  EXPECT_EQ(QuantBlockBytes(QuantType::kQ6_K), 210);
  EXPECT_EQ(QuantBlockSize(QuantType::kQ4_0), 32);
  EXPECT_EQ(QuantBlockSize(QuantType::kQ6_K), 256);
  for (QuantType t : kAllQuantTypes) EXPECT_EQ(QuantTypeFromGgml(QuantInfo(t).ggml_type), t);
  EXPECT_EQ(QuantInfo(QuantType::kQ4_K).ggml_type, 12);
  EXPECT_EQ(QuantRowBytes(QuantType::kQ4_K, 4096), 16 * 144);
  EXPECT_EQ(QuantRowBytes(QuantType::kQ8_0, 0), 0);
  EXPECT_EQ(QuantMatrixBytes(QuantType::kQ4_0, 3, 64), 3 * 2 * 18);
}

TEST(QuantInfo, BadSizesNameTheValue) {
  EXPECT_THAT([] { QuantRowBytes(QuantType::kQ4_K, 4000); },
              ::testing::ThrowsMessage<Error>(HasSubstr("n=4000")));
  EXPECT_THAT([] { QuantRowBytes(QuantType::kQ8_0, 33); },
              ::testing::ThrowsMessage<Error>(HasSubstr("Q8_0 rows hold multiples of 32")));
  EXPECT_THAT([] { QuantRowBytes(QuantType::kQ8_0, -32); },
              ::testing::ThrowsMessage<Error>(HasSubstr("n=-32")));
  EXPECT_THAT([] { QuantMatrixBytes(QuantType::kQ6_K, -1, 256); },
              ::testing::ThrowsMessage<Error>(HasSubstr("rows=-1")));
  EXPECT_THAT([] { QuantTypeFromGgml(1); }, ::testing::ThrowsMessage<Error>(HasSubstr("ggml type 1")));
  std::vector<float> f(300);
  std::vector<uint8_t> b(1000);
  EXPECT_THAT([&] { Dequantize(QuantType::kQ5_K, b.data(), f.data(), 300); },
              ::testing::ThrowsMessage<Error>(HasSubstr("n=300")));
  EXPECT_THAT([&] { Quantize(QuantType::kQ4_0, f.data(), b.data(), 48); },
              ::testing::ThrowsMessage<Error>(HasSubstr("n=48")));
}

// ---- Dequantize on hand-built blocks ------------------------------------------------------------

TEST(Dequantize, Q8_0Block) {
  uint8_t blk[34];
  PutF16(blk, 0.5f);
  for (int i = 0; i < 32; ++i) blk[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i * 8 - 128));
  std::vector<float> y(32);
  Dequantize(QuantType::kQ8_0, blk, y.data(), 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * static_cast<float>(i * 8 - 128)) << i;
}

TEST(Dequantize, Q4_0BlockLowNibblesFirst) {
  uint8_t blk[2 * 18];
  for (int b = 0; b < 2; ++b) {
    PutF16(blk + 18 * b, b == 0 ? 2.0f : -0.25f);
    // byte i: low nibble i, high nibble 15 - i
    for (int i = 0; i < 16; ++i) blk[18 * b + 2 + i] = static_cast<uint8_t>(i | ((15 - i) << 4));
  }
  std::vector<float> y(64);
  Dequantize(QuantType::kQ4_0, blk, y.data(), 64);
  for (int b = 0; b < 2; ++b) {
    const float d = b == 0 ? 2.0f : -0.25f;
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(y[32 * b + i], static_cast<float>(i - 8) * d) << i;            // values 0..15
      EXPECT_EQ(y[32 * b + 16 + i], static_cast<float>(7 - i) * d) << 16 + i;  // values 16..31
    }
  }
  EXPECT_EQ(y[0], -16.0f);
  EXPECT_EQ(y[16], 14.0f);
  EXPECT_EQ(y[31], -16.0f);
}

// A Q4_K block with distinct scales and mins for all 8 sub-blocks (the 4..7 ones use the packed
// high bits) and nibbles that say where they sit.
void BuildQ4K(uint8_t* blk, int sc[8], int mn[8]) {
  PutF16(blk, 0.5f);
  PutF16(blk + 2, 0.25f);
  const int scv[8] = {1, 2, 3, 17, 33, 47, 62, 63}, mnv[8] = {0, 5, 16, 31, 32, 48, 60, 63};
  for (int s = 0; s < 8; ++s) sc[s] = scv[s], mn[s] = mnv[s];
  PackK4(sc, mn, blk + 4);
  // qs[32c + l]: low nibble l % 16, high nibble (l + 5c + 3) % 16.
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      blk[16 + 32 * c + l] = static_cast<uint8_t>((l % 16) | (((l + 5 * c + 3) % 16) << 4));
}

TEST(Dequantize, Q4_KElementOrderScalesAndMins) {
  uint8_t blk[144];
  int sc[8], mn[8];
  BuildQ4K(blk, sc, mn);
  std::vector<float> y(256);
  Dequantize(QuantType::kQ4_K, blk, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, l = e % 32;
    const bool high = e % 64 >= 32;
    const int s = 2 * c + (high ? 1 : 0);
    const int q = high ? (l + 5 * c + 3) % 16 : l % 16;
    EXPECT_EQ(y[e], 0.5f * static_cast<float>(sc[s]) * static_cast<float>(q) -
                        0.25f * static_cast<float>(mn[s]))
        << "value " << e;
  }
  // A few by hand: value 0 = 0.5*1*0 - 0; value 33 = sub-block 1 (sc 2, m 5), high nibble of qs[1]
  // = 4 -> 4 - 1.25; value 255 = sub-block 7 (sc 63, m 63), high nibble of qs[127] = (31+18)%16 = 1.
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[33], 0.5f * 2 * 4 - 0.25f * 5);
  EXPECT_EQ(y[255], 0.5f * 63 * 1 - 0.25f * 63);
  EXPECT_EQ(y[128 + 5], 0.5f * 33 * 5 - 0.25f * 32);  // sub-block 4, low nibble of qs[69]
}

TEST(Dequantize, Q5_KHighBits) {
  uint8_t blk[176];
  int sc[8], mn[8];
  uint8_t q4[144];
  BuildQ4K(q4, sc, mn);
  std::memcpy(blk, q4, 16);                 // d, dmin, scales
  std::memcpy(blk + 48, q4 + 16, 128);      // qs
  for (int l = 0; l < 32; ++l) blk[16 + l] = static_cast<uint8_t>(l * 37 + 11);  // qh
  std::vector<float> y(256);
  Dequantize(QuantType::kQ5_K, blk, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, l = e % 32;
    const bool high = e % 64 >= 32;
    const int s = 2 * c + (high ? 1 : 0);
    const int bit = ((l * 37 + 11) & 0xFF) >> (2 * c + (high ? 1 : 0)) & 1;
    const int q = (high ? (l + 5 * c + 3) % 16 : l % 16) + 16 * bit;
    EXPECT_EQ(y[e], 0.5f * static_cast<float>(sc[s]) * static_cast<float>(q) -
                        0.25f * static_cast<float>(mn[s]))
        << "value " << e;
  }
  // qh[0] = 11 = 0b1011: bits 0, 1, 3 -> values 0, 32, 96 get +16, value 64 does not.
  EXPECT_EQ(y[0], 0.5f * 1 * 16);
  EXPECT_EQ(y[64], 0.5f * 3 * 0 - 0.25f * 16);
  EXPECT_EQ(y[96], 0.5f * 17 * (8 + 16) - 0.25f * 31);
}

TEST(Dequantize, Q6_KElementOrderAndSignedScales) {
  uint8_t blk[210];
  // q (0..63) of value e: (e * 7 + 3) % 64, scales s - 8 (signed), d = 0.125.
  auto qv = [](int e) { return (e * 7 + 3) % 64; };
  std::memset(blk, 0, sizeof(blk));
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int e = 128 * h + l;
      const int q1 = qv(e), q2 = qv(e + 32), q3 = qv(e + 64), q4 = qv(e + 96);
      blk[64 * h + l] = static_cast<uint8_t>((q1 & 15) | ((q3 & 15) << 4));
      blk[64 * h + 32 + l] = static_cast<uint8_t>((q2 & 15) | ((q4 & 15) << 4));
      blk[128 + 32 * h + l] =
          static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
  }
  for (int s = 0; s < 16; ++s) blk[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(s - 8));
  PutF16(blk + 208, 0.125f);
  std::vector<float> y(256);
  Dequantize(QuantType::kQ6_K, blk, y.data(), 256);
  for (int e = 0; e < 256; ++e)
    EXPECT_EQ(y[e], 0.125f * static_cast<float>(e / 16 - 8) * static_cast<float>(qv(e) - 32))
        << "value " << e;
  EXPECT_EQ(y[0], 0.125f * -8 * (3 - 32));
  EXPECT_EQ(y[255], 0.125f * 7 * ((255 * 7 + 3) % 64 - 32));
}

// ---- Quantize ------------------------------------------------------------------------------------

// NMSE of Quantize -> Dequantize on N(0, 1) data; bounds are about 1.3x the measured values
// (docs/QUANT.md).
double QuantNmseBound(QuantType t) {
  switch (t) {
    case QuantType::kQ8_0: return 4.0e-5;
    case QuantType::kQ4_0: return 1.0e-2;
    case QuantType::kQ4_K: return 6.5e-3;
    case QuantType::kQ5_K: return 1.6e-3;
    case QuantType::kQ6_K: return 3.7e-4;
  }
  return 0;
}

class QuantTypeTest : public ::testing::TestWithParam<QuantType> {};

TEST_P(QuantTypeTest, QuantizeDequantizeNmse) {
  const QuantType t = GetParam();
  Rng rng(7);
  const int64_t n = 256 * 64;
  const std::vector<float> x = RandomNormal<float>(rng, n);
  std::vector<uint8_t> q(static_cast<size_t>(QuantRowBytes(t, n)));
  Quantize(t, x.data(), q.data(), n);
  std::vector<float> back(static_cast<size_t>(n));
  Dequantize(t, q.data(), back.data(), n);
  const double nmse = Nmse(back, x);
  RecordProperty("nmse", std::to_string(nmse));
  EXPECT_LT(nmse, QuantNmseBound(t)) << Name(t);
  EXPECT_GT(nmse, QuantNmseBound(t) / 4) << Name(t) << ": the bound is loose; tighten it";
}

TEST_P(QuantTypeTest, QuantizeIsExactOnZerosAndConstants) {
  const QuantType t = GetParam();
  const int64_t n = 512;
  std::vector<float> x(n, 0.0f);
  std::vector<uint8_t> q(static_cast<size_t>(QuantRowBytes(t, n)));
  std::vector<float> back(n, 1.0f);
  Quantize(t, x.data(), q.data(), n);
  Dequantize(t, q.data(), back.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back[i], 0.0f) << Name(t) << " value " << i;
  // A block of one power-of-two value (every scale is then exact in f16), one per sign.
  for (int64_t i = 0; i < n; ++i) x[i] = i < n / 2 ? -0.5f : 2.0f;
  Quantize(t, x.data(), q.data(), n);
  Dequantize(t, q.data(), back.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(back[i], x[i], 1e-2 * std::fabs(x[i])) << Name(t) << " value " << i;
}

TEST_P(QuantTypeTest, QuantizeScalesWithTheData) {
  const QuantType t = GetParam();
  Rng rng(8);
  const int64_t n = 1024;
  for (double scale : {1e-3, 1.0, 100.0}) {
    // Blocks of very different magnitude and sign, including an all-positive one.
    std::vector<float> x = RandomNormal<float>(rng, n, scale);
    for (int64_t i = 0; i < 256; ++i) x[i] = std::fabs(x[i]) + static_cast<float>(scale);
    std::vector<uint8_t> q(static_cast<size_t>(QuantRowBytes(t, n)));
    std::vector<float> back(n);
    Quantize(t, x.data(), q.data(), n);
    Dequantize(t, q.data(), back.data(), n);
    EXPECT_LT(Nmse(back, x), 3 * QuantNmseBound(t)) << Name(t) << " scale " << scale;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, QuantTypeTest, ::testing::ValuesIn(kAllQuantTypes),
                         [](const ::testing::TestParamInfo<QuantType>& info) {
                           return Name(info.param);
                         });

// ---- QuantMatMul -----------------------------------------------------------------------------

// Reference: y = x . dequantised(W)^T in double.
std::vector<double> Reference(QuantType t, const std::vector<uint8_t>& w, int64_t n, int64_t k,
                              const std::vector<float>& x, int64_t m) {
  std::vector<float> wf(static_cast<size_t>(n * k));
  const int64_t rb = QuantRowBytes(t, k);
  for (int64_t j = 0; j < n; ++j) Dequantize(t, w.data() + j * rb, wf.data() + j * k, k);
  std::vector<double> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += static_cast<double>(x[i * k + p]) * wf[j * k + p];
      y[i * n + j] = s;
    }
  return y;
}

// Sizes: k in whole blocks covering every path of the SIMD kernels: 32-value blocks 1, 15, 17, 50
// (groups of 16, a partial group, and the two-groups-at-once loop of m = 1 with an odd count);
// super-blocks 1, 3, 5, 9 (groups of 4, Q6_K's groups of 8, and their tails). n odd; m = 1..9
// (decode), 20 (tiled, with a partial group of 8 rows).
std::vector<int64_t> Ks(QuantType t) {
  if (QuantBlockSize(t) == 32) return {32, 480, 544, 1600};
  return {256, 768, 1280, 2304};
}

// x rows are N(0,1); activation quantisation (8 bits per 32 or 256 values, amax ~ 2.5-3.3 sigma)
// adds NMSE ~ step^2/12 / sigma^2 ~ 3e-5..6e-5 on top of exact weights.
constexpr double kMatMulNmse = 2e-4;

// y of every table and thread count must equal the scalar table's y bit for bit.
::testing::AssertionResult SameAsScalar(QuantType t, const std::vector<uint8_t>& w, int64_t n,
                                        int64_t k, const std::vector<float>& x, int64_t m,
                                        const std::vector<float>& y_scalar) {
  static Context ctx1(ContextOptions{.threads = 1});
  static Context ctx3(ContextOptions{.threads = 3});
  for (const QuantOps* ops : AvailableQuantOps()) {
    for (Context* ctx : {&ctx1, &ctx3}) {
      std::vector<float> y(static_cast<size_t>(m * n), std::nanf(""));
      QuantMatMulWith(*ops, t, w.data(), n, k, x.data(), m, y.data(), *ctx);
      for (size_t i = 0; i < y.size(); ++i)
        if (std::memcmp(&y[i], &y_scalar[i], 4) != 0)
          return ::testing::AssertionFailure()
                 << ops->name << " threads=" << ctx->threads() << " differs from scalar at " << i
                 << ": " << y[i] << " vs " << y_scalar[i];
    }
  }
  return ::testing::AssertionSuccess();
}

class QuantMatMulTest : public ::testing::TestWithParam<QuantType> {};

TEST_P(QuantMatMulTest, EveryIsaMatchesReferenceAndScalarBitForBit) {
  const QuantType t = GetParam();
  Rng rng(11 + static_cast<int>(t));
  Context ctx1(ContextOptions{.threads = 1});
  for (int64_t k : Ks(t)) {
    for (int64_t n : {1, 7, 33}) {
      const std::vector<float> wf = RandomNormal<float>(rng, n * k);
      const std::vector<uint8_t> w = QuantizeMatrix(t, wf, n, k);
      for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 20}) {
        if (n == 33 && m != 1 && m != 8 && m != 9 && m != 20) continue;  // keep the test fast
        SCOPED_TRACE(::testing::Message() << Name(t) << " n=" << n << " k=" << k << " m=" << m);
        const std::vector<float> x = RandomNormal<float>(rng, m * k);
        const std::vector<double> want = Reference(t, w, n, k, x, m);
        std::vector<float> y_scalar(static_cast<size_t>(m * n), -1.0f);
        QuantMatMulWith(ScalarQuantOps(), t, w.data(), n, k, x.data(), m, y_scalar.data(), ctx1);
        // Per element: ~10 standard deviations of the activation rounding error
        // (sqrt(k) * |w| * step / sqrt(12), step = max|x| / 127); NMSE where there are enough
        // values for it to mean something.
        Tolerance tol{std::sqrt(static_cast<double>(k)) * MaxAbs(x) * MaxAbs(wf) / 127.0, 0,
                      m * n >= 16 ? kMatMulNmse : HUGE_VAL};
        ASSERT_TRUE(ExpectClose(y_scalar.data(), want.data(), m * n, tol, "scalar vs reference"));
        ASSERT_TRUE(SameAsScalar(t, w, n, k, x, m, y_scalar));
      }
    }
  }
}

// Rows of x that are all zero, tiny (below kMinActAmax: quantised to 0), subnormal, huge, or one
// spike; every table must still agree bit for bit and with the reference where x is not tiny.
TEST_P(QuantMatMulTest, ExtremeActivations) {
  const QuantType t = GetParam();
  Rng rng(21);
  const int64_t k = 1024, n = 9, m = 6;
  const std::vector<float> wf = RandomNormal<float>(rng, n * k);
  const std::vector<uint8_t> w = QuantizeMatrix(t, wf, n, k);
  std::vector<float> x = RandomNormal<float>(rng, m * k);
  for (int64_t p = 0; p < k; ++p) {
    x[0 * k + p] = 0.0f;
    x[1 * k + p] *= 1e-32f;                   // below kMinActAmax
    x[2 * k + p] = p % 3 ? 1e-41f : -2e-41f;  // subnormal
    x[3 * k + p] *= 1e30f;
    x[4 * k + p] = p == 77 ? 5.0f : 0.0f;
  }
  Context ctx(ContextOptions{.threads = 1});
  std::vector<float> y(static_cast<size_t>(m * n));
  QuantMatMulWith(ScalarQuantOps(), t, w.data(), n, k, x.data(), m, y.data(), ctx);
  ASSERT_TRUE(AllFinite(y));
  EXPECT_TRUE(SameAsScalar(t, w, n, k, x, m, y));
  const std::vector<double> want = Reference(t, w, n, k, x, m);
  for (int64_t j = 0; j < n; ++j) {
    EXPECT_EQ(y[j], 0.0f);
    EXPECT_EQ(y[n + j], 0.0f);
    EXPECT_EQ(y[2 * n + j], 0.0f);
    EXPECT_NEAR(y[3 * n + j], want[3 * n + j], 1e-2 * std::sqrt(static_cast<double>(k)) * 1e30 * 4);
    // One value: exact up to the activation scale's rounding (5 -> 127 * (5 / 127)).
    EXPECT_NEAR(y[4 * n + j], want[4 * n + j], 1e-5 * std::fabs(want[4 * n + j]) + 1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, QuantMatMulTest, ::testing::ValuesIn(kAllQuantTypes),
                         [](const ::testing::TestParamInfo<QuantType>& info) {
                           return Name(info.param);
                         });

TEST(QuantMatMul, ActiveTableIsTheBestAvailable) {
  const auto all = AvailableQuantOps();
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.front(), &ScalarQuantOps());
  EXPECT_EQ(&ActiveQuantOps(), all.back());
  EXPECT_EQ(ActiveQuantOps().isa, ActiveIsa());
  if (ActiveIsa() == Isa::kAvx512 && GetCpuFeatures().avx512vnni) {
    EXPECT_EQ(ActiveQuantOps().name, "avx512vnni");
  }
}

// Extreme encodings: weights and activations at the ends of their ranges (Q8_0 -128, Q6_K scale
// -128, Q4_K/Q5_K scales and q at their maxima) must not saturate any 16-bit intermediate.
TEST(QuantMatMul, ExtremeBlocksDoNotSaturate) {
  Context ctx(ContextOptions{.threads = 1});
  Rng rng(12);
  for (QuantType t : kAllQuantTypes) {
    SCOPED_TRACE(Name(t));
    const int64_t k = 1024, n = 5, m = 3;
    const int64_t rb = QuantRowBytes(t, k);
    std::vector<uint8_t> w(static_cast<size_t>(n * rb));
    for (auto& b : w) b = static_cast<uint8_t>(rng.Below(256));
    // Sane f16 scales (random bytes there would often be inf/NaN), everything else random or max.
    for (int64_t j = 0; j < n; ++j) {
      uint8_t* row = w.data() + j * rb;
      for (int64_t b = 0; b < k / QuantBlockSize(t); ++b) {
        uint8_t* blk = row + b * QuantBlockBytes(t);
        switch (t) {
          case QuantType::kQ8_0:
            PutF16(blk, 0.5f);
            if (j == 0) std::memset(blk + 2, 0x80, 32);  // all -128
            break;
          case QuantType::kQ4_0: PutF16(blk, -0.5f); break;
          case QuantType::kQ4_K:
          case QuantType::kQ5_K:
            PutF16(blk, 0.5f);
            PutF16(blk + 2, 0.25f);
            if (j == 0) std::memset(blk + 4, 0xFF, QuantBlockBytes(t) - 4);  // scales 63, q max
            break;
          case QuantType::kQ6_K:
            PutF16(blk + 208, 0.125f);
            if (j == 0) {
              std::memset(blk, 0xFF, 192);
              std::memset(blk + 192, 0x80, 16);  // q = 63, scales -128
            }
            break;
        }
      }
    }
    std::vector<float> x(static_cast<size_t>(m * k));
    for (int64_t p = 0; p < k; ++p) {
      x[p] = 1.0f;                              // all +127
      x[k + p] = -1.0f;                         // all -127
      x[2 * k + p] = (p % 2 ? 1.0f : -1.0f);  // alternating
    }
    const std::vector<double> want = Reference(t, w, n, k, x, m);
    for (const QuantOps* ops : AvailableQuantOps()) {
      std::vector<float> y(static_cast<size_t>(m * n));
      QuantMatMulWith(*ops, t, w.data(), n, k, x.data(), m, y.data(), ctx);
      EXPECT_TRUE(ExpectClose(y.data(), want.data(), m * n, Tolerance{1e-2, 1e-5, 1e-10},
                              std::string(ops->name)));
    }
  }
}

TEST(QuantMatMul, ZeroSizesAndBadSizes) {
  Context ctx(ContextOptions{.threads = 2});
  std::vector<uint8_t> w(4096);
  std::vector<float> x(4096, 1.0f), y(64, 5.0f);
  // k = 0: y = 0; n = 0 or m = 0: nothing written.
  QuantMatMul(QuantType::kQ4_0, w.data(), 2, 0, x.data(), 3, y.data(), ctx);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(y[i], 0.0f);
  EXPECT_EQ(y[6], 5.0f);
  QuantMatMul(QuantType::kQ4_0, w.data(), 0, 32, x.data(), 3, y.data() + 10, ctx);
  QuantMatMul(QuantType::kQ4_0, w.data(), 2, 32, x.data(), 0, y.data() + 10, ctx);
  EXPECT_EQ(y[10], 5.0f);
  EXPECT_THAT([&] { QuantMatMul(QuantType::kQ4_K, w.data(), 2, 100, x.data(), 1, y.data(), ctx); },
              ::testing::ThrowsMessage<Error>(HasSubstr("n=100")));
  EXPECT_THAT([&] { QuantMatMul(QuantType::kQ8_0, w.data(), -2, 32, x.data(), 1, y.data(), ctx); },
              ::testing::ThrowsMessage<Error>(HasSubstr("n=-2")));
  EXPECT_THAT([&] { QuantMatMul(QuantType::kQ8_0, w.data(), 2, 32, x.data(), -1, y.data(), ctx); },
              ::testing::ThrowsMessage<Error>(HasSubstr("m=-1")));
  EXPECT_THAT([&] { QuantMatMul(QuantType::kQ8_0, nullptr, 2, 32, x.data(), 1, y.data(), ctx); },
              ::testing::ThrowsMessage<Error>(HasSubstr("null")));
}

}  // namespace
}  // namespace moe::kernels
