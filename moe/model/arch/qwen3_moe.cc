// Qwen3MoeForCausalLM: explicit head_dim, RMSNorm of q and k per head (over head_dim) before RoPE,
// optional attention_bias (q, k, v, o), no shared expert; softmax top-K renormalised when
// norm_topk_prob; decoder_sparse_step + mlp_only_layers as Qwen2-MoE.
#include "moe/model/arch/arch.h"

namespace moe::model::arch {

ModelConfig ParseQwen3Moe(const HfJson& j) {
  ModelConfig c;
  ParseCommon(j, c);
  c.qkv_bias = c.o_bias = j.GetOr<bool>("attention_bias", false);
  c.qk_norm = QkNorm::kPerHead;
  c.dense_d_ff = j.GetOr<int64_t>("intermediate_size", 0);
  auto& m = c.moe;
  m.n_experts = j.Get<int64_t>("num_experts");
  m.top_k = j.Get<int64_t>("num_experts_per_tok");
  m.d_ff = j.Get<int64_t>("moe_intermediate_size");
  m.renormalize = j.GetOr<bool>("norm_topk_prob", false);
  QwenMoeLayers(j, c);
  Finish(j, c);
  return c;
}

}  // namespace moe::model::arch
