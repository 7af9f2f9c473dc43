#include "moe/mixture/config.h"

#include <cmath>

#include "moe/core/error.h"

namespace moe::mixture {

namespace {
constexpr int64_t kMaxDim = int64_t{1} << 20;
constexpr int64_t kMaxExperts = int64_t{1} << 16;
}  // namespace

void MoeConfig::Validate() const {
  constexpr std::string_view kTag = "moe";
  MOE_CHECK(d_model >= 1 && d_model <= kMaxDim, kTag, "d_model = {} not in 1..{}", d_model, kMaxDim);
  MOE_CHECK(d_ff >= 1 && d_ff <= kMaxDim, kTag, "d_ff = {} not in 1..{}", d_ff, kMaxDim);
  MOE_CHECK(n_experts >= 1 && n_experts <= kMaxExperts, kTag, "n_experts = {} not in 1..{}",
            n_experts, kMaxExperts);
  MOE_CHECK(top_k >= 1 && top_k <= n_experts, kTag, "top_k = {} not in 1..n_experts ({})", top_k,
            n_experts);
  MOE_CHECK(std::isfinite(capacity_factor) && capacity_factor >= 0, kTag,
            "capacity_factor = {} must be >= 0 (0 = dropless)", capacity_factor);
  MOE_CHECK(std::isfinite(route_scale) && route_scale > 0, kTag, "route_scale = {} must be > 0",
            route_scale);
  MOE_CHECK(std::isfinite(jitter) && jitter >= 0 && jitter < 1, kTag, "jitter = {} not in [0, 1)",
            jitter);
  MOE_CHECK(n_groups >= 1 && n_experts % n_groups == 0, kTag,
            "n_groups = {} must be >= 1 and divide n_experts = {}", n_groups, n_experts);
  MOE_CHECK(topk_groups >= 1 && topk_groups <= n_groups, kTag,
            "topk_groups = {} not in 1..n_groups ({})", topk_groups, n_groups);
  if (n_groups > 1) {
    MOE_CHECK(router == RouterKind::kTokenChoice, kTag,
              "group-limited selection (n_groups = {}) needs router = token_choice", n_groups);
    MOE_CHECK(top_k <= topk_groups * (n_experts / n_groups), kTag,
              "top_k = {} exceeds the experts in topk_groups = {} groups of {}", top_k, topk_groups,
              n_experts / n_groups);
  }
  if (router == RouterKind::kExpertChoice) {
    MOE_CHECK(capacity_factor > 0, kTag, "expert choice needs capacity_factor > 0 (got {})",
              capacity_factor);
    MOE_CHECK(!renormalize, kTag,
              "renormalize = true has no meaning for expert choice (a token may get 0..E experts)");
  }
  MOE_CHECK(shared_d_ff >= 0 && shared_d_ff <= kMaxDim, kTag, "shared_d_ff = {} not in 0..{}",
            shared_d_ff, kMaxDim);
  MOE_CHECK(!shared_gate || shared_d_ff > 0, kTag, "shared_gate needs shared_d_ff > 0");
  MOE_CHECK(std::isfinite(aux_loss_coef) && aux_loss_coef >= 0, kTag,
            "aux_loss_coef = {} must be >= 0", aux_loss_coef);
  MOE_CHECK(std::isfinite(z_loss_coef) && z_loss_coef >= 0, kTag, "z_loss_coef = {} must be >= 0",
            z_loss_coef);
  MOE_CHECK(std::isfinite(bias_update_rate) && bias_update_rate >= 0, kTag,
            "bias_update_rate = {} must be >= 0", bias_update_rate);
  MOE_CHECK(bias_update_rate == 0 || selection_bias, kTag,
            "bias_update_rate = {} needs selection_bias = true", bias_update_rate);
}

std::string MoeConfig::ToString() const {
  return fmt::format(
      "MoE(D={} F={} E={} K={} router={} score={} renorm={} scale={} bias={} groups={}/{} cf={} "
      "shared_F={}{} aux={} z={})",
      d_model, d_ff, n_experts, top_k, Name(router), Name(score), renormalize, route_scale,
      selection_bias, topk_groups, n_groups, capacity_factor, shared_d_ff,
      shared_gate ? " gated" : "", aux_loss_coef, z_loss_coef);
}

std::string_view Name(RouterKind k) {
  return k == RouterKind::kTokenChoice ? "token_choice" : "expert_choice";
}
std::string_view Name(ScoreFn s) { return s == ScoreFn::kSoftmax ? "softmax" : "sigmoid"; }
std::string_view Name(GroupScore g) { return g == GroupScore::kTop2Sum ? "top2_sum" : "max"; }

RouterKind ParseRouterKind(std::string_view s) {
  if (s == "token_choice" || s == "topk") return RouterKind::kTokenChoice;
  if (s == "expert_choice") return RouterKind::kExpertChoice;
  Fail("moe", "router '{}' is not one of token_choice, expert_choice", s);
}
ScoreFn ParseScoreFn(std::string_view s) {
  if (s == "softmax") return ScoreFn::kSoftmax;
  if (s == "sigmoid") return ScoreFn::kSigmoid;
  Fail("moe", "score function '{}' is not one of softmax, sigmoid", s);
}
GroupScore ParseGroupScore(std::string_view s) {
  if (s == "top2_sum") return GroupScore::kTop2Sum;
  if (s == "max") return GroupScore::kMax;
  Fail("moe", "group score '{}' is not one of top2_sum, max", s);
}

}  // namespace moe::mixture
