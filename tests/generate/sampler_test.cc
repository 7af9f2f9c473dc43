// Sampling: greedy, temperature (frequencies follow the softmax), top-k, top-p, min-p, repetition
// penalty, determinism by seed, and option errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "moe/core/error.h"
#include "moe/generate/sampler.h"

namespace moe::generate {
namespace {

std::vector<int> Counts(Sampler& s, const std::vector<float>& logits, int draws, const std::vector<int32_t>& seen = {}) {
  std::vector<int> c(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++c[static_cast<size_t>(s.Sample(logits, seen))];
  return c;
}

TEST(Sampler, GreedyIsArgmaxWithTiesToTheLowerId) {
  Sampler s({});
  EXPECT_EQ(s.Sample(std::vector<float>{0.1f, 2.0f, -1.0f, 2.0f}, {}), 1);
}

TEST(Sampler, GreedyScanEqualsTheGeneralPathAtEveryLength) {
  // Greedy without a penalty scans the floats; with a penalty (and nothing seen) it goes through
  // the general path in double. Lengths around the scan's 16 lanes, ties placed on both sides of a
  // lane boundary, NaNs that must never win.
  Sampler fast({}), general({.repetition_penalty = 2.0});
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<float>((state >> 40) % 1000) / 100.0f - 5.0f;
  };
  for (size_t n = 1; n <= 70; ++n) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> x(n);
      for (float& v : x) v = next();
      if (n > 3 && trial % 3 == 0) x[n - 1] = x[n / 2] = 10.0f;  // a tie: the lower id wins
      if (n > 2 && trial % 4 == 1) x[0] = std::nanf("");
      const int32_t got = fast.Sample(x, {});
      if (!std::isnan(x[0])) {
        EXPECT_EQ(got, general.Sample(x, {})) << "n=" << n;
      }
      int32_t want = -1;
      for (size_t i = 0; i < n; ++i)
        if (!std::isnan(x[i]) && (want < 0 || x[i] > x[static_cast<size_t>(want)])) want = static_cast<int32_t>(i);
      EXPECT_EQ(got, want) << "n=" << n << " trial=" << trial;
    }
  }
  const float nan = std::nanf("");
  EXPECT_EQ(fast.Sample(std::vector<float>{nan, nan, nan}, {}), 0);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(fast.Sample(std::vector<float>{-inf, -inf}, {}), 0);
  EXPECT_EQ(fast.Sample(std::vector<float>(40, -inf), {}), 0);
}

TEST(Sampler, TemperatureFollowsTheSoftmax) {
  const std::vector<float> logits{1.0f, 2.0f, 0.0f};
  Sampler s({.temperature = 1.0, .seed = 7});
  const int n = 40000;
  const auto c = Counts(s, logits, n);
  double z = 0;
  for (float l : logits) z += std::exp(l);
  for (size_t i = 0; i < logits.size(); ++i) {
    const double p = std::exp(logits[i]) / z;
    EXPECT_NEAR(c[i] / double(n), p, 4 * std::sqrt(p * (1 - p) / n)) << i;
  }
  // Lower temperature sharpens: the best token gets more.
  Sampler cold({.temperature = 0.25, .seed = 7});
  EXPECT_GT(Counts(cold, logits, 2000)[1], 1800);
}

TEST(Sampler, TopKTopPAndMinPRestrictTheCandidates) {
  const std::vector<float> logits{3.0f, 2.9f, 1.0f, 0.5f, -2.0f};
  Sampler k2({.temperature = 1.0, .top_k = 2, .seed = 1});
  auto c = Counts(k2, logits, 3000);
  EXPECT_EQ(c[2] + c[3] + c[4], 0);
  EXPECT_GT(c[0], 0);
  EXPECT_GT(c[1], 0);
  // p = softmax: [0.470, 0.425, 0.064, 0.039, 0.003]: top_p 0.85 keeps the first two only.
  Sampler p9({.temperature = 1.0, .top_p = 0.85, .seed = 2});
  c = Counts(p9, logits, 3000);
  EXPECT_EQ(c[2] + c[3] + c[4], 0);
  // min_p 0.5 keeps tokens with p >= 0.5 p_max: ids 0 and 1.
  Sampler mp({.temperature = 1.0, .min_p = 0.5, .seed = 3});
  c = Counts(mp, logits, 3000);
  EXPECT_EQ(c[2] + c[3] + c[4], 0);
  EXPECT_GT(c[1], 0);
  Sampler k1({.temperature = 5.0, .top_k = 1, .seed = 4});
  EXPECT_EQ(Counts(k1, logits, 100)[0], 100);  // top_k 1 is greedy at any temperature
}

TEST(Sampler, RepetitionPenaltyDemotesSeenTokens) {
  const std::vector<float> logits{2.0f, 1.9f, -1.0f};
  Sampler s({.repetition_penalty = 1.5});
  EXPECT_EQ(s.Sample(logits, {}), 0);
  EXPECT_EQ(s.Sample(logits, std::vector<int32_t>{0, 0, 0}), 1);  // 2.0 / 1.5 < 1.9, once per token
  // Negative logits are multiplied (pushed further down).
  EXPECT_EQ(s.Sample(std::vector<float>{-1.0f, -1.2f}, std::vector<int32_t>{0}), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  const std::vector<float> logits{0.5f, 0.4f, 0.3f, 0.2f, 0.1f};
  Sampler a({.temperature = 1.0, .seed = 99}), b({.temperature = 1.0, .seed = 99}), c({.temperature = 1.0, .seed = 98});
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.Sample(logits, {}));
    tb.push_back(b.Sample(logits, {}));
    tc.push_back(c.Sample(logits, {}));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(Sampler, BadOptionsNameTheOption) {
  using ::testing::HasSubstr;
  using ::testing::ThrowsMessage;
  EXPECT_THAT([] { Sampler({.temperature = -1}); }, ThrowsMessage<Error>(HasSubstr("temperature = -1")));
  EXPECT_THAT([] { Sampler({.top_p = 0}); }, ThrowsMessage<Error>(HasSubstr("top_p = 0")));
  EXPECT_THAT([] { Sampler({.min_p = 1.5}); }, ThrowsMessage<Error>(HasSubstr("min_p = 1.5")));
  EXPECT_THAT([] { Sampler({.repetition_penalty = 0}); }, ThrowsMessage<Error>(HasSubstr("repetition_penalty")));
  EXPECT_THAT([] { Sampler({.top_k = -2}); }, ThrowsMessage<Error>(HasSubstr("top_k = -2")));
}

}  // namespace
}  // namespace moe::generate
