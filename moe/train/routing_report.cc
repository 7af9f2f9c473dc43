#include "moe/train/routing_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "moe/core/error.h"

namespace moe::train {
namespace {

constexpr std::string_view kTag = "routing";

// sum_i -p_i log p_i over counts with total n.
double Entropy(std::span<const double> counts, double n) {
  double h = 0;
  for (const double c : counts) {
    if (c > 0) h -= c / n * std::log(c / n);
  }
  return h;
}

}  // namespace

JointInformation ComputeJointInformation(std::span<const int64_t> counts, int rows, int cols) {
  MOE_CHECK(rows >= 0 && cols >= 0 &&
                counts.size() == static_cast<size_t>(rows) * static_cast<size_t>(cols),
            kTag, "count table has {} entries, expected {} x {}", counts.size(), rows, cols);
  std::vector<double> row_sum(static_cast<size_t>(rows)), col_sum(static_cast<size_t>(cols));
  double n = 0;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const int64_t v =
          counts[static_cast<size_t>(r) * static_cast<size_t>(cols) + static_cast<size_t>(c)];
      MOE_CHECK(v >= 0, kTag, "negative count {} at [{}, {}]", v, r, c);
      row_sum[static_cast<size_t>(r)] += static_cast<double>(v);
      col_sum[static_cast<size_t>(c)] += static_cast<double>(v);
      n += static_cast<double>(v);
    }
  }
  JointInformation out;
  if (n == 0) return out;
  out.h_rows = Entropy(row_sum, n);
  out.h_cols = Entropy(col_sum, n);
  double mi = 0;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const auto v = static_cast<double>(
          counts[static_cast<size_t>(r) * static_cast<size_t>(cols) + static_cast<size_t>(c)]);
      if (v > 0) {
        mi += v / n *
              std::log(v * n / (row_sum[static_cast<size_t>(r)] * col_sum[static_cast<size_t>(c)]));
      }
    }
  }
  // Rounding can leave a tiny negative value for independent tables and push ratios past 1.
  out.mutual = std::max(0.0, mi);
  if (out.h_rows > 0 && out.h_cols > 0) {
    out.nmi = std::min(1.0, out.mutual / std::sqrt(out.h_rows * out.h_cols));
  }
  if (out.h_rows > 0) out.domain_recovery = std::min(1.0, out.mutual / out.h_rows);
  return out;
}

RoutingStats::RoutingStats(std::vector<std::string> domain_names, int num_experts)
    : domain_names_(std::move(domain_names)), num_experts_(num_experts) {
  MOE_CHECK(num_experts >= 1, kTag, "num_experts {} must be >= 1", num_experts);
  Clear();
}

void RoutingStats::Clear() {
  counts_.assign(domain_names_.size() * static_cast<size_t>(num_experts_), 0);
  expert_.assign(static_cast<size_t>(num_experts_), 0);
  domain_tokens_.assign(domain_names_.size(), 0);
  tokens_ = unrouted_ = assignments_ = dropped_ = 0;
}

void RoutingStats::Add(std::span<const int32_t> domains, std::span<const int32_t> token,
                       std::span<const int32_t> expert, int64_t dropped) {
  MOE_CHECK(token.size() == expert.size(), kTag, "{} assignment tokens but {} experts",
            token.size(), expert.size());
  MOE_CHECK(dropped >= 0, kTag, "dropped count {} is negative", dropped);
  const auto t_count = static_cast<int64_t>(domains.size());
  const int nd = num_domains();
  for (size_t t = 0; t < domains.size(); ++t) {
    MOE_CHECK(domains[t] < nd, kTag, "token {} has domain {}, but there are {} domains", t,
              domains[t], nd);
  }
  for (size_t i = 0; i < token.size(); ++i) {
    MOE_CHECK(token[i] >= 0 && token[i] < t_count, kTag,
              "assignment {} has token {}, not in [0, {})", i, token[i], t_count);
    MOE_CHECK(expert[i] >= 0 && expert[i] < num_experts_, kTag,
              "assignment {} has expert {}, not in [0, {})", i, expert[i], num_experts_);
  }
  per_token_.assign(domains.size(), 0);
  for (size_t i = 0; i < token.size(); ++i) {
    const auto t = static_cast<size_t>(token[i]);
    const auto e = static_cast<size_t>(expert[i]);
    ++per_token_[t];
    ++expert_[e];
    if (domains[t] >= 0) ++counts_[static_cast<size_t>(domains[t]) * expert_.size() + e];
  }
  for (size_t t = 0; t < domains.size(); ++t) {
    if (domains[t] >= 0) ++domain_tokens_[static_cast<size_t>(domains[t])];
    if (per_token_[t] == 0) ++unrouted_;
  }
  tokens_ += t_count;
  assignments_ += static_cast<int64_t>(token.size());
  dropped_ += dropped;
}

RoutingSummary RoutingStats::Summarize() const {
  RoutingSummary s;
  const size_t ne = expert_.size();
  for (size_t d = 0; d < domain_names_.size(); ++d) {
    const std::span<const int64_t> row(counts_.data() + d * ne, ne);
    int64_t total = 0;
    for (const int64_t v : row) total += v;
    std::vector<double> share(ne, 0.0);
    int top = -1;
    for (size_t e = 0; e < ne; ++e) {
      if (total > 0) share[e] = static_cast<double>(row[e]) / static_cast<double>(total);
      if (row[e] > 0 && (top < 0 || row[e] > row[static_cast<size_t>(top)])) {
        top = static_cast<int>(e);
      }
    }
    s.share.push_back(std::move(share));
    s.top_expert.push_back(top);
  }
  s.load.assign(ne, 0.0);
  if (assignments_ > 0) {
    const double mean = static_cast<double>(assignments_) / static_cast<double>(ne);
    double var = 0;
    int64_t max = 0;
    for (size_t e = 0; e < ne; ++e) {
      s.load[e] = static_cast<double>(expert_[e]) / static_cast<double>(assignments_);
      const double dev = static_cast<double>(expert_[e]) - mean;
      var += dev * dev / static_cast<double>(ne);
      max = std::max(max, expert_[e]);
    }
    s.load_max_over_mean = static_cast<double>(max) / mean;
    s.load_cv = std::sqrt(var) / mean;
  }
  if (assignments_ + dropped_ > 0) {
    s.drop_rate = static_cast<double>(dropped_) / static_cast<double>(assignments_ + dropped_);
  }
  if (tokens_ > 0) s.unrouted_rate = static_cast<double>(unrouted_) / static_cast<double>(tokens_);
  s.info = ComputeJointInformation(counts_, num_domains(), num_experts_);
  return s;
}

std::string RoutingStats::RenderTable(std::string_view title) const {
  const RoutingSummary s = Summarize();
  size_t name_w = 6;  // "domain"
  for (const auto& n : domain_names_) name_w = std::max(name_w, std::min<size_t>(n.size(), 24));
  std::string out = fmt::format(
      "{}: share of each domain's assignments per expert (%), "
      "* = the domain's top expert\n",
      title);
  out += fmt::format("{:<{}} {:>9}", "domain", name_w, "tokens");
  for (int e = 0; e < num_experts_; ++e) out += fmt::format(" {:>6}", fmt::format("e{}", e));
  out += '\n';
  for (size_t d = 0; d < domain_names_.size(); ++d) {
    std::string name = domain_names_[d].substr(0, name_w);
    for (char& c : name) {
      if (static_cast<unsigned char>(c) < 0x20) c = '?';  // keep the table on one line per row
    }
    out += fmt::format("{:<{}} {:>9}", name, name_w, domain_tokens_[d]);
    for (int e = 0; e < num_experts_; ++e) {
      const double pct = 100.0 * s.share[d][static_cast<size_t>(e)];
      out += fmt::format(" {:>6}", fmt::format("{}{:.1f}", e == s.top_expert[d] ? "*" : "", pct));
    }
    out += '\n';
  }
  out += fmt::format("{:<{}} {:>9}", "load", name_w, tokens_);
  for (int e = 0; e < num_experts_; ++e) {
    out += fmt::format(" {:>6.1f}", 100.0 * s.load[static_cast<size_t>(e)]);
  }
  out += '\n';
  out += fmt::format(
      "load max/mean {:.2f}, cv {:.3f}; dropped {:.2f}% of assignments, {:.2f}% of tokens "
      "unrouted\nspecialisation: NMI {:.3f} (I/sqrt(H(D)H(X))), domain recovery {:.3f} "
      "(I/H(D)), I {:.3f} nats\n",
      s.load_max_over_mean, s.load_cv, 100.0 * s.drop_rate, 100.0 * s.unrouted_rate, s.info.nmi,
      s.info.domain_recovery, s.info.mutual);
  return out;
}

nlohmann::json RoutingStats::ToJson() const {
  using nlohmann::json;
  const RoutingSummary s = Summarize();
  const size_t ne = expert_.size();
  json counts = json::array();
  for (size_t d = 0; d < domain_names_.size(); ++d) {
    counts.push_back(std::vector<int64_t>(counts_.begin() + static_cast<ptrdiff_t>(d * ne),
                                          counts_.begin() + static_cast<ptrdiff_t>((d + 1) * ne)));
  }
  return json{
      {"domains", domain_names_},
      {"num_experts", num_experts_},
      {"counts", std::move(counts)},
      {"share", s.share},
      {"top_expert", s.top_expert},
      {"domain_tokens", domain_tokens_},
      {"expert_counts", expert_},
      {"load", s.load},
      {"load_max_over_mean", s.load_max_over_mean},
      {"load_cv", s.load_cv},
      {"tokens", tokens_},
      {"assignments", assignments_},
      {"dropped", dropped_},
      {"drop_rate", s.drop_rate},
      {"unrouted_rate", s.unrouted_rate},
      {"h_domain", s.info.h_rows},
      {"h_expert", s.info.h_cols},
      {"mutual_information", s.info.mutual},
      {"nmi", s.info.nmi},
      {"domain_recovery", s.info.domain_recovery},
  };
}

}  // namespace moe::train
