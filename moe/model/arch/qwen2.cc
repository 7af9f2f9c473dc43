// Qwen2ForCausalLM (dense) and Qwen2MoeForCausalLM. Both have biases on q, k, v (not o).
// Qwen2-MoE: experts of moe_intermediate_size under `mlp.experts.<e>`, softmax top-K renormalised
// only when norm_topk_prob, one shared expert of shared_expert_intermediate_size scaled by
// sigmoid(x . shared_expert_gate); layers listed in mlp_only_layers, or with
// (l + 1) % decoder_sparse_step != 0, are dense SwiGLUs of intermediate_size.
#include "moe/model/arch/arch.h"

namespace moe::model::arch {

ModelConfig ParseQwen2(const HfJson& j) {
  ModelConfig c;
  ParseCommon(j, c);
  c.moe_every = 0;
  c.dense_d_ff = j.Get<int64_t>("intermediate_size");
  c.qkv_bias = true;
  Finish(j, c);
  return c;
}

ModelConfig ParseQwen2Moe(const HfJson& j) {
  ModelConfig c;
  ParseCommon(j, c);
  c.qkv_bias = true;
  c.dense_d_ff = j.Get<int64_t>("intermediate_size");
  auto& m = c.moe;
  m.n_experts = j.Get<int64_t>("num_experts");
  m.top_k = j.Get<int64_t>("num_experts_per_tok");
  m.d_ff = j.Get<int64_t>("moe_intermediate_size");
  m.renormalize = j.GetOr<bool>("norm_topk_prob", false);
  m.shared_d_ff = j.GetOr<int64_t>("shared_expert_intermediate_size", 0);
  m.shared_gate = m.shared_d_ff > 0;
  QwenMoeLayers(j, c);
  Finish(j, c);
  return c;
}

}  // namespace moe::model::arch
