// Small random models shared by the tests of the model formats (GGUF load/save, inspect).
#pragma once

#include <cstdint>

#include "moe/model/config.h"
#include "moe/model/weights.h"

namespace moe::testing {

struct RandomModel {
  model::ModelConfig cfg;
  model::ModelWeights w;
};

// A 2-layer Mixtral-style MoE (D = F = 256, so rows are whole K-quant blocks; E = 4, K = 2) with
// N(0, 0.02) weights from a fixed seed; qwen2_moe: Qwen2-MoE options instead (q/k/v biases, top-K
// not renormalised, a sigmoid-gated shared expert of width 256).
RandomModel RandomMoeModel(bool qwen2_moe, int64_t vocab = 300);

}  // namespace moe::testing
