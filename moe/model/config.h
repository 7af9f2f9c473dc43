// Configuration of a decoder-only transformer whose FFNs are MoE layers (every layer, every n-th,
// or an explicit per-layer pattern, with dense SwiGLU FFNs between). Published architectures
// (moe/model/arch/) map their config.json onto these generic options; the transformer never asks
// which architecture it runs. Saved as a Hugging Face config.json in the Mixtral layout, with
// extra keys for the options Mixtral lacks (see docs/FORMATS.md).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "moe/kernels/rope.h"
#include "moe/mixture/config.h"

namespace moe::model {

// RMSNorm of the projected queries and keys before RoPE: none, per head over Dh (Qwen3-MoE), or
// over the whole projection width H*Dh / Hkv*Dh (OLMoE).
enum class QkNorm : uint8_t { kNone, kPerHead, kFull };
std::string_view Name(QkNorm n);

// Multi-head latent attention (DeepSeek-V2/V3), enabled when kv_lora_rank > 0:
//   q     = x Wq^T                                   (q_lora_rank == 0)
//         = RMSNorm(x Wq_a^T) Wq_b^T                 [T, H*(Dn+Dr)]
//   [c, kpe] = x Wkv_a^T                             [T, Rkv + Dr]
//   [k_nope, v] = RMSNorm(c) Wkv_b^T                 [T, H*(Dn+Dv)]
//   k = [k_nope, RoPE(kpe)] (kpe shared by all heads), q = [q_nope, RoPE(q_pe)]
// Attention then runs with H kv heads, key width Dn+Dr (= head_dim) and value width Dv.
struct MlaConfig {
  int64_t q_lora_rank = 0;        // Rq (0 = q projected straight from x)
  int64_t kv_lora_rank = 0;       // Rkv (0 = no MLA)
  int64_t qk_nope_head_dim = 0;   // Dn
  int64_t qk_rope_head_dim = 0;   // Dr
  int64_t v_head_dim = 0;         // Dv
  double latent_norm_eps = 1e-6;  // eps of the q_a / kv_a RMSNorms
  bool enabled() const { return kv_lora_rank > 0; }
};

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
  // Explicit per-layer FFN kind (1 = MoE, 0 = dense) overriding moe_every when non-empty:
  // Qwen2-MoE's decoder_sparse_step + mlp_only_layers, DeepSeek's first_k_dense_replace +
  // moe_layer_freq.
  std::vector<uint8_t> moe_layers;
  int32_t bos_id = -1;         // -1 = none
  int32_t eos_id = -1;

  // Attention options (training supports rope options only; the others are inference-only).
  bool qkv_bias = false;  // q/k/v projections have biases (Qwen2)
  bool o_bias = false;    // the output projection has a bias
  QkNorm qk_norm = QkNorm::kNone;
  double clip_qkv = 0;     // clamp q, k, v to [-c, c] after projection (and q/k norm); 0 = off
  int64_t rotary_dim = 0;  // dims of each head that RoPE rotates (0 = all: head_dim)
  kernels::RopePairing rope_pairing = kernels::RopePairing::kHalf;
  kernels::RopeScaling rope_scaling;
  double attn_scale = 0;       // softmax scale (0 = 1/sqrt(head_dim))
  int64_t sliding_window = 0;  // 0 = none; else each query attends the last this many positions
  MlaConfig mla;
  std::string architecture;  // Hugging Face architecture this config came from (display only)

  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  int64_t q_dim() const { return n_heads * head_dim; }
  // Value width of one head (MLA: v_head_dim; otherwise head_dim).
  int64_t v_head_dim() const { return mla.enabled() ? mla.v_head_dim : head_dim; }
  // RoPE: rotated dims and their first dim in each q/k head.
  int64_t rope_dim() const;
  int64_t rope_offset() const { return mla.enabled() ? mla.qk_nope_head_dim : 0; }
  double softmax_scale() const;
  bool IsMoeLayer(int64_t layer) const {
    if (!moe_layers.empty()) return moe_layers[static_cast<size_t>(layer)] != 0;
    return moe_every > 0 && (layer + 1) % moe_every == 0;
  }
  int64_t NumMoeLayers() const;
  // Options Transformer::Forward/Backward (training) cannot run, joined by ", "; empty if none.
  std::string TrainingUnsupported() const;

  // Fills derived fields (head_dim, moe.d_model) and checks everything; Error names the field.
  void Finalize();
  void Validate() const;

  // Parameters: total, and those one token uses (router + K routed experts + shared, per MoE layer).
  int64_t TotalParams() const;
  int64_t ActiveParams() const;
  std::string Summary() const;
};

// Parameters by part, from the config alone (no weights needed); doubles so that absurd configs
// cannot overflow. Active = what one token reads (K of E routed experts).
struct ParamCounts {
  double embed = 0;           // token embedding
  double head = 0;            // LM head (0 when tied)
  double attention = 0;       // projections, their biases and q/k / latent norms
  double norms = 0;           // per-layer input/post-attention norms and the final norm
  double dense_ffn = 0;       // dense SwiGLU layers
  double router = 0;          // router weights (+ selection biases, shared gates)
  double experts = 0;         // routed experts, all
  double experts_active = 0;  // routed experts one token uses (K per MoE layer)
  double shared = 0;          // shared experts
  double total() const {
    return embed + head + attention + norms + dense_ffn + router + experts + shared;
  }
  double active() const { return total() - experts + experts_active; }
};
ParamCounts CountParams(const ModelConfig& cfg);

// Hugging Face config.json (MixtralForCausalLM) <-> ModelConfig. FromHfJson accepts what ToHfJson
// writes; unknown router options are Errors naming the key. `origin` names the file in errors.
nlohmann::json ToHfJson(const ModelConfig& cfg);
ModelConfig FromHfJson(const nlohmann::json& j, const std::string& origin);

// Named model shapes for `moe train --preset`: tiny (demo), small; dense variants for comparisons.
ModelConfig ModelPreset(const std::string& name);
std::string ModelPresetNames();

}  // namespace moe::model
