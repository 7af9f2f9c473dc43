#include "moe/model/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/model/hf_json.h"

namespace moe::model {

namespace {
constexpr int64_t kMaxDim = int64_t{1} << 20;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr std::string_view kTag = "model";
}  // namespace

std::string_view Name(QkNorm n) {
  switch (n) {
    case QkNorm::kNone:
      return "none";
    case QkNorm::kPerHead:
      return "per_head";
    case QkNorm::kFull:
      return "full";
  }
  return "?";
}

int64_t ModelConfig::NumMoeLayers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < n_layers; ++l) n += IsMoeLayer(l) ? 1 : 0;
  return n;
}

int64_t ModelConfig::rope_dim() const {
  if (mla.enabled()) return mla.qk_rope_head_dim;
  return rotary_dim > 0 ? rotary_dim : head_dim;
}

double ModelConfig::softmax_scale() const {
  return attn_scale > 0 ? attn_scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

std::string ModelConfig::TrainingUnsupported() const {
  std::vector<std::string> out;
  if (qkv_bias) out.emplace_back("qkv_bias");
  if (o_bias) out.emplace_back("o_bias");
  if (qk_norm != QkNorm::kNone) out.push_back(fmt::format("qk_norm = {}", Name(qk_norm)));
  if (clip_qkv > 0) out.emplace_back("clip_qkv");
  if (mla.enabled()) out.emplace_back("multi-head latent attention");
  if (sliding_window > 0) out.emplace_back("sliding_window");
  return fmt::format("{}", fmt::join(out, ", "));
}

void ModelConfig::Finalize() {
  if (mla.enabled()) {
    if (head_dim == 0) head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim;
    if (n_kv_heads == 0) n_kv_heads = n_heads;
  }
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
  MOE_CHECK(moe_layers.empty() || static_cast<int64_t>(moe_layers.size()) == n_layers, kTag,
            "moe_layers has {} entries, expected n_layers = {}", moe_layers.size(), n_layers);
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
  MOE_CHECK(std::isfinite(clip_qkv) && clip_qkv >= 0, kTag, "clip_qkv = {} must be >= 0", clip_qkv);
  MOE_CHECK(std::isfinite(attn_scale) && attn_scale >= 0, kTag, "attn_scale = {} must be >= 0",
            attn_scale);
  MOE_CHECK(sliding_window >= 0, kTag, "sliding_window = {} must be >= 0", sliding_window);
  if (mla.enabled()) {
    const MlaConfig& m = mla;
    MOE_CHECK(m.kv_lora_rank <= kMaxDim && m.q_lora_rank >= 0 && m.q_lora_rank <= kMaxDim, kTag,
              "kv_lora_rank = {} / q_lora_rank = {} not in 0..{}", m.kv_lora_rank, m.q_lora_rank,
              kMaxDim);
    MOE_CHECK(
        m.qk_nope_head_dim >= 0 && m.qk_nope_head_dim <= 4096 && m.qk_rope_head_dim >= 2 &&
            m.qk_rope_head_dim % 2 == 0 && m.qk_rope_head_dim <= 4096,
        kTag,
        "qk_nope_head_dim = {} / qk_rope_head_dim = {}: need 0..4096 and an even rope dim >= 2",
        m.qk_nope_head_dim, m.qk_rope_head_dim);
    MOE_CHECK(m.v_head_dim >= 1 && m.v_head_dim <= 4096, kTag, "v_head_dim = {} not in 1..4096",
              m.v_head_dim);
    MOE_CHECK(head_dim == m.qk_nope_head_dim + m.qk_rope_head_dim, kTag,
              "head_dim = {} must equal qk_nope_head_dim + qk_rope_head_dim = {} with MLA",
              head_dim, m.qk_nope_head_dim + m.qk_rope_head_dim);
    MOE_CHECK(n_kv_heads == n_heads, kTag, "MLA needs n_kv_heads = n_heads (got {} and {})",
              n_kv_heads, n_heads);
    MOE_CHECK(qk_norm == QkNorm::kNone && !qkv_bias, kTag,
              "MLA cannot be combined with qk_norm or qkv_bias");
    MOE_CHECK(std::isfinite(m.latent_norm_eps) && m.latent_norm_eps > 0 && m.latent_norm_eps < 1,
              kTag, "latent_norm_eps = {} not in (0, 1)", m.latent_norm_eps);
  } else {
    MOE_CHECK(rotary_dim >= 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, kTag,
              "rotary_dim = {} must be even and in 0..head_dim ({})", rotary_dim, head_dim);
  }
}

ParamCounts CountParams(const ModelConfig& c) {
  ParamCounts p;
  const auto D = static_cast<double>(c.d_model), H = static_cast<double>(c.n_heads),
             Hkv = static_cast<double>(c.n_kv_heads), Dh = static_cast<double>(c.head_dim),
             Dv = static_cast<double>(c.v_head_dim()), L = static_cast<double>(c.n_layers);
  p.embed = static_cast<double>(c.vocab_size) * D;
  p.head = c.tie_embeddings ? 0.0 : p.embed;
  double attn = 0;
  if (c.mla.enabled()) {
    const auto Rq = static_cast<double>(c.mla.q_lora_rank),
               Rkv = static_cast<double>(c.mla.kv_lora_rank),
               Dn = static_cast<double>(c.mla.qk_nope_head_dim),
               Dr = static_cast<double>(c.mla.qk_rope_head_dim);
    attn += Rq > 0 ? Rq * D + Rq + H * Dh * Rq : H * Dh * D;
    attn += (Rkv + Dr) * D + Rkv + H * (Dn + Dv) * Rkv;
  } else {
    attn += (H + 2 * Hkv) * Dh * D;
    if (c.qkv_bias) attn += (H + 2 * Hkv) * Dh;
    if (c.qk_norm == QkNorm::kPerHead) attn += 2 * Dh;
    if (c.qk_norm == QkNorm::kFull) attn += (H + Hkv) * Dh;
  }
  attn += D * H * Dv + (c.o_bias ? D : 0.0);
  p.attention = attn * L;
  p.norms = 2 * D * L + D;
  const auto& m = c.moe;
  const double n_moe = static_cast<double>(c.NumMoeLayers());
  p.dense_ffn = (L - n_moe) * 3 * D * static_cast<double>(c.dense_d_ff);
  if (n_moe > 0) {
    const auto E = static_cast<double>(m.n_experts), F = static_cast<double>(m.d_ff);
    p.router = n_moe * (E * D + (m.selection_bias ? E : 0.0) + (m.shared_gate ? D : 0.0));
    p.experts = n_moe * E * 3 * D * F;
    p.experts_active = n_moe * static_cast<double>(m.top_k) * 3 * D * F;
    p.shared = n_moe * 3 * D * static_cast<double>(m.shared_d_ff);
  }
  return p;
}

int64_t ModelConfig::TotalParams() const {
  return static_cast<int64_t>(std::llround(CountParams(*this).total()));
}

int64_t ModelConfig::ActiveParams() const {
  return static_cast<int64_t>(std::llround(CountParams(*this).active()));
}

std::string ModelConfig::Summary() const {
  std::string s = fmt::format("{} layers, D={} H={}/{} Dh={} V={} ctx={}", n_layers, d_model, n_heads,
                              n_kv_heads, head_dim, vocab_size, max_seq);
  if (mla.enabled())
    s += fmt::format(", MLA(q_lora={} kv_lora={} nope={} rope={} v={})", mla.q_lora_rank,
                     mla.kv_lora_rank, mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim);
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
  // Options that only some configs set (written only then, so older folders read unchanged).
  if (c.sliding_window > 0) j["sliding_window"] = c.sliding_window;
  if (c.rope_scaling.kind != kernels::RopeScalingKind::kNone)
    j["rope_scaling"] = RopeScalingToJson(c.rope_scaling);
  if (c.rotary_dim > 0) j["moe_rotary_dim"] = c.rotary_dim;
  if (c.rope_pairing == kernels::RopePairing::kInterleaved) j["moe_rope_pairing"] = "interleaved";
  if (c.attn_scale > 0) j["moe_attn_scale"] = c.attn_scale;
  if (!c.moe_layers.empty()) {
    std::vector<int> pattern(c.moe_layers.begin(), c.moe_layers.end());
    j["moe_layer_pattern"] = pattern;
  }
  return j;
}

kernels::RopeScaling ParseRopeScaling(const HfJson& cfg) {
  kernels::RopeScaling s;
  if (!cfg.Has("rope_scaling")) return s;
  const nlohmann::json& rs = cfg.json().at("rope_scaling");
  MOE_CHECK(rs.is_object(), "config", "{}: rope_scaling must be an object or null", cfg.origin());
  const HfJson j(rs, cfg.origin() + " rope_scaling");
  const std::string kind = j.Has("rope_type") ? j.Get<std::string>("rope_type")
                                              : j.GetOr<std::string>("type", "default");
  try {
    s.kind = kernels::ParseRopeScalingKind(kind);
  } catch (const Error& e) {
    Fail("config",
         "{}: rope_scaling type '{}' is not supported (supported: default, linear, yarn, llama3)",
         cfg.origin(), kind);
  }
  s.factor = j.GetOr<double>("factor", 1.0);
  s.original_max_position_embeddings = j.GetOr<int64_t>("original_max_position_embeddings", 0);
  s.beta_fast = j.GetOr<double>("beta_fast", 32.0);
  s.beta_slow = j.GetOr<double>("beta_slow", 1.0);
  s.mscale = j.GetOr<double>("mscale", 1.0);
  s.mscale_all_dim = j.GetOr<double>("mscale_all_dim", 0.0);
  s.low_freq_factor = j.GetOr<double>("low_freq_factor", 1.0);
  s.high_freq_factor = j.GetOr<double>("high_freq_factor", 4.0);
  if (s.kind == kernels::RopeScalingKind::kFreqFactors) {
    // moe's own form (a model loaded from GGUF rope_freqs and saved again).
    MOE_CHECK(j.Has("factors") && j.json().at("factors").is_array(), "config",
              "{}: rope_scaling freq_factors needs a 'factors' list", cfg.origin());
    for (const auto& v : j.json().at("factors")) {
      MOE_CHECK(v.is_number(), "config", "{}: rope_scaling factors must be numbers", cfg.origin());
      s.freq_factors.push_back(v.get<double>());
    }
  }
  return s;
}

nlohmann::json RopeScalingToJson(const kernels::RopeScaling& s) {
  if (s.kind == kernels::RopeScalingKind::kNone) return nullptr;
  nlohmann::json j;
  j["rope_type"] = std::string(kernels::RopeScalingKindName(s.kind));
  j["factor"] = s.factor;
  if (s.kind == kernels::RopeScalingKind::kYarn || s.kind == kernels::RopeScalingKind::kLlama3)
    j["original_max_position_embeddings"] = s.original_max_position_embeddings;
  if (s.kind == kernels::RopeScalingKind::kYarn) {
    j["beta_fast"] = s.beta_fast;
    j["beta_slow"] = s.beta_slow;
    j["mscale"] = s.mscale;
    j["mscale_all_dim"] = s.mscale_all_dim;
  }
  if (s.kind == kernels::RopeScalingKind::kLlama3) {
    j["low_freq_factor"] = s.low_freq_factor;
    j["high_freq_factor"] = s.high_freq_factor;
  }
  if (s.kind == kernels::RopeScalingKind::kFreqFactors) {
    j.erase("factor");
    j["factors"] = s.freq_factors;
  }
  return j;
}

ModelConfig FromHfJson(const nlohmann::json& json, const std::string& origin) {
  const HfJson j(json, origin);
  ModelConfig c;
  c.architecture = "MixtralForCausalLM";
  c.vocab_size = j.Get<int64_t>("vocab_size");
  c.d_model = j.Get<int64_t>("hidden_size");
  c.n_layers = j.Get<int64_t>("num_hidden_layers");
  c.n_heads = j.Get<int64_t>("num_attention_heads");
  c.n_kv_heads = j.GetOr<int64_t>("num_key_value_heads", c.n_heads);
  c.head_dim = j.GetOr<int64_t>("head_dim", 0);
  c.max_seq = j.GetOr<int64_t>("max_position_embeddings", 2048);
  c.rope_theta = j.GetOr<double>("rope_theta", 10000.0);
  c.norm_eps = j.GetOr<double>("rms_norm_eps", 1e-5);
  c.tie_embeddings = j.GetOr<bool>("tie_word_embeddings", false);
  c.bos_id = j.GetOr<int32_t>("bos_token_id", -1);
  c.eos_id = j.GetOr<int32_t>("eos_token_id", -1);
  c.moe_every = j.GetOr<int64_t>("decoder_sparse_step", 1);
  c.dense_d_ff = j.GetOr<int64_t>("dense_intermediate_size", 0);
  c.sliding_window = j.GetOr<int64_t>("sliding_window", 0);
  c.rope_scaling = ParseRopeScaling(j);
  c.rotary_dim = j.GetOr<int64_t>("moe_rotary_dim", 0);
  const std::string pairing = j.GetOr<std::string>("moe_rope_pairing", "half");
  MOE_CHECK(pairing == "half" || pairing == "interleaved", "config",
            "{}: moe_rope_pairing '{}' is not supported (half, interleaved)", origin, pairing);
  c.rope_pairing =
      pairing == "half" ? kernels::RopePairing::kHalf : kernels::RopePairing::kInterleaved;
  c.attn_scale = j.GetOr<double>("moe_attn_scale", 0.0);
  if (j.Has("moe_layer_pattern")) {
    for (const int v : j.Get<std::vector<int>>("moe_layer_pattern"))
      c.moe_layers.push_back(v != 0 ? 1 : 0);
  }
  auto& m = c.moe;
  m.d_ff = j.Get<int64_t>("intermediate_size");
  m.n_experts = j.Get<int64_t>("num_local_experts");
  m.top_k = j.Get<int64_t>("num_experts_per_tok");
  m.aux_loss_coef = j.GetOr<double>("router_aux_loss_coef", 0.0);
  m.jitter = j.GetOr<double>("router_jitter_noise", 0.0);
  m.score = mixture::ParseScoreFn(j.GetOr<std::string>("scoring_func", "softmax"));
  m.renormalize = j.GetOr<bool>("norm_topk_prob", true);
  m.route_scale = j.GetOr<double>("routed_scaling_factor", 1.0);
  m.n_groups = j.GetOr<int64_t>("n_group", 1);
  m.topk_groups = j.GetOr<int64_t>("topk_group", 1);
  m.shared_d_ff = j.GetOr<int64_t>("shared_expert_intermediate_size", 0);
  m.shared_gate = j.GetOr<bool>("shared_expert_gate", false);
  m.z_loss_coef = j.GetOr<double>("router_z_loss_coef", 0.0);
  m.router = mixture::ParseRouterKind(j.GetOr<std::string>("moe_router_kind", "token_choice"));
  m.capacity_factor = j.GetOr<double>("moe_capacity_factor", 0.0);
  m.selection_bias = j.GetOr<bool>("moe_selection_bias", false);
  m.bias_update_rate = j.GetOr<double>("moe_bias_update_rate", 0.0);
  m.group_score = mixture::ParseGroupScore(j.GetOr<std::string>("moe_group_score", "top2_sum"));
  const std::string act = j.GetOr<std::string>("hidden_act", "silu");
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
