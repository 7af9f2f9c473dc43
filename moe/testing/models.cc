#include "moe/testing/models.h"

#include "moe/core/rng.h"

namespace moe::testing {

RandomModel RandomMoeModel(bool qwen2_moe, int64_t vocab) {
  RandomModel r;
  model::ModelConfig& c = r.cfg;
  c.vocab_size = vocab;
  c.d_model = 256;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq = 64;
  c.moe.n_experts = 4;
  c.moe.top_k = 2;
  c.moe.d_ff = 256;
  if (qwen2_moe) {
    c.architecture = "Qwen2MoeForCausalLM";
    c.qkv_bias = true;
    c.moe.renormalize = false;
    c.moe.shared_d_ff = 256;
    c.moe.shared_gate = true;
  }
  c.Finalize();
  Rng rng(7);
  r.w.InitRandom(c, DType::kF32, rng);
  return r;
}

}  // namespace moe::testing
