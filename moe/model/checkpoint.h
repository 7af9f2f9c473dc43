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

#include "moe/model/config.h"
#include "moe/model/weights.h"

namespace moe::model {

// Hugging Face tensor name of a canonical name; an expert tensor maps to several (w13 -> w1, w3 of
// every expert), so this is the list of (HF name, rows [begin, end) of expert e) pieces.
struct HfPiece {
  std::string name;
  int64_t expert = -1;      // index into the leading [E] dim, -1 = whole tensor
  int64_t row_begin = 0;    // rows of the (per-expert) matrix
  int64_t row_end = -1;     // -1 = all
};
std::vector<HfPiece> HfNames(const ModelConfig& cfg, const std::string& canonical);

// Writes dir/config.json and dir/model.safetensors (F32) atomically as a folder. Any extra files
// (name, bytes) are written inside the folder before it is renamed into place.
void SaveModel(const std::string& dir, const ModelConfig& cfg, ModelWeights& w,
               const std::vector<std::pair<std::string, std::string>>& extra_files = {});

struct LoadedModel {
  ModelConfig config;
  ModelWeights weights;
};
// Reads a folder written by SaveModel (or a Mixtral-layout Hugging Face folder with one
// model.safetensors). Every problem is an Error naming the file and tensor.
LoadedModel LoadModel(const std::string& dir, DType dtype = DType::kF32);

}  // namespace moe::model
