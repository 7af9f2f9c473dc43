// bf16 and f16 conversions: exact decoding, round-to-nearest-even at every halfway point, NaN, inf,
// subnormals and overflow.
#include "moe/core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "moe/core/cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moe {
namespace {

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(DTypeName(DType::kF32), "F32");
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
}

// ---- bf16
// ----------------------------------------------------------------------------------------

TEST(Bf16, ExactValuesAndSpecials) {
  EXPECT_EQ(ToBf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(ToBf16(-2.0f).bits, 0xc000);
  EXPECT_EQ(ToBf16(0.0f).bits, 0x0000);
  EXPECT_EQ(ToBf16(-0.0f).bits, 0x8000);
  EXPECT_EQ(ToBf16(kInf).bits, 0x7f80);
  EXPECT_EQ(ToBf16(-kInf).bits, 0xff80);
  EXPECT_EQ(FromBf16(bf16{0x3f80}), 1.0f);
  EXPECT_EQ(FromBf16(bf16{0xff80}), -kInf);
}

TEST(Bf16, RoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between 1 (0x3f80, even) and 1 + 2^-7 (0x3f81).
  EXPECT_EQ(ToBf16(1.0f + 0x1.0p-8f).bits, 0x3f80);
  // 1 + 3*2^-8 lies halfway between 0x3f81 and 0x3f82 (even).
  EXPECT_EQ(ToBf16(1.0f + 3 * 0x1.0p-8f).bits, 0x3f82);
  // Just above / below a halfway point.
  EXPECT_EQ(ToBf16(1.0f + 0x1.0p-8f + 0x1.0p-20f).bits, 0x3f81);
  EXPECT_EQ(ToBf16(1.0f + 3 * 0x1.0p-8f - 0x1.0p-20f).bits, 0x3f81);
  EXPECT_EQ(ToBf16(-(1.0f + 0x1.0p-8f)).bits, 0xbf80);
  // The largest finite float rounds up to infinity.
  EXPECT_EQ(ToBf16(std::numeric_limits<float>::max()).bits, 0x7f80);
  // The carry from the mantissa moves into the exponent: 2 - 2^-9 rounds up to 2.
  EXPECT_EQ(ToBf16(2.0f - 0x1.0p-9f).bits, 0x4000);
}

TEST(Bf16, EveryHalfwayPointRoundsToEven) {
  // All finite positive and negative bf16 pairs (b, b+1) below the largest finite value.
  for (uint32_t sign : {0x0000u, 0x8000u}) {
    for (uint32_t b = 0; b < 0x7f7f; ++b) {
      const float lo = FromBf16(bf16{static_cast<uint16_t>(sign | b)});
      const float hi = FromBf16(bf16{static_cast<uint16_t>(sign | (b + 1))});
      const float mid = FromBits(Bits(lo) + 0x8000u);  // half a bf16 unit above |lo|: exact
      ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(lo) + hi) / 2) << b;
      const uint32_t even = (b & 1u) ? b + 1 : b;
      ASSERT_EQ(ToBf16(mid).bits, sign | even) << std::hex << b;
      ASSERT_EQ(ToBf16(std::nextafter(mid, 0.0f)).bits, sign | b) << std::hex << b;
      ASSERT_EQ(ToBf16(std::nextafter(mid, sign ? -kInf : kInf)).bits, sign | (b + 1))
          << std::hex << b;
    }
  }
}

TEST(Bf16, RoundTripsEveryNonNanPattern) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const bf16 h{static_cast<uint16_t>(b)};
    const float f = FromBf16(h);
    // Decoding is "the top 16 bits of an f32".
    ASSERT_EQ(Bits(f), b << 16);
    if (std::isnan(f)) continue;
    ASSERT_EQ(ToBf16(f).bits, b) << std::hex << b;
  }
}

TEST(Bf16, NanStaysNan) {
  // Quiet and signalling NaNs, including payloads that live only in the low 16 bits (truncating
  // those would give infinity).
  for (uint32_t u :
       {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f80ffffu, 0x7fffffffu}) {
    const bf16 h = ToBf16(FromBits(u));
    EXPECT_TRUE(std::isnan(FromBf16(h))) << std::hex << u;
    EXPECT_EQ(h.bits & 0x8000u, (u >> 16) & 0x8000u) << "sign kept, " << std::hex << u;
  }
  EXPECT_TRUE(std::isnan(FromBf16(ToBf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Bf16, SubnormalsAreKept) {
  const float tiny = std::numeric_limits<float>::denorm_min() * 65536.0f;  // 2^-133, bits 0x10000
  EXPECT_EQ(ToBf16(tiny).bits, 0x0001);
  EXPECT_EQ(FromBf16(bf16{0x0001}), tiny);
  // Below half of the smallest bf16 subnormal: rounds to zero; exactly half: to even (zero).
  EXPECT_EQ(ToBf16(tiny * 0.5f).bits, 0x0000);
  EXPECT_EQ(ToBf16(tiny * 0.75f).bits, 0x0001);
}

// ---- f16
// -----------------------------------------------------------------------------------------

// Independent decoding from the IEEE binary16 definition, in double.
double DecodeHalf(uint16_t h) {
  const int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  double v;
  if (exp == 31) {
    v = man ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), -24);
  } else {
    v = std::ldexp(1.0 + man / 1024.0, exp - 15);
  }
  return sign ? -v : v;
}

TEST(F16, DecodesEveryPatternExactly) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const double want = DecodeHalf(h);
    const float got = FromF16(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << b;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << std::hex << b;
      ASSERT_EQ(std::signbit(got), (b & 0x8000u) != 0) << std::hex << b;
    }
  }
}

TEST(F16, RoundTripsEveryNonNanPattern) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const float f = FromF16(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      const uint16_t back = ToF16(f);
      ASSERT_EQ(back & 0x7c00u, 0x7c00u) << std::hex << b;
      ASSERT_NE(back & 0x03ffu, 0u) << "NaN became inf, " << std::hex << b;
      continue;
    }
    ASSERT_EQ(ToF16(f), b) << std::hex << b;
  }
}

TEST(F16, KnownValues) {
  EXPECT_EQ(ToF16(1.0f), 0x3c00);
  EXPECT_EQ(ToF16(-2.0f), 0xc000);
  EXPECT_EQ(ToF16(0.5f), 0x3800);
  EXPECT_EQ(ToF16(65504.0f), 0x7bff);           // largest finite half
  EXPECT_EQ(ToF16(0x1.0p-14f), 0x0400);         // smallest normal
  EXPECT_EQ(ToF16(0x1.0p-24f), 0x0001);         // smallest subnormal
  EXPECT_EQ(ToF16(1023 * 0x1.0p-24f), 0x03ff);  // largest subnormal
  EXPECT_EQ(ToF16(-0x1.0p-24f), 0x8001);
  EXPECT_EQ(ToF16(-0.0f), 0x8000);
}

TEST(F16, RoundsToNearestEvenIncludingSubnormals) {
  EXPECT_EQ(ToF16(1.0f + 0x1.0p-11f), 0x3c00);      // halfway, down to even
  EXPECT_EQ(ToF16(1.0f + 3 * 0x1.0p-11f), 0x3c02);  // halfway, up to even
  EXPECT_EQ(ToF16(1.0f + 0x1.0p-11f + 0x1.0p-20f), 0x3c01);
  EXPECT_EQ(ToF16(0x1.0p-25f), 0x0000);         // half the smallest subnormal: to even (zero)
  EXPECT_EQ(ToF16(0x1.8p-25f), 0x0001);         // above half
  EXPECT_EQ(ToF16(1.5f * 0x1.0p-24f), 0x0002);  // between 1 and 2 units: to even
  EXPECT_EQ(ToF16(2.5f * 0x1.0p-24f), 0x0002);
  EXPECT_EQ(ToF16(1023.5f * 0x1.0p-24f), 0x0400);  // largest subnormal rounds up into the normals
  EXPECT_EQ(ToF16(0x1.0p-30f), 0x0000);
  EXPECT_EQ(ToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(F16, EveryHalfwayPointRoundsToEven) {
  for (uint32_t sign : {0x0000u, 0x8000u}) {
    for (uint32_t b = 0; b < 0x7bff; ++b) {
      const float lo = FromF16(static_cast<uint16_t>(sign | b));
      const float hi = FromF16(static_cast<uint16_t>(sign | (b + 1)));
      const float mid = (lo + hi) * 0.5f;  // exact: needs 12 significant bits
      ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(lo) + hi) / 2) << b;
      const uint32_t even = (b & 1u) ? b + 1 : b;
      ASSERT_EQ(ToF16(mid), sign | even) << std::hex << b;
      ASSERT_EQ(ToF16(std::nextafter(mid, 0.0f)), sign | b) << std::hex << b;
      ASSERT_EQ(ToF16(std::nextafter(mid, sign ? -kInf : kInf)), sign | (b + 1)) << std::hex << b;
    }
  }
}

TEST(F16, OverflowGoesToInfinity) {
  EXPECT_EQ(ToF16(65519.0f), 0x7bff);  // below the halfway point to 2^16
  EXPECT_EQ(ToF16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(ToF16(65520.0f), 0x7c00);  // halfway: to even, which is infinity
  EXPECT_EQ(ToF16(1e6f), 0x7c00);
  EXPECT_EQ(ToF16(-1e6f), 0xfc00);
  EXPECT_EQ(ToF16(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(ToF16(kInf), 0x7c00);
  EXPECT_EQ(ToF16(-kInf), 0xfc00);
  EXPECT_TRUE(std::isinf(FromF16(0x7c00)));
}

TEST(F16, NanStaysNan) {
  for (uint32_t u : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7f801fffu, 0x7fffffffu}) {
    const uint16_t h = ToF16(FromBits(u));
    EXPECT_TRUE(std::isnan(FromF16(h))) << std::hex << u;
    EXPECT_EQ(h & 0x8000u, (u >> 16) & 0x8000u) << std::hex << u;
  }
  EXPECT_TRUE(std::isnan(FromF16(0x7e00)));
  EXPECT_TRUE(std::isnan(FromF16(0x7c01)));
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("f16c"))) uint16_t HardwareToF16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

TEST(F16, MatchesF16cOnASweepOfFloats) {
  if (!GetCpuFeatures().f16c) GTEST_SKIP() << "no F16C on this CPU";
  int64_t checked = 0;
  for (uint64_t u = 0; u <= 0xffffffffULL; u += 4093) {
    const float f = FromBits(static_cast<uint32_t>(u));
    const uint16_t want = HardwareToF16(f);
    const uint16_t got = ToF16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(FromF16(got))) << std::hex << u;
    } else {
      ASSERT_EQ(got, want) << "float bits " << std::hex << u << " (" << f << ")";
    }
    ++checked;
  }
  EXPECT_GT(checked, 1000000);
}
#endif

}  // namespace
}  // namespace moe
