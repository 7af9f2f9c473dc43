#include "moe/model/config.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "moe/core/error.h"

namespace moe::model {

namespace {
constexpr int64_t kMaxDim = int64_t{1} << 20;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr std::string_view kTag = "model";
}  // namespace

int64_t ModelConfig::NumMoeLayers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < n_layers; ++l) n += IsMoeLayer(l) ? 1 : 0;
  return n;
}

void ModelConfig::Finalize() {
  if (head_dim == 0 && n_heads > 0) head_dim = d_model / n_heads;
  if (n_kv_heads == 0) n_kv_heads = n_heads;
  moe.d_model = d_model;
  Validate();
}

void ModelConfig::Validate() const {
  MOE_CHECK(vocab_size >= 1 && vocab_size <= kMaxVocab, kTag, "vocab_size = {} not in 1..{}", vocab_size, kMaxVocab);
  MOE_CHECK(d_model >= 1 && d_model <= kMaxDim, kTag, "d_model = {} not in 1..{}", d_model, kMaxDim);
  MOE_CHECK(n_layers >= 1 && n_layers <= kMaxLayers, kTag, "n_layers = {} not in 1..{}", n_layers, kMaxLayers);
  MOE_CHECK(n_heads >= 1 && n_heads <= 4096, kTag, "n_heads = {} not in 1..4096", n_heads);
  MOE_CHECK(n_kv_heads >= 1 && n_heads % n_kv_heads == 0, kTag,
            "n_kv_heads = {} must be >= 1 and divide n_heads = {}", n_kv_heads, n_heads);
  MOE_CHECK(head_dim >= 2 && head_dim % 2 == 0 && head_dim <= 4096, kTag,
            "head_dim = {} must be even and in 2..4096", head_dim);
  MOE_CHECK(max_seq >= 1 && max_seq <= (int64_t{1} << 24), kTag, "max_seq = {} not in 1..2^24", max_seq);
  MOE_CHECK(std::isfinite(rope_theta) && rope_theta > 1, kTag, "rope_theta = {} must be > 1", rope_theta);
  MOE_CHECK(std::isfinite(norm_eps) && norm_eps > 0 && norm_eps < 1, kTag, "norm_eps = {} not in (0, 1)", norm_eps);
  MOE_CHECK(moe_every >= 0 && moe_every <= n_layers, kTag, "moe_every = {} not in 0..n_layers ({})", moe_every, n_layers);
  const bool has_dense = NumMoeLayers() < n_layers;
  MOE_CHECK(!has_dense || (dense_d_ff >= 1 && dense_d_ff <= kMaxDim), kTag,
            "dense_d_ff = {} must be in 1..{} when some layers are dense (moe_every = {})", dense_d_ff,
            kMaxDim, moe_every);
  if (NumMoeLayers() > 0) {
    MOE_CHECK(moe.d_model == d_model, kTag, "moe.d_model = {} differs from d_model = {}", moe.d_model, d_model);
    moe.Validate();
  }
  MOE_CHECK(bos_id >= -1 && bos_id < vocab_size, kTag, "bos_id = {} not in -1..vocab_size-1", bos_id);
  MOE_CHECK(eos_id >= -1 && eos_id < vocab_size, kTag, "eos_id = {} not in -1..vocab_size-1", eos_id);
}

int64_t ModelConfig::TotalParams() const {
  const int64_t attn = d_model * q_dim() * 2 + d_model * kv_dim() * 2 + 2 * d_model;
  const int64_t dense = 3 * d_model * dense_d_ff;
  const int64_t moe_p = moe.n_experts * (d_model + 3 * d_model * moe.d_ff) + 3 * d_model * moe.shared_d_ff +
                        (moe.shared_gate ? d_model : 0);
  int64_t total = vocab_size * d_model * (tie_embeddings ? 1 : 2) + d_model;
  for (int64_t l = 0; l < n_layers; ++l) total += attn + (IsMoeLayer(l) ? moe_p : dense);
  return total;
}

int64_t ModelConfig::ActiveParams() const {
  const int64_t attn = d_model * q_dim() * 2 + d_model * kv_dim() * 2 + 2 * d_model;
  const int64_t dense = 3 * d_model * dense_d_ff;
  const int64_t moe_p = moe.n_experts * d_model + moe.top_k * 3 * d_model * moe.d_ff +
                        3 * d_model * moe.shared_d_ff + (moe.shared_gate ? d_model : 0);
  int64_t total = vocab_size * d_model * (tie_embeddings ? 1 : 2) + d_model;
  for (int64_t l = 0; l < n_layers; ++l) total += attn + (IsMoeLayer(l) ? moe_p : dense);
  return total;
}

std::string ModelConfig::Summary() const {
  std::string s = fmt::format("{} layers, D={} H={}/{} Dh={} V={} ctx={}", n_layers, d_model, n_heads,
                              n_kv_heads, head_dim, vocab_size, max_seq);
  if (NumMoeLayers() > 0) {
    s += fmt::format(", {} MoE layers: E={} K={} F={} router={} score={}", NumMoeLayers(), moe.n_experts,
                     moe.top_k, moe.d_ff, mixture::Name(moe.router), mixture::Name(moe.score));
    if (moe.shared_d_ff > 0) s += fmt::format(" shared F={}", moe.shared_d_ff);
  }
  if (NumMoeLayers() < n_layers) s += fmt::format(", {} dense layers F={}", n_layers - NumMoeLayers(), dense_d_ff);
  s += fmt::format("; params {:.2f}M total, {:.2f}M active", TotalParams() / 1e6, ActiveParams() / 1e6);
  return s;
}

nlohmann::json ToHfJson(const ModelConfig& c) {
  nlohmann::json j;
  j["architectures"] = {"MixtralForCausalLM"};
  j["model_type"] = "mixtral";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.moe.d_ff;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_seq;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.norm_eps;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["hidden_act"] = "silu";
  j["sliding_window"] = nullptr;
  j["attention_dropout"] = 0.0;
  j["torch_dtype"] = "float32";
  j["bos_token_id"] = c.bos_id >= 0 ? nlohmann::json(c.bos_id) : nlohmann::json(nullptr);
  j["eos_token_id"] = c.eos_id >= 0 ? nlohmann::json(c.eos_id) : nlohmann::json(nullptr);
  j["num_local_experts"] = c.moe.n_experts;
  j["num_experts_per_tok"] = c.moe.top_k;
  j["router_aux_loss_coef"] = c.moe.aux_loss_coef;
  j["router_jitter_noise"] = c.moe.jitter;
  j["output_router_logits"] = c.moe.aux_loss_coef > 0;
  // Options Mixtral lacks, named as the families that have them name them.
  j["decoder_sparse_step"] = c.moe_every;                       // Qwen2-MoE
  j["dense_intermediate_size"] = c.dense_d_ff;
  j["scoring_func"] = std::string(mixture::Name(c.moe.score));  // DeepSeek
  j["norm_topk_prob"] = c.moe.renormalize;                      // Qwen
  j["routed_scaling_factor"] = c.moe.route_scale;               // DeepSeek
  j["n_group"] = c.moe.n_groups;                                // DeepSeek-V3
  j["topk_group"] = c.moe.topk_groups;
  j["shared_expert_intermediate_size"] = c.moe.shared_d_ff;     // Qwen2-MoE
  j["shared_expert_gate"] = c.moe.shared_gate;
  j["router_z_loss_coef"] = c.moe.z_loss_coef;                  // Switch / ST-MoE
  j["moe_router_kind"] = std::string(mixture::Name(c.moe.router));
  j["moe_capacity_factor"] = c.moe.capacity_factor;
  j["moe_selection_bias"] = c.moe.selection_bias;
  j["moe_bias_update_rate"] = c.moe.bias_update_rate;
  j["moe_group_score"] = std::string(mixture::Name(c.moe.group_score));
  return j;
}

namespace {

template <typename T>
T Get(const nlohmann::json& j, const char* key, const std::string& origin) {
  MOE_CHECK(j.contains(key), "config", "{}: missing key '{}'", origin, key);
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    Fail("config", "{}: key '{}' has the wrong type ({})", origin, key, j.at(key).dump());
  }
}

template <typename T>
T GetOr(const nlohmann::json& j, const char* key, T fallback, const std::string& origin) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  return Get<T>(j, key, origin);
}

}  // namespace

ModelConfig FromHfJson(const nlohmann::json& j, const std::string& origin) {
  MOE_CHECK(j.is_object(), "config", "{}: expected a JSON object", origin);
  ModelConfig c;
  c.vocab_size = Get<int64_t>(j, "vocab_size", origin);
  c.d_model = Get<int64_t>(j, "hidden_size", origin);
  c.n_layers = Get<int64_t>(j, "num_hidden_layers", origin);
  c.n_heads = Get<int64_t>(j, "num_attention_heads", origin);
  c.n_kv_heads = GetOr<int64_t>(j, "num_key_value_heads", c.n_heads, origin);
  c.head_dim = GetOr<int64_t>(j, "head_dim", 0, origin);
  c.max_seq = GetOr<int64_t>(j, "max_position_embeddings", 2048, origin);
  c.rope_theta = GetOr<double>(j, "rope_theta", 10000.0, origin);
  c.norm_eps = GetOr<double>(j, "rms_norm_eps", 1e-5, origin);
  c.tie_embeddings = GetOr<bool>(j, "tie_word_embeddings", false, origin);
  c.bos_id = GetOr<int32_t>(j, "bos_token_id", -1, origin);
  c.eos_id = GetOr<int32_t>(j, "eos_token_id", -1, origin);
  c.moe_every = GetOr<int64_t>(j, "decoder_sparse_step", 1, origin);
  c.dense_d_ff = GetOr<int64_t>(j, "dense_intermediate_size", 0, origin);
  auto& m = c.moe;
  m.d_ff = Get<int64_t>(j, "intermediate_size", origin);
  m.n_experts = Get<int64_t>(j, "num_local_experts", origin);
  m.top_k = Get<int64_t>(j, "num_experts_per_tok", origin);
  m.aux_loss_coef = GetOr<double>(j, "router_aux_loss_coef", 0.0, origin);
  m.jitter = GetOr<double>(j, "router_jitter_noise", 0.0, origin);
  m.score = mixture::ParseScoreFn(GetOr<std::string>(j, "scoring_func", "softmax", origin));
  m.renormalize = GetOr<bool>(j, "norm_topk_prob", true, origin);
  m.route_scale = GetOr<double>(j, "routed_scaling_factor", 1.0, origin);
  m.n_groups = GetOr<int64_t>(j, "n_group", 1, origin);
  m.topk_groups = GetOr<int64_t>(j, "topk_group", 1, origin);
  m.shared_d_ff = GetOr<int64_t>(j, "shared_expert_intermediate_size", 0, origin);
  m.shared_gate = GetOr<bool>(j, "shared_expert_gate", false, origin);
  m.z_loss_coef = GetOr<double>(j, "router_z_loss_coef", 0.0, origin);
  m.router = mixture::ParseRouterKind(GetOr<std::string>(j, "moe_router_kind", "token_choice", origin));
  m.capacity_factor = GetOr<double>(j, "moe_capacity_factor", 0.0, origin);
  m.selection_bias = GetOr<bool>(j, "moe_selection_bias", false, origin);
  m.bias_update_rate = GetOr<double>(j, "moe_bias_update_rate", 0.0, origin);
  m.group_score = mixture::ParseGroupScore(GetOr<std::string>(j, "moe_group_score", "top2_sum", origin));
  const std::string act = GetOr<std::string>(j, "hidden_act", "silu", origin);
  MOE_CHECK(act == "silu", "config", "{}: hidden_act '{}' is not supported (only silu)", origin, act);
  try {
    c.Finalize();
  } catch (const Error& e) {
    Fail("config", "{}: {}", origin, e.what());
  }
  return c;
}

namespace {
ModelConfig Base() {
  ModelConfig c;
  c.vocab_size = 258;  // bytes 0..255, separator 256 (starts prompts, ends samples), padding 257
  c.bos_id = 256;
  c.eos_id = 256;
  c.rope_theta = 10000.0;
  c.norm_eps = 1e-5;
  c.moe.top_k = 2;
  c.moe.n_experts = 8;
  c.moe.aux_loss_coef = 0.01;
  c.moe.z_loss_coef = 0.001;
  return c;
}
}  // namespace

std::string ModelPresetNames() { return "tiny, tiny-dense, tiny-dense-total, small"; }

ModelConfig ModelPreset(const std::string& name) {
  ModelConfig c = Base();
  if (name == "tiny" || name == "tiny-dense" || name == "tiny-dense-total") {
    c.d_model = 128;
    c.n_layers = 4;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq = 128;
    c.moe.d_ff = 128;
    if (name == "tiny-dense") {  // same active parameters: hidden = K * F
      c.moe_every = 0;
      c.dense_d_ff = c.moe.top_k * c.moe.d_ff;
    } else if (name == "tiny-dense-total") {  // same total expert parameters: hidden = E * F
      c.moe_every = 0;
      c.dense_d_ff = c.moe.n_experts * c.moe.d_ff;
    }
  } else if (name == "small") {
    c.d_model = 256;
    c.n_layers = 6;
    c.n_heads = 8;
    c.n_kv_heads = 4;
    c.max_seq = 256;
    c.moe.d_ff = 256;
  } else {
    Fail("model", "unknown model preset '{}' (known: {})", name, ModelPresetNames());
  }
  c.Finalize();
  return c;
}

}  // namespace moe::model
