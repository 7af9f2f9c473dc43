// LlamaForCausalLM and MistralForCausalLM: dense SwiGLU decoders. Llama's attention_bias puts
// biases on q, k, v and o; rope_scaling (linear, llama3, yarn) and an explicit head_dim are
// honoured. Mistral's sliding_window limits attention to the last `sliding_window` positions.
#include "moe/model/arch/arch.h"

namespace moe::model::arch {

namespace {
ModelConfig ParseDense(const HfJson& j) {
  ModelConfig c;
  ParseCommon(j, c);
  c.moe_every = 0;
  c.dense_d_ff = j.Get<int64_t>("intermediate_size");
  c.qkv_bias = c.o_bias = j.GetOr<bool>("attention_bias", false);
  Finish(j, c);
  return c;
}
}  // namespace

ModelConfig ParseLlama(const HfJson& j) { return ParseDense(j); }
ModelConfig ParseMistral(const HfJson& j) { return ParseDense(j); }

}  // namespace moe::model::arch
