// Published Hugging Face architectures mapped onto the generic ModelConfig and weights: one file
// per family (mixtral.cc, llama.cc, qwen2.cc, qwen3_moe.cc, olmoe.cc, deepseek.cc) provides a
// config.json parser and the tensor-name layout; registry.cc lists them. Shared code never asks
// which architecture it runs: the parsers only fill generic options.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/tensor.h"
#include "moe/model/config.h"
#include "moe/model/hf_json.h"

namespace moe::model {

// One Hugging Face tensor (or a slice of it) that makes up part of a canonical tensor: an expert
// tensor maps to several (w13 -> gate and up of every expert).
struct HfPiece {
  std::string name;
  int64_t expert = -1;    // index into the leading [E] dim, -1 = whole tensor
  int64_t row_begin = 0;  // rows of the (per-expert) matrix
  int64_t row_end = -1;   // -1 = all
};

// Shape of a piece and its first element inside the canonical tensor (row-major, contiguous rows).
struct HfPieceSpan {
  std::vector<int64_t> shape;
  size_t offset = 0;  // elements
  size_t numel = 0;
};
HfPieceSpan SpanOf(const Tensor& canonical, const HfPiece& piece);

// Where an architecture keeps its FFN tensors inside `model.layers.<l>.` (attention, norms,
// embeddings and head have the same names in every supported family).
struct HfLayout {
  std::string moe_block = "mlp.";  // Mixtral: "block_sparse_moe."
  std::string router = "gate.weight";
  std::string selection_bias = "gate.e_score_correction_bias";
  std::string expert_gate = "gate_proj", expert_up = "up_proj",
              expert_down = "down_proj";  // Mixtral: w1 w3 w2
  std::string shared = "shared_expert.";  // DeepSeek: "shared_experts."
  std::string shared_gate = "shared_expert_gate.weight";
};

// The Hugging Face pieces of canonical tensor `canonical` ("layers.3.moe.w13") under `layout`.
std::vector<HfPiece> LayoutNames(const HfLayout& layout, const ModelConfig& cfg,
                                 const std::string& canonical);

struct Architecture {
  std::string_view name;  // the `architectures` entry of config.json
  ModelConfig (*parse)(const HfJson& j);
  HfLayout layout;
  // Tensors a published file may hold that this model does not use (e.g. rotary caches, tied
  // heads, DeepSeek-V3's multi-token-prediction layers); anything else unused is an Error.
  bool (*skippable)(const ModelConfig& cfg, std::string_view hf_name) = nullptr;
};

// Error listing the supported names when `name` is not one of them; origin names the file.
const Architecture& FindArchitecture(std::string_view name, const std::string& origin);
std::vector<std::string_view> ArchitectureNames();
// Parses a config.json object: reads `architectures`, finds it, runs its parser.
ModelConfig ParseHfConfig(const nlohmann::json& j, const std::string& origin,
                          const Architecture** arch = nullptr);

// Helpers for the architecture files.
namespace arch {
// Fields every Llama-like config has: vocab, hidden, layers, heads, kv heads, head_dim, positions,
// rope theta and scaling, norm eps, tie, bos/eos ids, hidden_act (must be silu), sliding_window
// (when use_sliding_window is not false).
void ParseCommon(const HfJson& j, ModelConfig& c);
// Finalize with errors prefixed by the file name.
void Finish(const HfJson& j, ModelConfig& c);
// Qwen2-MoE / Qwen3-MoE layer pattern from decoder_sparse_step + mlp_only_layers (needs
// moe.n_experts and n_layers set).
void QwenMoeLayers(const HfJson& j, ModelConfig& c);
// True for "...rotary_emb.inv_freq" (older checkpoints store the RoPE cache).
bool IsRotaryCache(std::string_view hf_name);

ModelConfig ParseMixtral(const HfJson& j);
ModelConfig ParseLlama(const HfJson& j);
ModelConfig ParseMistral(const HfJson& j);
ModelConfig ParseQwen2(const HfJson& j);
ModelConfig ParseQwen2Moe(const HfJson& j);
ModelConfig ParseQwen3Moe(const HfJson& j);
ModelConfig ParseOlmoe(const HfJson& j);
ModelConfig ParseDeepseekV2(const HfJson& j);
ModelConfig ParseDeepseekV3(const HfJson& j);
bool SkipDense(const ModelConfig& cfg, std::string_view hf_name);
bool SkipDeepseek(const ModelConfig& cfg, std::string_view hf_name);
}  // namespace arch

}  // namespace moe::model
