// Next-token sampling from a logits row: repetition penalty, temperature, top-k, top-p (nucleus),
// min-p, in that order (the order Hugging Face's generate applies them), then a draw from the seeded
// Rng. temperature 0 = greedy (argmax; ties to the lowest id).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "moe/core/rng.h"

namespace moe::generate {

struct SamplerOptions {
  double temperature = 0.0;         // 0 = greedy
  int64_t top_k = 0;                // 0 = off
  double top_p = 1.0;               // 1 = off; keep the smallest set with probability >= top_p
  double min_p = 0.0;               // 0 = off; drop tokens with p < min_p * p_max
  double repetition_penalty = 1.0;  // 1 = off; logits of seen tokens: > 0 divided, < 0 multiplied
  uint64_t seed = 0;

  // Error naming the option when out of range.
  void Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& opts);
  // Picks a token from logits [V]; `seen` are the tokens the repetition penalty applies to.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> seen);

 private:
  SamplerOptions opts_;
  Rng rng_;
  std::vector<double> work_;
  std::vector<int32_t> order_;
};

}  // namespace moe::generate
