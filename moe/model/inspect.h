// `moe inspect MODEL`: what a model folder holds, from config.json and the safetensors headers only
// (no weights are read): architecture, attention, per-layer FFN kind, parameters total vs active
// per token, and memory by part.
#pragma once

#include <string>

namespace moe::model {

// The report as text; Error (naming the file) for folders that would not load.
std::string InspectModel(const std::string& dir);

}  // namespace moe::model
