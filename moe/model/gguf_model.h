// GGUF model files (the llama.cpp layout) <-> ModelConfig + ModelWeights + TokenizerSpec.
//
// Architectures (`general.architecture`): llama (dense Llama/Mistral and Mixtral-style MoE, with
// merged `blk.N.ffn_{gate,up,down}_exps` or older per-expert `blk.N.ffn_gate.E.weight` tensors),
// qwen2, qwen2moe (shared expert + ffn_gate_inp_shexp), qwen3moe (attn_q_norm/attn_k_norm per
// head), olmoe (full-width q/k norms) and deepseek2 (DeepSeek-V2/V3: MLA with attn_kv_b, softmax
// or sigmoid routing with groups and selection bias). Hyper-parameters come from `<arch>.*` keys.
//
// llama-arch files store the rows of attn_q / attn_k permuted for ggml's interleaved RoPE (pairs
// (2i, 2i+1) of each head) where Hugging Face rotates halves (i, i + Dh/2); the loader undoes the
// permutation and the writer applies it, so the transformer always runs the rotate-half pairing.
//
// Every supported tensor type (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) is dequantised to f32
// at load: memory is 4 bytes per parameter. Keeping quantised weights in memory (QuantMatMul) is a
// later step.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "moe/model/config.h"
#include "moe/model/weights.h"
#include "moe/tokenizer/spec.h"

namespace moe::model {

struct GgufModel {
  ModelConfig config;
  ModelWeights weights;
  std::string architecture;                           // general.architecture
  std::optional<tokenizer::TokenizerSpec> tokenizer;  // when the file embeds one
  std::string chat_template;                          // tokenizer.chat_template ("" when absent)
};

GgufModel LoadGgufModel(const std::string& path);

// The GGUF architectures LoadGgufModel reads, joined by ", ".
std::string GgufArchitectureNames();

// Weight-type schemes of `moe quantize` (docs/FORMATS.md lists the per-tensor rule).
enum class GgufScheme : uint8_t { kF32, kF16, kQ8_0, kQ4_0, kQ4_K_M, kQ5_K_M };
GgufScheme ParseGgufScheme(std::string_view name);  // "Q4_K_M", ...; Error listing the names
std::string_view Name(GgufScheme s);

struct GgufSaveOptions {
  GgufScheme scheme = GgufScheme::kF32;
  const tokenizer::TokenizerSpec* tokenizer = nullptr;  // written when set (and representable)
  std::string chat_template;
  std::string name;  // general.name
  // Called once per tensor written: (index, count, gguf name, ggml type name).
  std::function<void(size_t, size_t, const std::string&, std::string_view)> progress;
  // Called with a message when the tokenizer cannot be written (it is then skipped).
  std::function<void(const std::string&)> warn;
};

// Writes cfg + weights as a GGUF file (atomic: path.tmp then rename). The GGUF architecture comes
// from cfg.architecture (Mixtral/Llama/Mistral -> llama, Qwen2 -> qwen2, Qwen2-MoE -> qwen2moe,
// Qwen3-MoE -> qwen3moe, OLMoE -> olmoe, DeepSeek-V2/V3 -> deepseek2; a moe-trained model ->
// llama when it fits). Options a
// GGUF architecture cannot express are an Error naming them.
void SaveGgufModel(const ModelConfig& cfg, ModelWeights& weights, const std::string& path,
                   const GgufSaveOptions& opts = {});

}  // namespace moe::model
