// OlmoeForCausalLM: RMSNorm of the whole q and k projections (widths H*Dh and Hkv*Dh) before RoPE,
// optional clip_qkv, every layer MoE with experts of intermediate_size under `mlp.experts.<e>`,
// softmax top-K renormalised only when norm_topk_prob.
#include "moe/model/arch/arch.h"

namespace moe::model::arch {

ModelConfig ParseOlmoe(const HfJson& j) {
  ModelConfig c;
  ParseCommon(j, c);
  c.qkv_bias = c.o_bias = j.GetOr<bool>("attention_bias", false);
  c.qk_norm = QkNorm::kFull;
  c.clip_qkv = j.GetOr<double>("clip_qkv", 0.0);
  auto& m = c.moe;
  m.n_experts = j.Get<int64_t>("num_experts");
  m.top_k = j.Get<int64_t>("num_experts_per_tok");
  m.d_ff = j.Get<int64_t>("intermediate_size");
  m.renormalize = j.GetOr<bool>("norm_topk_prob", false);
  c.moe_every = 1;
  Finish(j, c);
  return c;
}

}  // namespace moe::model::arch
