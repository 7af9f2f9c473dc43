// Configuration of one Mixture-of-Experts layer. Architectures (Mixtral, Qwen-MoE, DeepSeek, ...)
// map their own config files onto these generic options; the layer never asks which one it is.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moe::mixture {

enum class RouterKind { kTokenChoice, kExpertChoice };
enum class ScoreFn { kSoftmax, kSigmoid };
// How a group's score is formed for group-limited selection: the sum of its two best experts'
// selection scores (DeepSeek-V3 noaux_tc) or its best one (DeepSeek-V2 group_limited_greedy).
enum class GroupScore { kTop2Sum, kMax };

struct MoeConfig {
  int64_t d_model = 0;     // D
  int64_t d_ff = 0;        // F: hidden size of each routed expert
  int64_t n_experts = 0;   // E
  int64_t top_k = 1;       // K: experts per token (token choice); sets capacity for expert choice

  RouterKind router = RouterKind::kTokenChoice;
  ScoreFn score = ScoreFn::kSoftmax;
  bool renormalize = true;        // divide the chosen gates by their sum (Mixtral; norm_topk_prob)
  double route_scale = 1.0;       // multiplies every routed gate (routed_scaling_factor)
  bool selection_bias = false;    // per-expert bias added for selection only (DeepSeek-V3)
  int64_t n_groups = 1;           // experts split into G equal groups ...
  int64_t topk_groups = 1;        // ... and only the best topk_groups groups are eligible
  GroupScore group_score = GroupScore::kTop2Sum;
  // Token choice: each expert keeps at most C = ceil(cf*T*K/E) assignments, 0 = dropless.
  // Expert choice: each expert takes C = round(cf*T*K/E) tokens (cf > 0 required).
  double capacity_factor = 0.0;
  double jitter = 0.0;            // training only: router input *= U(1-jitter, 1+jitter) (Switch)

  int64_t shared_d_ff = 0;        // hidden size of the always-on shared expert FFN (0 = none)
  bool shared_gate = false;       // scale the shared expert by sigmoid(x . w_sg) (Qwen2-MoE)

  double aux_loss_coef = 0.0;     // alpha of the Switch load-balancing loss
  double z_loss_coef = 0.0;       // beta of the router z-loss
  double bias_update_rate = 0.0;  // gamma of aux-loss-free balancing (needs selection_bias)

  // Throws moe::Error naming the field and value when the configuration is unusable.
  void Validate() const;
  std::string ToString() const;
};

std::string_view Name(RouterKind k);
std::string_view Name(ScoreFn s);
std::string_view Name(GroupScore g);
// Parse "token_choice"/"expert_choice", "softmax"/"sigmoid", "top2_sum"/"max"; Error otherwise.
RouterKind ParseRouterKind(std::string_view s);
ScoreFn ParseScoreFn(std::string_view s);
GroupScore ParseGroupScore(std::string_view s);

}  // namespace moe::mixture
