// MixtralForCausalLM (Mixtral 8x7B / 8x22B): every layer MoE under `block_sparse_moe` with experts
// w1 (gate), w3 (up), w2 (down); softmax top-K with renormalisation. This is also the layout moe's
// own training checkpoints are written in, with the extra keys of docs/FORMATS.md (FromHfJson).
#include "moe/model/arch/arch.h"

namespace moe::model::arch {

ModelConfig ParseMixtral(const HfJson& j) { return FromHfJson(j.json(), j.origin()); }

}  // namespace moe::model::arch
