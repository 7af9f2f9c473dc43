#include "moe/mixture/presets.h"

#include "moe/core/error.h"

namespace moe::mixture {

namespace {
MoeConfig Base(int64_t f, int64_t e, int64_t k) {
  MoeConfig c;
  c.d_model = 512;
  c.d_ff = f;
  c.n_experts = e;
  c.top_k = k;
  return c;
}
}  // namespace

const std::vector<LayerPreset>& LayerPresets() {
  static const std::vector<LayerPreset> presets = [] {
    std::vector<LayerPreset> p;
    p.push_back({"mixtral", "Mixtral-like: D=512 F=1408 E=8 K=2, softmax, renormalised", Base(1408, 8, 2)});
    {
      MoeConfig c = Base(352, 64, 8);
      c.renormalize = false;
      p.push_back({"olmoe", "OLMoE-like: D=512 F=352 E=64 K=8, softmax, no renormalisation", c});
    }
    {
      MoeConfig c = Base(352, 64, 6);
      c.score = ScoreFn::kSigmoid;
      c.selection_bias = true;
      c.n_groups = 8;
      c.topk_groups = 4;
      c.route_scale = 2.5;
      c.shared_d_ff = 2 * 352;
      p.push_back({"deepseek",
                   "DeepSeek-like: D=512 F=352 E=64 K=6 + 2 shared, sigmoid + bias, 8 groups / 4, "
                   "scale 2.5",
                   c});
    }
    {
      MoeConfig c = Base(352, 60, 4);
      c.renormalize = false;
      c.shared_d_ff = 1408;
      c.shared_gate = true;
      p.push_back({"qwen2", "Qwen2-MoE-like: D=512 F=352 E=60 K=4 + gated shared F=1408", c});
    }
    {
      MoeConfig c = Base(1408, 8, 1);
      c.capacity_factor = 1.25;
      c.aux_loss_coef = 0.01;
      c.z_loss_coef = 0.001;
      p.push_back({"switch", "Switch-like: D=512 F=1408 E=8 top-1, capacity 1.25, aux + z loss", c});
    }
    {
      MoeConfig c = Base(1408, 8, 2);
      c.router = RouterKind::kExpertChoice;
      c.renormalize = false;
      c.capacity_factor = 1.0;
      p.push_back({"expert-choice", "Expert choice: D=512 F=1408 E=8, C = T*2/8", c});
    }
    return p;
  }();
  return presets;
}

const LayerPreset& FindLayerPreset(std::string_view name) {
  std::string known;
  for (const auto& p : LayerPresets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  Fail("moe", "unknown layer preset '{}' (known: {})", name, known);
}

double ActiveWeightBytes(const MoeConfig& cfg, const std::vector<int64_t>& tokens_per_expert,
                         int64_t tokens) {
  const double d = static_cast<double>(cfg.d_model);
  double bytes = 4.0 * d * static_cast<double>(cfg.n_experts);  // router
  for (int64_t c : tokens_per_expert)
    if (c > 0) bytes += 4.0 * 3.0 * d * static_cast<double>(cfg.d_ff);
  if (tokens > 0) bytes += 4.0 * 3.0 * d * static_cast<double>(cfg.shared_d_ff);
  if (cfg.shared_gate) bytes += 4.0 * d;
  return bytes;
}

}  // namespace moe::mixture
