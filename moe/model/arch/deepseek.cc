// DeepseekV2ForCausalLM and DeepseekV3ForCausalLM (DeepSeek's published modeling_deepseek.py).
//
// Attention is multi-head latent attention (MlaConfig) with RoPE on the last qk_rope_head_dim dims
// of every q/k head. DeepSeek's code de-interleaves q_pe/k_pe ((2i, 2i+1) -> (i, i + r/2)) and then
// applies rotate_half; q and k get the same permutation, so q.k equals RoPE with interleaved pairs
// applied in place, which is what we run. With rope_scaling yarn, cos/sin carry
// mscale(factor, mscale) / mscale(factor, mscale_all_dim) (the kernel's YaRN) and the softmax scale
// is (Dn+Dr)^-1/2 * mscale(factor, mscale_all_dim)^2.
//
// FFN: layer l is MoE when n_routed_experts is set, l >= first_k_dense_replace and
// l % moe_layer_freq == 0; else a dense SwiGLU of intermediate_size. Shared experts
// (n_shared_experts x moe_intermediate_size) are one SwiGLU under `mlp.shared_experts`.
// Routing by topk_method:
//   greedy                softmax, top-K of all experts                       (V2)
//   group_limited_greedy  softmax, best topk_group groups by their max score  (V2)
//   noaux_tc              sigmoid; selection score = score + e_score_correction_bias; groups ranked
//                         by the sum of their two best selection scores; gates = unbiased scores
//                         (V3)
// V2 renormalises the chosen gates when norm_topk_prob (and K > 1) and otherwise multiplies them
// by routed_scaling_factor; V3 renormalises when norm_topk_prob (and K > 1) and always multiplies.
#include <cmath>

#include "moe/model/arch/arch.h"

namespace moe::model::arch {

namespace {

ModelConfig ParseDeepseek(const HfJson& j, bool v3) {
  ModelConfig c;
  ParseCommon(j, c);
  c.head_dim =
      0;  // = qk_nope_head_dim + qk_rope_head_dim (some configs store qk_rope_head_dim here)
  c.n_kv_heads = c.n_heads;
  if (j.GetOr<bool>("attention_bias", false))
    j.Unsupported("attention_bias", "MLA projection biases");
  MlaConfig& a = c.mla;
  a.q_lora_rank = j.GetOr<int64_t>("q_lora_rank", 0);
  a.kv_lora_rank = j.Get<int64_t>("kv_lora_rank");
  MOE_CHECK(a.kv_lora_rank >= 1, "config", "{}: kv_lora_rank = {} must be >= 1", j.origin(),
            a.kv_lora_rank);
  a.qk_nope_head_dim = j.Get<int64_t>("qk_nope_head_dim");
  a.qk_rope_head_dim = j.Get<int64_t>("qk_rope_head_dim");
  a.v_head_dim = j.Get<int64_t>("v_head_dim");
  c.rope_pairing = kernels::RopePairing::kInterleaved;
  double scale = 1.0 / std::sqrt(static_cast<double>(a.qk_nope_head_dim + a.qk_rope_head_dim));
  if (c.rope_scaling.kind == kernels::RopeScalingKind::kYarn &&
      c.rope_scaling.mscale_all_dim != 0) {
    const double m = kernels::YarnMscale(c.rope_scaling.factor, c.rope_scaling.mscale_all_dim);
    scale *= m * m;
  }
  c.attn_scale = scale;

  c.dense_d_ff = j.Get<int64_t>("intermediate_size");
  const int64_t n_routed = j.GetOr<int64_t>("n_routed_experts", 0);
  auto& m = c.moe;
  if (n_routed > 0) {
    m.n_experts = n_routed;
    m.top_k = j.Get<int64_t>("num_experts_per_tok");
    m.d_ff = j.Get<int64_t>("moe_intermediate_size");
    m.shared_d_ff = m.d_ff * j.GetOr<int64_t>("n_shared_experts", 0);
    const std::string method = j.GetOr<std::string>("topk_method", v3 ? "noaux_tc" : "greedy");
    const std::string scoring = j.GetOr<std::string>("scoring_func", v3 ? "sigmoid" : "softmax");
    const bool norm = j.GetOr<bool>("norm_topk_prob", false) && m.top_k > 1;
    const double rsf = j.GetOr<double>("routed_scaling_factor", 1.0);
    if (!v3) {
      if (scoring != "softmax") j.Unsupported("scoring_func", "DeepseekV2 supports softmax");
      m.score = mixture::ScoreFn::kSoftmax;
      if (method == "greedy") {
        m.n_groups = m.topk_groups = 1;
      } else if (method == "group_limited_greedy") {
        m.n_groups = j.Get<int64_t>("n_group");
        m.topk_groups = j.Get<int64_t>("topk_group");
        m.group_score = mixture::GroupScore::kMax;
      } else {
        j.Unsupported("topk_method", "DeepseekV2 supports greedy, group_limited_greedy");
      }
      m.renormalize = norm;
      m.route_scale = norm ? 1.0 : rsf;
    } else {
      if (scoring != "sigmoid") j.Unsupported("scoring_func", "DeepseekV3 supports sigmoid");
      if (method != "noaux_tc") j.Unsupported("topk_method", "DeepseekV3 supports noaux_tc");
      m.score = mixture::ScoreFn::kSigmoid;
      m.selection_bias = true;
      m.n_groups = j.GetOr<int64_t>("n_group", 1);
      m.topk_groups = j.GetOr<int64_t>("topk_group", 1);
      m.group_score = mixture::GroupScore::kTop2Sum;
      m.renormalize = norm;
      m.route_scale = rsf;
    }
    const int64_t first_dense = j.GetOr<int64_t>("first_k_dense_replace", 0);
    const int64_t freq = j.GetOr<int64_t>("moe_layer_freq", 1);
    MOE_CHECK(freq >= 1, "config", "{}: moe_layer_freq = {} must be >= 1", j.origin(), freq);
    MOE_CHECK(c.n_layers >= 1 && c.n_layers <= 4096, "config",
              "{}: num_hidden_layers = {} not in 1..4096", j.origin(), c.n_layers);
    c.moe_layers.assign(static_cast<size_t>(c.n_layers), 0);
    for (int64_t l = 0; l < c.n_layers; ++l)
      c.moe_layers[static_cast<size_t>(l)] = l >= first_dense && l % freq == 0 ? 1 : 0;
  } else {
    c.moe_every = 0;
  }
  Finish(j, c);
  return c;
}

}  // namespace

ModelConfig ParseDeepseekV2(const HfJson& j) { return ParseDeepseek(j, false); }
ModelConfig ParseDeepseekV3(const HfJson& j) { return ParseDeepseek(j, true); }

// Rotary caches, and DeepSeek-V3's multi-token-prediction layers stored after the last layer.
bool SkipDeepseek(const ModelConfig& cfg, std::string_view hf_name) {
  if (SkipDense(cfg, hf_name)) return true;
  constexpr std::string_view kLayers = "model.layers.";
  if (!hf_name.starts_with(kLayers)) return false;
  int64_t layer = 0;
  size_t i = kLayers.size();
  if (i >= hf_name.size() || hf_name[i] < '0' || hf_name[i] > '9') return false;
  for (; i < hf_name.size() && hf_name[i] >= '0' && hf_name[i] <= '9' && layer < (int64_t{1} << 40);
       ++i)
    layer = layer * 10 + (hf_name[i] - '0');
  return layer >= cfg.n_layers;
}

}  // namespace moe::model::arch
