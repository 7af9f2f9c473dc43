// RopeTable (frequencies of every scaling kind, hand-checked YaRN/llama3 values, the DeepSeek
// softmax multiplier) and RopeForward / RopeBackward against the rotation-matrix reference, by
// gradcheck, and by the properties KV-cache decode relies on (cached == on demand, scores depend
// only on relative position, in place == out of place).
#include "moe/kernels/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <vector>

#include "moe/testing/compare.h"
#include "moe/testing/gradcheck.h"
#include "moe/testing/reference.h"
#include "moe/testing/reference_transformer.h"
#include "tests/kernels/kernel_test_util.h"

namespace moe::kernels {
namespace {

using testing::ExpectClose;
using testing::ToDouble;

RopeScaling Linear(double factor) { return {.kind = RopeScalingKind::kLinear, .factor = factor}; }
// DeepSeek-V2's rope_scaling block (scaled down: original context 512).
RopeScaling Yarn(double mscale = 0.707, double mscale_all_dim = 0.707) {
  return {.kind = RopeScalingKind::kYarn,
          .factor = 40,
          .original_max_position_embeddings = 512,
          .beta_fast = 32,
          .beta_slow = 1,
          .mscale = mscale,
          .mscale_all_dim = mscale_all_dim};
}
// Llama 3.1's rope_scaling block.
RopeScaling Llama3() {
  return {.kind = RopeScalingKind::kLlama3,
          .factor = 8,
          .original_max_position_embeddings = 8192,
          .low_freq_factor = 1,
          .high_freq_factor = 4};
}

// No scaling, nothing cached.
RopeConfig Plain(int64_t rotary_dim, double theta = 10000.0) {
  RopeConfig c;
  c.rotary_dim = rotary_dim;
  c.theta = theta;
  return c;
}

testing::RefRopeSpec SpecOf(const RopeTable& table, RopePairing pairing, int64_t offset) {
  const RopeConfig& c = table.config();
  return {testing::RefRopeInvFreq(c.rotary_dim, c.theta, c.scaling),
          testing::RefRopeCosSinScale(c.scaling), c.rotary_dim, offset,
          pairing == RopePairing::kInterleaved};
}

TEST(RopeTable, InvFreqMatchesReferenceForEveryScaling) {
  for (const RopeScaling& s : {RopeScaling{}, Linear(4), Yarn(), Yarn(1.0, 0.0), Llama3()}) {
    for (const auto& [r, theta] : {std::pair{64, 10000.0}, {128, 500000.0}, {6, 10000.0}}) {
      SCOPED_TRACE(::testing::Message() << RopeScalingKindName(s.kind) << " r=" << r);
      const RopeTable table({.rotary_dim = r, .theta = theta, .scaling = s});
      const std::vector<double> want = testing::RefRopeInvFreq(r, theta, s);
      ASSERT_EQ(table.inv_freq().size(), want.size());
      EXPECT_TRUE(ExpectClose(table.inv_freq().data(), want.data(), r / 2, {0, 1e-13, 1e-26}));
      EXPECT_NEAR(table.cos_sin_scale(), testing::RefRopeCosSinScale(s), 1e-15);
    }
  }
}

TEST(RopeTable, YarnHandCheckedValues) {
  // r = 64, theta = 1e4, L = 4096 (DeepSeek-V2): the correction dims are
  // floor(64 ln(4096 / (2 pi 32)) / (2 ln 1e4)) = 10 and ceil(64 ln(4096 / (2 pi)) / (2 ln 1e4))
  // = 23.
  RopeScaling s = Yarn();
  s.original_max_position_embeddings = 4096;
  const RopeTable table({.rotary_dim = 64, .theta = 10000, .scaling = s});
  auto base = [](int i) { return std::pow(10000.0, -2.0 * i / 64.0); };
  const std::vector<double>& f = table.inv_freq();
  EXPECT_DOUBLE_EQ(f[0], 1.0);
  EXPECT_DOUBLE_EQ(f[10], base(10));       // ramp 0: unscaled
  EXPECT_DOUBLE_EQ(f[23], base(23) / 40);  // ramp 1: interpolated
  EXPECT_DOUBLE_EQ(f[31], base(31) / 40);
  const double ramp = 6.0 / 13.0;  // i = 16
  EXPECT_NEAR(f[16], base(16) / 40 * ramp + base(16) * (1 - ramp), 1e-15);
  // mscale == mscale_all_dim: cos/sin unscaled, softmax scale * (0.1 * 0.707 * ln 40 + 1)^2.
  EXPECT_EQ(table.cos_sin_scale(), 1.0);
  const double m = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_NEAR(table.SoftmaxScaleMultiplier(), m * m, 1e-15);
  // DeepSeek-V3 (mscale = mscale_all_dim = 1): (0.1 ln 40 + 1)^2 = 1.87385...
  const RopeTable v3({.rotary_dim = 64, .theta = 10000, .scaling = Yarn(1.0, 1.0)});
  EXPECT_NEAR(v3.SoftmaxScaleMultiplier(), 1.8738542, 1e-7);
  // Without mscale_all_dim the cos/sin carry the whole correction and the softmax scale is kept.
  const RopeTable plain({.rotary_dim = 64, .theta = 10000, .scaling = Yarn(1.0, 0.0)});
  EXPECT_NEAR(plain.cos_sin_scale(), 0.1 * std::log(40.0) + 1.0, 1e-15);
  EXPECT_EQ(plain.SoftmaxScaleMultiplier(), 1.0);
  EXPECT_EQ(RopeTable(Plain(8)).SoftmaxScaleMultiplier(), 1.0);
}

TEST(RopeTable, Llama3HandCheckedValues) {
  // Llama 3.1: wavelengths below 8192/4 = 2048 are kept, above 8192 divided by 8, smooth between.
  const RopeTable table({.rotary_dim = 128, .theta = 500000, .scaling = Llama3()});
  for (int i = 0; i < 64; ++i) {
    const double base = std::pow(500000.0, -2.0 * i / 128.0);
    const double wavelen = 2 * std::numbers::pi / base;
    const double f = table.inv_freq()[static_cast<size_t>(i)];
    if (wavelen < 2048) {
      EXPECT_DOUBLE_EQ(f, base) << i;
    } else if (wavelen > 8192) {
      EXPECT_DOUBLE_EQ(f, base / 8) << i;
    } else {
      EXPECT_LT(f, base) << i;
      EXPECT_GT(f, base / 8) << i;
    }
  }
  EXPECT_EQ(table.cos_sin_scale(), 1.0);
}

TEST(RopeTable, CachedAndOnDemandAreBitwiseEqual) {
  for (const RopeScaling& s : {RopeScaling{}, Yarn(1.0, 0.0), Llama3()}) {
    const RopeTable cached(
        {.rotary_dim = 16, .theta = 10000, .scaling = s, .cached_positions = 64});
    const RopeTable lazy({.rotary_dim = 16, .theta = 10000, .scaling = s});
    for (int64_t pos : {0, 1, 63, 64, 1000}) {
      double c1[8], s1[8], c2[8], s2[8];
      cached.CosSin(pos, c1, s1);
      lazy.CosSin(pos, c2, s2);
      EXPECT_EQ(std::memcmp(c1, c2, sizeof c1), 0) << pos;
      EXPECT_EQ(std::memcmp(s1, s2, sizeof s1), 0) << pos;
    }
  }
}

TEST(RopeTable, BadConfigsThrow) {
  EXPECT_THROW(RopeTable(Plain(7)), Error);
  EXPECT_THROW(RopeTable(Plain(0)), Error);
  EXPECT_THROW(RopeTable(Plain(8, 1.0)), Error);
  EXPECT_THROW(RopeTable({.rotary_dim = 8, .scaling = Linear(0)}), Error);
  RopeScaling y = Yarn();
  y.original_max_position_embeddings = 0;
  EXPECT_THROW(RopeTable({.rotary_dim = 8, .scaling = y}), Error);
  RopeScaling l = Llama3();
  l.high_freq_factor = l.low_freq_factor;
  EXPECT_THROW(RopeTable({.rotary_dim = 8, .scaling = l}), Error);
  EXPECT_EQ(ParseRopeScalingKind("yarn"), RopeScalingKind::kYarn);
  EXPECT_EQ(ParseRopeScalingKind("default"), RopeScalingKind::kNone);
  EXPECT_THROW(ParseRopeScalingKind("dynamic"), Error);
}

struct RopeCase {
  int64_t t, h, dh, r, offset;
  RopePairing pairing;
  RopeScaling scaling;
};

std::vector<RopeCase> Cases() {
  std::vector<RopeCase> cases;
  for (RopePairing p : {RopePairing::kHalf, RopePairing::kInterleaved}) {
    cases.push_back({5, 3, 16, 16, 0, p, {}});        // full rotary
    cases.push_back({4, 2, 24, 8, 0, p, Linear(2)});  // partial rotary
    cases.push_back({3, 4, 40, 16, 24, p, Yarn()});   // MLA: [nope 24 | rope 16]
    cases.push_back({6, 1, 10, 6, 2, p, Llama3()});   // a slice in the middle
  }
  return cases;
}

TEST(Rope, ForwardMatchesReference) {
  Rng rng(51);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const RopeCase& c : Cases()) {
      SCOPED_TRACE(::testing::Message()
                   << "threads=" << threads << " t=" << c.t << " dh=" << c.dh << " r=" << c.r
                   << " offset=" << c.offset << " " << RopeScalingKindName(c.scaling.kind)
                   << " interleaved=" << (c.pairing == RopePairing::kInterleaved));
      const RopeTable table(
          {.rotary_dim = c.r, .theta = 10000, .scaling = c.scaling, .cached_positions = 8});
      const std::vector<float> x = RandomNormal<float>(rng, c.t * c.h * c.dh);
      std::vector<int32_t> pos(static_cast<size_t>(c.t));
      for (auto& p : pos) p = static_cast<int32_t>(rng.Below(5000));
      pos[0] = 3;  // one cached position
      std::vector<float> y(x.size(), std::numeric_limits<float>::quiet_NaN());
      RopeForward<float>(CViewOf(x, {c.t, c.h, c.dh}), CViewOf(pos, {c.t}), table, c.pairing,
                         c.offset, ViewOf(y, {c.t, c.h, c.dh}), ctx);
      const std::vector<double> xd = ToDouble(x.data(), Size(x));
      const std::vector<double> want = testing::RefRope(xd.data(), c.t, c.h, c.dh, pos.data(),
                                                        SpecOf(table, c.pairing, c.offset));
      EXPECT_TRUE(ExpectClose(y.data(), want.data(), Size(y), {2e-6, 2e-6, 1e-12}, "y"));
    }
  }
}

TEST(Rope, BackwardAccumulatesReference) {
  Rng rng(52);
  for (int threads : kThreadCounts) {
    Context ctx({.threads = threads});
    for (const RopeCase& c : Cases()) {
      const RopeTable table({.rotary_dim = c.r, .theta = 10000, .scaling = c.scaling});
      const int64_t n = c.t * c.h * c.dh;
      const std::vector<float> dy = RandomNormal<float>(rng, n);
      std::vector<float> dx = RandomNormal<float>(rng, n);
      std::vector<int32_t> pos(static_cast<size_t>(c.t));
      for (auto& p : pos) p = static_cast<int32_t>(rng.Below(3000));
      const std::vector<double> dyd = ToDouble(dy.data(), n);
      std::vector<double> want = testing::RefRopeBackward(dyd.data(), c.t, c.h, c.dh, pos.data(),
                                                          SpecOf(table, c.pairing, c.offset));
      for (int64_t i = 0; i < n; ++i) want[static_cast<size_t>(i)] += dx[static_cast<size_t>(i)];
      RopeBackward<float>(CViewOf(dy, {c.t, c.h, c.dh}), CViewOf(pos, {c.t}), table, c.pairing,
                          c.offset, ViewOf(dx, {c.t, c.h, c.dh}), ctx);
      EXPECT_TRUE(ExpectClose(dx.data(), want.data(), n, {4e-6, 2e-6, 1e-12}, "dx"));
    }
  }
}

TEST(Rope, GradCheckInDouble) {
  Rng rng(53);
  Context ctx({.threads = 1});
  for (const RopeCase& c : Cases()) {
    const RopeTable table({.rotary_dim = c.r, .theta = 10000, .scaling = c.scaling});
    const int64_t n = c.t * c.h * c.dh;
    const Shape shape{c.t, c.h, c.dh};
    std::vector<double> x = RandomNormal<double>(rng, n), y(static_cast<size_t>(n));
    const std::vector<double> w = RandomNormal<double>(rng, n);
    std::vector<int32_t> pos(static_cast<size_t>(c.t));
    for (auto& p : pos) p = static_cast<int32_t>(rng.Below(100));
    auto objective = [&] {
      RopeForward<double>(CViewOf(x, shape), CViewOf(pos, {c.t}), table, c.pairing, c.offset,
                          ViewOf(y, shape), ctx);
      return testing::WeightedSum(y.data(), w.data(), n);
    };
    std::vector<double> dx(static_cast<size_t>(n), 0.0);
    RopeBackward<double>(CViewOf(w, shape), CViewOf(pos, {c.t}), table, c.pairing, c.offset,
                         ViewOf(dx, shape), ctx);
    EXPECT_TRUE(testing::GradCheck(objective, {{"x", x.data(), dx.data(), n}}));
  }
}

TEST(Rope, InPlaceEqualsOutOfPlaceAndBackwardInvertsForward) {
  Rng rng(54);
  Context ctx({.threads = 3});
  for (const RopeCase& c : Cases()) {
    if (c.scaling.kind == RopeScalingKind::kYarn) continue;  // m != 1 is not a pure rotation
    const RopeTable table({.rotary_dim = c.r, .theta = 10000, .scaling = c.scaling});
    const Shape shape{c.t, c.h, c.dh};
    const std::vector<float> x = RandomNormal<float>(rng, shape.numel());
    std::vector<int32_t> pos(static_cast<size_t>(c.t));
    for (auto& p : pos) p = static_cast<int32_t>(rng.Below(100000));
    std::vector<float> y(x.size()), inplace = x;
    RopeForward<float>(CViewOf(x, shape), CViewOf(pos, {c.t}), table, c.pairing, c.offset,
                       ViewOf(y, shape), ctx);
    RopeForward<float>(CViewOf(inplace, shape), CViewOf(pos, {c.t}), table, c.pairing, c.offset,
                       ViewOf(inplace, shape), ctx);
    EXPECT_EQ(std::memcmp(y.data(), inplace.data(), y.size() * sizeof(float)), 0);
    // R^T R = I: the backward of the output gives the input back.
    std::vector<float> back(x.size(), 0.0f);
    RopeBackward<float>(CViewOf(y, shape), CViewOf(pos, {c.t}), table, c.pairing, c.offset,
                        ViewOf(back, shape), ctx);
    EXPECT_TRUE(ExpectClose(back.data(), x.data(), Size(x), {2e-6, 2e-6, 1e-12}, "R^T R x"));
  }
}

TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  // <R(p) q, R(s) k> == <R(p + c) q, R(s + c) k>: what lets a KV cache keep rotated keys.
  Rng rng(55);
  Context ctx({.threads = 1});
  for (RopePairing pairing : {RopePairing::kHalf, RopePairing::kInterleaved}) {
    const RopeTable table({.rotary_dim = 32, .theta = 10000, .scaling = Yarn(1.0, 0.0)});
    const std::vector<double> qk = RandomNormal<double>(rng, 2 * 32);
    std::vector<double> out(qk.size());
    double first = 0;
    for (int32_t shift : {0, 17, 3000}) {
      const std::vector<int32_t> pos = {5 + shift, 2 + shift};
      RopeForward<double>(CViewOf(qk, {2, 1, 32}), CViewOf(pos, {2}), table, pairing, 0,
                          ViewOf(out, {2, 1, 32}), ctx);
      double dot = 0;
      for (int i = 0; i < 32; ++i)
        dot += out[static_cast<size_t>(i)] * out[static_cast<size_t>(32 + i)];
      if (shift == 0) first = dot;
      EXPECT_NEAR(dot, first, 1e-10 * std::fabs(first) + 1e-12) << shift;
    }
  }
}

TEST(Rope, ShapeAndPositionErrorsThrow) {
  Context ctx({.threads = 1});
  const RopeTable table(Plain(8));
  std::vector<float> x(2 * 3 * 8), y(2 * 3 * 8);
  std::vector<int32_t> pos = {0, 1}, bad = {0, -1};
  auto X = [&](Shape s) { return CView<float>(x.data(), s); };
  auto Y = [&](Shape s) { return View<float>(y.data(), s); };
  const CView<int32_t> p(pos.data(), {2});
  EXPECT_NO_THROW(
      RopeForward<float>(X({2, 3, 8}), p, table, RopePairing::kHalf, 0, Y({2, 3, 8}), ctx));
  EXPECT_THROW(RopeForward<float>(X({6, 8}), p, table, RopePairing::kHalf, 0, Y({6, 8}), ctx),
               Error);
  EXPECT_THROW(RopeForward<float>(X({2, 3, 8}), p, table, RopePairing::kHalf, 0, Y({3, 2, 8}), ctx),
               Error);
  EXPECT_THROW(RopeForward<float>(X({2, 3, 8}), p, table, RopePairing::kHalf, 1, Y({2, 3, 8}), ctx),
               Error);  // [1, 9) does not fit in 8
  EXPECT_THROW(RopeForward<float>(X({2, 3, 8}), CView<int32_t>(pos.data(), {1}), table,
                                  RopePairing::kHalf, 0, Y({2, 3, 8}), ctx),
               Error);
  try {
    RopeForward<float>(X({2, 3, 8}), CView<int32_t>(bad.data(), {2}), table, RopePairing::kHalf, 0,
                       Y({2, 3, 8}), ctx);
    ADD_FAILURE() << "negative position accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("positions[1] = -1"), std::string::npos) << e.what();
  }
  // dx accumulates, so it may not alias dy.
  EXPECT_THROW(RopeBackward<float>(X({2, 3, 8}), p, table, RopePairing::kHalf, 0,
                                   View<float>(x.data(), {2, 3, 8}), ctx),
               Error);
}

}  // namespace
}  // namespace moe::kernels
