// Routing report: information measures against hand-computed tables, load statistics, drops, and
// the text/JSON renderings.
#include "moe/train/routing_report.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/core/error.h"

namespace moe::train {
namespace {

TEST(JointInformation, PerfectSpecialisationIsOne) {
  const std::vector<int64_t> diag = {5, 0, 0, 0, 7, 0, 0, 0, 2};
  const JointInformation j = ComputeJointInformation(diag, 3, 3);
  EXPECT_NEAR(j.nmi, 1.0, 1e-12);
  EXPECT_NEAR(j.domain_recovery, 1.0, 1e-12);
  EXPECT_NEAR(j.mutual, j.h_rows, 1e-12);
}

TEST(JointInformation, IndependenceIsZero) {
  // p(d, x) = p(d) p(x) with p(d) = (1/3, 2/3), p(x) = (1/4, 1/4, 1/2).
  const std::vector<int64_t> outer = {1, 1, 2, 2, 2, 4};
  const JointInformation j = ComputeJointInformation(outer, 2, 3);
  EXPECT_NEAR(j.mutual, 0.0, 1e-12);
  EXPECT_NEAR(j.nmi, 0.0, 1e-12);
  EXPECT_NEAR(j.h_rows, -(std::log(1.0 / 3) / 3 + 2 * std::log(2.0 / 3) / 3), 1e-12);
  EXPECT_NEAR(j.h_cols, 1.5 * std::log(2.0), 1e-12);
}

TEST(JointInformation, TwoByTwoByHand) {
  // [[3,1],[1,3]]: p = [[3/8,1/8],[1/8,3/8]], uniform marginals, H(D) = H(X) = ln 2,
  // I = 2 (3/8) ln(3/8 / 1/4) + 2 (1/8) ln(1/8 / 1/4) = 3/4 ln 1.5 + 1/4 ln 0.5 = 0.130812 nats.
  const JointInformation sym = ComputeJointInformation(std::vector<int64_t>{3, 1, 1, 3}, 2, 2);
  EXPECT_NEAR(sym.mutual, 0.75 * std::log(1.5) + 0.25 * std::log(0.5), 1e-12);
  EXPECT_NEAR(sym.mutual, 0.130812, 1e-6);
  EXPECT_NEAR(sym.nmi, 0.188722, 1e-6);

  // [[2,0],[1,1]]: p(d) = (1/2, 1/2), p(x) = (3/4, 1/4);
  // I = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2 = 0.215762; H(D) = ln 2 = 0.693147;
  // H(X) = 3/4 ln(4/3) + 1/4 ln 4 = 0.562335; NMI = 0.215762 / sqrt(0.693147 * 0.562335) =
  // 0.345592.
  const JointInformation asym = ComputeJointInformation(std::vector<int64_t>{2, 0, 1, 1}, 2, 2);
  EXPECT_NEAR(asym.mutual, 0.215762, 1e-6);
  EXPECT_NEAR(asym.h_rows, 0.693147, 1e-6);
  EXPECT_NEAR(asym.h_cols, 0.562335, 1e-6);
  EXPECT_NEAR(asym.nmi, 0.345592, 1e-6);
  EXPECT_NEAR(asym.domain_recovery, 0.215762 / 0.693147, 1e-6);
}

TEST(JointInformation, DegenerateTablesAreZero) {
  const JointInformation one_domain = ComputeJointInformation(std::vector<int64_t>{3, 5, 1}, 1, 3);
  EXPECT_EQ(one_domain.nmi, 0.0);
  EXPECT_EQ(one_domain.domain_recovery, 0.0);
  const JointInformation one_expert = ComputeJointInformation(std::vector<int64_t>{3, 5}, 2, 1);
  EXPECT_EQ(one_expert.nmi, 0.0);
  EXPECT_GT(one_expert.h_rows, 0.0);
  const JointInformation none = ComputeJointInformation(std::vector<int64_t>(6, 0), 2, 3);
  EXPECT_EQ(none.nmi, 0.0);
  EXPECT_EQ(none.h_rows, 0.0);
  EXPECT_THROW(ComputeJointInformation(std::vector<int64_t>{1, 2, 3}, 2, 2), Error);
  EXPECT_THROW(ComputeJointInformation(std::vector<int64_t>{1, -2}, 1, 2), Error);
}

TEST(JointInformation, TopTwoPerfectSpecialisationHasRecoveryOneButNmiBelowOne) {
  // 2 domains, 4 experts, K = 2: domain 0 -> {0, 1}, domain 1 -> {2, 3}. H(D) = ln 2, H(X) = ln 4,
  // I = ln 2, so NMI = ln 2 / sqrt(ln 2 * 2 ln 2) = 1/sqrt(2) while U(D|X) = 1.
  const JointInformation j =
      ComputeJointInformation(std::vector<int64_t>{10, 10, 0, 0, 0, 0, 10, 10}, 2, 4);
  EXPECT_NEAR(j.nmi, 1 / std::sqrt(2.0), 1e-12);
  EXPECT_NEAR(j.domain_recovery, 1.0, 1e-12);
}

// 4 tokens with domains {0, 1, 0, -1} under top-2 routing over 4 experts.
struct Batch {
  std::vector<int32_t> domains = {0, 1, 0, kNoDomainLabel};
  std::vector<int32_t> token = {0, 0, 1, 1, 2, 2, 3, 3};
  std::vector<int32_t> expert = {0, 1, 2, 0, 0, 1, 3, 0};
  static constexpr int32_t kNoDomainLabel = -1;
};

TEST(RoutingStats, CountsSharesLoadAndBalance) {
  RoutingStats st({"a", "b"}, 4);
  const Batch b;
  st.Add(b.domains, b.token, b.expert, /*dropped=*/2);
  EXPECT_EQ(st.tokens(), 4);
  EXPECT_EQ(st.assignments(), 8);
  EXPECT_EQ(st.count(0, 0), 2);
  EXPECT_EQ(st.count(0, 1), 2);
  EXPECT_EQ(st.count(1, 2), 1);
  EXPECT_EQ(st.count(1, 0), 1);
  EXPECT_EQ(st.domain_tokens()[0], 2);
  EXPECT_EQ(st.domain_tokens()[1], 1);
  const RoutingSummary s = st.Summarize();
  EXPECT_EQ(s.share[0], (std::vector<double>{0.5, 0.5, 0, 0}));
  EXPECT_EQ(s.share[1], (std::vector<double>{0.5, 0, 0.5, 0}));
  EXPECT_EQ(s.top_expert, (std::vector<int>{0, 0}));  // ties go to the lowest expert
  // Expert counts over all tokens (the unlabelled one too): {4, 2, 1, 1}, mean 2:
  // max/mean = 2, population variance = (4 + 0 + 1 + 1) / 4 = 1.5, cv = sqrt(1.5) / 2.
  EXPECT_EQ(s.load, (std::vector<double>{0.5, 0.25, 0.125, 0.125}));
  EXPECT_DOUBLE_EQ(s.load_max_over_mean, 2.0);
  EXPECT_DOUBLE_EQ(s.load_cv, std::sqrt(1.5) / 2);
  EXPECT_DOUBLE_EQ(s.drop_rate, 2.0 / 10.0);
  EXPECT_EQ(s.unrouted_rate, 0.0);
}

TEST(RoutingStats, BalancedLoadAndAccumulationAcrossBatches) {
  RoutingStats once({"a", "b"}, 4), twice({"a", "b"}, 4);
  const Batch b;
  std::vector<int32_t> d2 = b.domains, t2 = b.token, e2 = b.expert;
  d2.insert(d2.end(), b.domains.begin(), b.domains.end());
  for (const int32_t t : b.token) t2.push_back(t + 4);
  e2.insert(e2.end(), b.expert.begin(), b.expert.end());
  once.Add(d2, t2, e2, 2);
  twice.Add(b.domains, b.token, b.expert, 1);
  twice.Add(b.domains, b.token, b.expert, 1);
  EXPECT_EQ(once.ToJson(), twice.ToJson());

  RoutingStats flat({"a"}, 2);
  flat.Add(std::vector<int32_t>{0, 0}, std::vector<int32_t>{0, 1}, std::vector<int32_t>{1, 0});
  const RoutingSummary s = flat.Summarize();
  EXPECT_DOUBLE_EQ(s.load_max_over_mean, 1.0);
  EXPECT_DOUBLE_EQ(s.load_cv, 0.0);
  flat.Clear();
  EXPECT_EQ(flat.assignments(), 0);
  EXPECT_EQ(flat.Summarize().load_max_over_mean, 0.0);
}

TEST(RoutingStats, ExpertChoiceTokensWithoutExpertsAreUnrouted) {
  RoutingStats st({"a", "b"}, 2);
  // Expert choice: expert 0 takes tokens 0 and 1, expert 1 takes tokens 0 and 2; token 3 gets none.
  st.Add(std::vector<int32_t>{0, 0, 1, 1}, std::vector<int32_t>{0, 1, 0, 2},
         std::vector<int32_t>{0, 0, 1, 1});
  const RoutingSummary s = st.Summarize();
  EXPECT_DOUBLE_EQ(s.unrouted_rate, 0.25);
  EXPECT_EQ(st.count(0, 0), 2);
  EXPECT_EQ(st.count(0, 1), 1);
  EXPECT_EQ(st.count(1, 1), 1);
}

TEST(RoutingStats, BadInputsThrowWithoutChangingTheCounts) {
  RoutingStats st({"a", "b"}, 2);
  const std::vector<int32_t> dom = {0, 1};
  st.Add(dom, std::vector<int32_t>{0}, std::vector<int32_t>{1});
  const auto before = st.ToJson();
  EXPECT_THROW(st.Add(dom, std::vector<int32_t>{0, 1}, std::vector<int32_t>{0}), Error);
  EXPECT_THROW(st.Add(dom, std::vector<int32_t>{0, 2}, std::vector<int32_t>{0, 0}), Error);
  EXPECT_THROW(st.Add(dom, std::vector<int32_t>{0, 1}, std::vector<int32_t>{0, 2}), Error);
  EXPECT_THROW(st.Add(std::vector<int32_t>{0, 2}, std::vector<int32_t>{0}, std::vector<int32_t>{0}),
               Error);
  EXPECT_THROW(st.Add(dom, std::vector<int32_t>{0}, std::vector<int32_t>{0}, -1), Error);
  EXPECT_EQ(st.ToJson(), before);
  EXPECT_THROW(RoutingStats({"a"}, 0), Error);
}

TEST(RoutingStats, TableMarksTheTopExpertAndJsonHasTheFigures) {
  RoutingStats st({"arith", "english"}, 3);
  // arith -> expert 2 (3 of 4), english -> expert 0 (2 of 2).
  st.Add(std::vector<int32_t>{0, 0, 0, 0, 1, 1}, std::vector<int32_t>{0, 1, 2, 3, 4, 5},
         std::vector<int32_t>{2, 2, 1, 2, 0, 0});
  const std::string table = st.RenderTable("layer 1");
  EXPECT_NE(table.find("layer 1:"), std::string::npos) << table;
  EXPECT_NE(table.find("arith"), std::string::npos) << table;
  EXPECT_NE(table.find("*75.0"), std::string::npos) << table;
  EXPECT_NE(table.find("*100.0"), std::string::npos) << table;
  EXPECT_NE(table.find(" 25.0"), std::string::npos) << table;
  EXPECT_NE(table.find("NMI"), std::string::npos) << table;
  // Every row of the table has the same width.
  size_t row_width = 0;
  int rows = 0;
  for (size_t pos = table.find('\n') + 1; rows < 4; ++rows) {
    const size_t end = table.find('\n', pos);
    if (rows == 0) row_width = end - pos;
    EXPECT_EQ(end - pos, row_width) << table;
    pos = end + 1;
  }

  const nlohmann::json j = st.ToJson();
  EXPECT_EQ(j["domains"], nlohmann::json({"arith", "english"}));
  EXPECT_EQ(j["counts"], nlohmann::json({{0, 1, 3}, {2, 0, 0}}));
  EXPECT_EQ(j["top_expert"], nlohmann::json({2, 0}));
  EXPECT_EQ(j["num_experts"], 3);
  EXPECT_DOUBLE_EQ(j["share"][0][2].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(j["domain_recovery"].get<double>(), st.Summarize().info.domain_recovery);
  EXPECT_GT(j["nmi"].get<double>(), 0.5);
  EXPECT_NO_THROW(j.dump());
}

}  // namespace
}  // namespace moe::train
