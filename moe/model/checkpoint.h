// Model folders in the Hugging Face Mixtral layout: config.json (MixtralForCausalLM keys plus the
// extra keys of docs/FORMATS.md) and model.safetensors with MixtralForCausalLM tensor names; per
// expert w1 (gate), w3 (up), w2 (down) are split out of / joined into our fused [E, 2F, D] w13.
//
// SaveModel writes into `dir.tmp`, fsyncs it and renames it to `dir`, so a crash mid-write never
// leaves a half-written checkpoint under the final name.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "moe/model/arch/arch.h"
#include "moe/model/config.h"
#include "moe/model/weights.h"

namespace moe::model {

// Mixtral-layout Hugging Face pieces of a canonical tensor name (see moe/model/arch/arch.h).
std::vector<HfPiece> HfNames(const ModelConfig& cfg, const std::string& canonical);

// Writes dir/config.json and dir/model.safetensors (F32) atomically as a folder. Any extra files
// (name, bytes) are written inside the folder before it is renamed into place.
void SaveModel(const std::string& dir, const ModelConfig& cfg, ModelWeights& w,
               const std::vector<std::pair<std::string, std::string>>& extra_files = {});

struct LoadedModel {
  ModelConfig config;
  ModelWeights weights;
};
// Reads a folder written by SaveModel, or any supported Hugging Face folder (LoadHfModel). Every
// problem is an Error naming the file and tensor.
LoadedModel LoadModel(const std::string& dir, DType dtype = DType::kF32);

}  // namespace moe::model
