// Configuration of a decoder-only transformer whose FFNs are MoE layers (every layer, or every n-th
// with dense SwiGLU FFNs between). Saved as a Hugging Face config.json in the Mixtral layout, with
// extra keys for the options Mixtral lacks (see docs/FORMATS.md).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "moe/mixture/config.h"

namespace moe::model {

struct ModelConfig {
  int64_t vocab_size = 0;      // V
  int64_t d_model = 0;         // D
  int64_t n_layers = 0;        // L
  int64_t n_heads = 0;         // H
  int64_t n_kv_heads = 0;      // Hkv (grouped-query attention; H % Hkv == 0)
  int64_t head_dim = 0;        // Dh (0 = D / H)
  int64_t max_seq = 0;         // longest context (positions 0..max_seq-1)
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = false; // LM head shares the embedding table
  int64_t dense_d_ff = 0;      // hidden width of the dense SwiGLU FFN layers
  // Layer l has an MoE FFN when moe_every > 0 and (l + 1) % moe_every == 0 (Qwen-MoE's
  // decoder_sparse_step); other layers are dense. 0 = a dense model.
  int64_t moe_every = 1;
  mixture::MoeConfig moe;      // the router and experts of every MoE layer (moe.d_model == d_model)
  int32_t bos_id = -1;         // -1 = none
  int32_t eos_id = -1;

  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  int64_t q_dim() const { return n_heads * head_dim; }
  bool IsMoeLayer(int64_t layer) const { return moe_every > 0 && (layer + 1) % moe_every == 0; }
  int64_t NumMoeLayers() const;

  // Fills derived fields (head_dim, moe.d_model) and checks everything; Error names the field.
  void Finalize();
  void Validate() const;

  // Parameters: total, and those one token uses (router + K routed experts + shared, per MoE layer).
  int64_t TotalParams() const;
  int64_t ActiveParams() const;
  std::string Summary() const;
};

// Hugging Face config.json (MixtralForCausalLM) <-> ModelConfig. FromHfJson accepts what ToHfJson
// writes; unknown router options are Errors naming the key. `origin` names the file in errors.
nlohmann::json ToHfJson(const ModelConfig& cfg);
ModelConfig FromHfJson(const nlohmann::json& j, const std::string& origin);

// Named model shapes for `moe train --preset`: tiny (demo), small; dense variants for comparisons.
ModelConfig ModelPreset(const std::string& name);
std::string ModelPresetNames();

}  // namespace moe::model
