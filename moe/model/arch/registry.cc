// The architecture registry, the shared tensor-name layout and the config fields every
// Llama-like family shares.
#include <algorithm>
#include <cmath>

#include "moe/model/arch/arch.h"

namespace moe::model {

namespace {
constexpr std::string_view kTag = "arch";

const std::vector<Architecture>& Registry() {
  static const HfLayout kMixtral{.moe_block = "block_sparse_moe.",
                                 .expert_gate = "w1",
                                 .expert_up = "w3",
                                 .expert_down = "w2"};
  static const HfLayout kQwen{};
  static const HfLayout kDeepseek{.shared = "shared_experts."};
  static const std::vector<Architecture> archs = {
      {"MixtralForCausalLM", arch::ParseMixtral, kMixtral, nullptr},
      {"LlamaForCausalLM", arch::ParseLlama, kQwen, arch::SkipDense},
      {"MistralForCausalLM", arch::ParseMistral, kQwen, arch::SkipDense},
      {"Qwen2ForCausalLM", arch::ParseQwen2, kQwen, arch::SkipDense},
      {"Qwen2MoeForCausalLM", arch::ParseQwen2Moe, kQwen, arch::SkipDense},
      {"Qwen3MoeForCausalLM", arch::ParseQwen3Moe, kQwen, arch::SkipDense},
      {"OlmoeForCausalLM", arch::ParseOlmoe, kQwen, arch::SkipDense},
      {"DeepseekV2ForCausalLM", arch::ParseDeepseekV2, kDeepseek, arch::SkipDeepseek},
      {"DeepseekV3ForCausalLM", arch::ParseDeepseekV3, kDeepseek, arch::SkipDeepseek},
  };
  return archs;
}

// "layers.3.moe.w13" -> (3, "moe.w13"); other names -> (-1, name).
std::pair<int64_t, std::string> SplitLayer(const std::string& name) {
  if (!name.starts_with("layers.")) return {-1, name};
  const size_t dot = name.find('.', 7);
  return {std::stoll(name.substr(7, dot - 7)), name.substr(dot + 1)};
}
}  // namespace

std::vector<std::string_view> ArchitectureNames() {
  std::vector<std::string_view> out;
  for (const Architecture& a : Registry()) out.push_back(a.name);
  return out;
}

const Architecture& FindArchitecture(std::string_view name, const std::string& origin) {
  for (const Architecture& a : Registry())
    if (a.name == name) return a;
  Fail(kTag, "{}: architecture '{}' is not supported (supported: {})", origin, name,
       fmt::join(ArchitectureNames(), ", "));
}

ModelConfig ParseHfConfig(const nlohmann::json& j, const std::string& origin,
                          const Architecture** arch) {
  const HfJson hj(j, origin);
  MOE_CHECK(hj.Has("architectures") && j.at("architectures").is_array() &&
                !j.at("architectures").empty() && j.at("architectures")[0].is_string(),
            kTag, "{}: needs an 'architectures' list naming the model class (supported: {})",
            origin, fmt::join(ArchitectureNames(), ", "));
  const Architecture& a = FindArchitecture(j.at("architectures")[0].get<std::string>(), origin);
  if (arch != nullptr) *arch = &a;
  ModelConfig c = a.parse(hj);
  c.architecture = std::string(a.name);
  return c;
}

HfPieceSpan SpanOf(const Tensor& t, const HfPiece& pc) {
  const Shape& s = t.shape();
  HfPieceSpan sp;
  int64_t base = 0, rows = s[0], cols = 1;
  int first = 0;
  if (pc.expert >= 0) {
    base = pc.expert * (t.numel() / s[0]);
    rows = s[1];
    first = 1;
  }
  for (int i = first + 1; i < s.rank; ++i) cols *= s[i];
  const int64_t rb = pc.row_begin, re = pc.row_end < 0 ? rows : pc.row_end;
  sp.offset = static_cast<size_t>(base + rb * cols);
  sp.numel = static_cast<size_t>((re - rb) * cols);
  sp.shape.push_back(re - rb);
  for (int i = first + 1; i < s.rank; ++i) sp.shape.push_back(s[i]);
  return sp;
}

std::vector<HfPiece> LayoutNames(const HfLayout& lay, const ModelConfig& cfg,
                                 const std::string& canonical) {
  const auto [layer, rest] = SplitLayer(canonical);
  if (layer < 0) {
    if (rest == "embed") return {{"model.embed_tokens.weight"}};
    if (rest == "final_norm") return {{"model.norm.weight"}};
    if (rest == "lm_head") return {{"lm_head.weight"}};
    Fail(kTag, "no Hugging Face name for tensor '{}'", canonical);
  }
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const std::string at = p + "self_attn.";
  const std::string moe = p + lay.moe_block;
  static const std::vector<std::pair<std::string_view, std::string_view>> kSimple = {
      {"attn_norm", "input_layernorm.weight"},
      {"ffn_norm", "post_attention_layernorm.weight"},
      {"wq", "self_attn.q_proj.weight"},
      {"wk", "self_attn.k_proj.weight"},
      {"wv", "self_attn.v_proj.weight"},
      {"wo", "self_attn.o_proj.weight"},
      {"bq", "self_attn.q_proj.bias"},
      {"bk", "self_attn.k_proj.bias"},
      {"bv", "self_attn.v_proj.bias"},
      {"bo", "self_attn.o_proj.bias"},
      {"q_norm", "self_attn.q_norm.weight"},
      {"k_norm", "self_attn.k_norm.weight"},
      {"wq_a", "self_attn.q_a_proj.weight"},
      {"q_a_norm", "self_attn.q_a_layernorm.weight"},
      {"wq_b", "self_attn.q_b_proj.weight"},
      {"wkv_a", "self_attn.kv_a_proj_with_mqa.weight"},
      {"kv_a_norm", "self_attn.kv_a_layernorm.weight"},
      {"wkv_b", "self_attn.kv_b_proj.weight"},
      {"w2", "mlp.down_proj.weight"},
  };
  for (const auto& [ours, theirs] : kSimple)
    if (rest == ours) return {{p + std::string(theirs)}};
  const int64_t fd = cfg.dense_d_ff, f = cfg.moe.d_ff, fs = cfg.moe.shared_d_ff;
  if (rest == "w13")
    return {{p + "mlp.gate_proj.weight", -1, 0, fd}, {p + "mlp.up_proj.weight", -1, fd, 2 * fd}};
  if (rest == "moe.router") return {{moe + lay.router}};
  if (rest == "moe.bias") return {{moe + lay.selection_bias}};
  if (rest == "moe.shared_w13")
    return {{moe + lay.shared + "gate_proj.weight", -1, 0, fs},
            {moe + lay.shared + "up_proj.weight", -1, fs, 2 * fs}};
  if (rest == "moe.shared_w2") return {{moe + lay.shared + "down_proj.weight"}};
  if (rest == "moe.shared_gate") return {{moe + lay.shared_gate}};
  if (rest == "moe.w13" || rest == "moe.w2") {
    std::vector<HfPiece> out;
    for (int64_t e = 0; e < cfg.moe.n_experts; ++e) {
      const std::string ep = moe + "experts." + std::to_string(e) + ".";
      if (rest == "moe.w13") {
        out.push_back({ep + lay.expert_gate + ".weight", e, 0, f});
        out.push_back({ep + lay.expert_up + ".weight", e, f, 2 * f});
      } else {
        out.push_back({ep + lay.expert_down + ".weight", e, 0, -1});
      }
    }
    return out;
  }
  Fail(kTag, "no Hugging Face name for tensor '{}'", canonical);
}

namespace arch {

bool IsRotaryCache(std::string_view hf_name) { return hf_name.ends_with("rotary_emb.inv_freq"); }

bool SkipDense(const ModelConfig& cfg, std::string_view hf_name) {
  return IsRotaryCache(hf_name) || (cfg.tie_embeddings && hf_name == "lm_head.weight");
}

void ParseCommon(const HfJson& j, ModelConfig& c) {
  c.vocab_size = j.Get<int64_t>("vocab_size");
  c.d_model = j.Get<int64_t>("hidden_size");
  c.n_layers = j.Get<int64_t>("num_hidden_layers");
  c.n_heads = j.Get<int64_t>("num_attention_heads");
  c.n_kv_heads = j.GetOr<int64_t>("num_key_value_heads", c.n_heads);
  c.head_dim = j.GetOr<int64_t>("head_dim", 0);
  c.max_seq = j.GetOr<int64_t>("max_position_embeddings", 4096);
  c.norm_eps = j.GetOr<double>("rms_norm_eps", 1e-6);
  c.tie_embeddings = j.GetOr<bool>("tie_word_embeddings", false);
  // Newer configs keep theta and the scaling in `rope_parameters`; older ones at the top level.
  if (j.Has("rope_parameters")) {
    const HfJson rp(j.json().at("rope_parameters"), j.origin() + " rope_parameters");
    c.rope_theta = rp.GetOr<double>("rope_theta", 10000.0);
    nlohmann::json wrap{{"rope_scaling", rp.json()}};
    c.rope_scaling = ParseRopeScaling(HfJson(wrap, j.origin()));
  } else {
    c.rope_theta = j.GetOr<double>("rope_theta", 10000.0);
    c.rope_scaling = ParseRopeScaling(j);
  }
  if (j.Has("partial_rotary_factor")) {
    const double f = j.Get<double>("partial_rotary_factor");
    MOE_CHECK(f > 0 && f <= 1, "config", "{}: partial_rotary_factor = {} not in (0, 1]", j.origin(),
              f);
    const int64_t dh = c.head_dim > 0 ? c.head_dim : c.d_model / std::max<int64_t>(1, c.n_heads);
    c.rotary_dim = static_cast<int64_t>(std::llround(static_cast<double>(dh) * f));
  }
  auto token_id = [&](const char* key) -> int32_t {
    if (!j.Has(key)) return -1;
    const nlohmann::json& v = j.json().at(key);
    if (v.is_array()) return v.empty() ? -1 : v[0].get<int32_t>();  // Llama 3 lists several eos ids
    return j.Get<int32_t>(key);
  };
  c.bos_id = token_id("bos_token_id");
  c.eos_id = token_id("eos_token_id");
  const std::string act = j.GetOr<std::string>("hidden_act", "silu");
  if (act != "silu") j.Unsupported("hidden_act", "only silu");
  if (j.GetOr<bool>("use_sliding_window", true)) {
    c.sliding_window = j.GetOr<int64_t>("sliding_window", 0);
    // Qwen2-style configs window only the layers from max_window_layers on.
    const int64_t from = j.GetOr<int64_t>("max_window_layers", 0);
    if (c.sliding_window > 0 && from >= c.n_layers) c.sliding_window = 0;  // no layer windowed
    if (c.sliding_window > 0 && from > 0)
      j.Unsupported("max_window_layers", "sliding windows on some layers only (all or none)");
  }
  if (j.GetOr<bool>("mlp_bias", false)) j.Unsupported("mlp_bias", "FFN biases");
  // FP8 (DeepSeek-V3's release), GPTQ, AWQ, ... store scales next to the weights.
  if (j.Has("quantization_config"))
    j.Unsupported("quantization_config", "quantised checkpoints; use a BF16/F16/F32 conversion");
}

void Finish(const HfJson& j, ModelConfig& c) {
  try {
    c.Finalize();
  } catch (const Error& e) {
    Fail("config", "{}: {}", j.origin(), e.what());
  }
}

// Qwen2-MoE / Qwen3-MoE: layer l is MoE unless listed in mlp_only_layers, when num_experts > 0
// and (l + 1) % decoder_sparse_step == 0.
void QwenMoeLayers(const HfJson& j, ModelConfig& c) {
  const int64_t step = j.GetOr<int64_t>("decoder_sparse_step", 1);
  const auto mlp_only = j.GetOr<std::vector<int64_t>>("mlp_only_layers", {});
  MOE_CHECK(step >= 1, "config", "{}: decoder_sparse_step = {} must be >= 1", j.origin(), step);
  MOE_CHECK(c.n_layers >= 1 && c.n_layers <= 4096, "config",
            "{}: num_hidden_layers = {} not in 1..4096", j.origin(), c.n_layers);
  c.moe_layers.assign(static_cast<size_t>(c.n_layers), 0);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const bool dense = std::find(mlp_only.begin(), mlp_only.end(), l) != mlp_only.end();
    c.moe_layers[static_cast<size_t>(l)] =
        !dense && c.moe.n_experts > 0 && (l + 1) % step == 0 ? 1 : 0;
  }
}

}  // namespace arch
}  // namespace moe::model
