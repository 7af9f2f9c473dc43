// Which experts each data domain is routed to, for one MoE layer, accumulated over batches: the
// domain x expert table, expert load, load balance, drops, and how much the expert choice tells
// about the domain (normalised mutual information).
//
// Every (token, expert) assignment of the layer is one observation (d, x) with d the token's domain
// label: top-k token choice gives K observations per token, expert choice 0..E. Tokens labelled
// negative (kNoDomain: padding) count towards expert load but not towards the domain table or the
// information measures.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moe::train {

// Entropies and mutual information (nats) of the joint distribution given by a count table
// [R, C] (row-major), with p(r, c) = counts[r, c] / sum.
struct JointInformation {
  double h_rows = 0;  // H(D)
  double h_cols = 0;  // H(X)
  double mutual = 0;  // I(D;X) = sum p(d,x) log(p(d,x) / (p(d) p(x)))
  // I / sqrt(H(D) H(X)) (the geometric-mean normalisation of Strehl & Ghosh), in [0, 1]; 0 when
  // either entropy is 0. It reaches 1 only when the expert determines the domain and vice versa,
  // so it stays below 1 when K > 1 or when several experts share a domain (E > D).
  double nmi = 0;
  // I / H(D), Theil's uncertainty coefficient U(D|X): the share of the domain's entropy that the
  // chosen expert reveals; 1 when each expert serves a single domain, whatever K and E. 0 when
  // H(D) = 0.
  double domain_recovery = 0;
};
JointInformation ComputeJointInformation(std::span<const int64_t> counts, int rows, int cols);

struct RoutingSummary {
  std::vector<std::vector<double>> share;  // [domains][E] share of domain d's assignments to e;
                                           // each row sums to 1 (all 0 for a domain with none)
  std::vector<int> top_expert;    // [domains] argmax of share (lowest e on ties), -1 if none
  std::vector<double> load;       // [E] share of all assignments (labelled or not)
  double load_max_over_mean = 0;  // max_e count / mean_e count; 1 = balanced; 0 if none
  double load_cv = 0;             // population std / mean of the counts; 0 if none
  double drop_rate = 0;           // dropped / (assignments + dropped)
  double unrouted_rate = 0;       // share of tokens that got no expert at all
  JointInformation info;          // over the labelled assignments (domain table)
};

class RoutingStats {
 public:
  RoutingStats(std::vector<std::string> domain_names, int num_experts);

  // Adds one batch of one layer. domains: [T] label of each token (negative = unlabelled, else
  // < num_domains). token, expert: [N] the assignments in any order (e.g. RoutingPlan::token and
  // ::expert), token in [0, T), expert in [0, E). dropped: assignments removed by the capacity
  // limit (RoutingPlan::dropped). Throws moe::Error on out-of-range values, before changing
  // anything.
  void Add(std::span<const int32_t> domains, std::span<const int32_t> token,
           std::span<const int32_t> expert, int64_t dropped = 0);
  void Clear();

  int num_domains() const { return static_cast<int>(domain_names_.size()); }
  int num_experts() const { return num_experts_; }
  const std::vector<std::string>& domain_names() const { return domain_names_; }
  int64_t count(int d, int e) const {  // labelled assignments of domain d to expert e
    return counts_[static_cast<size_t>(d) * static_cast<size_t>(num_experts_) +
                   static_cast<size_t>(e)];
  }
  std::span<const int64_t> counts() const { return counts_; }                // [domains, E]
  std::span<const int64_t> expert_counts() const { return expert_; }         // [E] all assignments
  std::span<const int64_t> domain_tokens() const { return domain_tokens_; }  // [domains]
  int64_t tokens() const { return tokens_; }                                 // all tokens added
  int64_t unrouted_tokens() const { return unrouted_; }  // tokens with no assignment
  int64_t assignments() const { return assignments_; }   // all assignments added
  int64_t dropped() const { return dropped_; }

  RoutingSummary Summarize() const;

  // Fixed-width table for the terminal: one row per domain with its token count and the share (%)
  // of its assignments per expert, '*' before the domain's top expert; then the expert load row
  // and a line with balance, drops and the specialisation scores.
  std::string RenderTable(std::string_view title) const;

  // {"domains": [...], "num_experts": E, "counts": [[...]], "share": [[...]], "top_expert": [...],
  //  "domain_tokens": [...], "expert_counts": [...], "load": [...], "load_max_over_mean",
  //  "load_cv", "tokens", "assignments", "dropped", "drop_rate", "unrouted_rate", "h_domain",
  //  "h_expert", "mutual_information", "nmi", "domain_recovery"}.
  // Domain names from file names may be invalid UTF-8: dump() with error_handler_t::replace.
  nlohmann::json ToJson() const;

 private:
  std::vector<std::string> domain_names_;
  int num_experts_ = 0;
  std::vector<int64_t> counts_;         // [domains, E]
  std::vector<int64_t> expert_;         // [E]
  std::vector<int64_t> domain_tokens_;  // [domains]
  int64_t tokens_ = 0, unrouted_ = 0, assignments_ = 0, dropped_ = 0;
  std::vector<int32_t> per_token_;  // scratch: assignments per token of the current batch
};

}  // namespace moe::train
