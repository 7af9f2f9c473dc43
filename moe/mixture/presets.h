// Named layer shapes used by benchmarks, the CLI and experiments.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "moe/mixture/config.h"

namespace moe::mixture {

struct LayerPreset {
  std::string name;
  std::string description;
  MoeConfig config;
};

// mixtral (D=512 F=1408 E=8 K=2), olmoe (F=352 E=64 K=8), deepseek (F=352 E=64 K=6 + 2 shared,
// sigmoid, bias, 8 groups / 4), qwen2 (softmax top-4 no renorm + gated shared), switch (top-1,
// cf=1.25), expert-choice (cf=2).
const std::vector<LayerPreset>& LayerPresets();
// The named preset; an unknown name is an Error listing the known ones.
const LayerPreset& FindLayerPreset(std::string_view name);

// Bytes of expert weights a forward reads for the given per-expert token counts (f32 weights):
// every expert with at least one token, plus the shared expert and the router.
double ActiveWeightBytes(const MoeConfig& cfg, const std::vector<int64_t>& tokens_per_expert,
                         int64_t tokens);

}  // namespace moe::mixture
