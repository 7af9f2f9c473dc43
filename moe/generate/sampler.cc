#include "moe/generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "moe/core/error.h"

namespace moe::generate {

void SamplerOptions::Validate() const {
  MOE_CHECK(std::isfinite(temperature) && temperature >= 0 && temperature <= 100, "sample",
            "temperature = {} not in [0, 100]", temperature);
  MOE_CHECK(top_k >= 0, "sample", "top_k = {} must be >= 0", top_k);
  MOE_CHECK(top_p > 0 && top_p <= 1, "sample", "top_p = {} not in (0, 1]", top_p);
  MOE_CHECK(min_p >= 0 && min_p < 1, "sample", "min_p = {} not in [0, 1)", min_p);
  MOE_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0, "sample",
            "repetition_penalty = {} must be > 0", repetition_penalty);
}

namespace {

// The greedy choice: the first index of the largest value, NaNs never chosen (all NaN: 0). For
// rows without NaN this is the general path's choice (widening to double keeps the order of
// floats). 16 running maxima let the compiler vectorise the scan.
int32_t ArgMax(std::span<const float> x) {
  const size_t n = x.size();
  constexpr size_t kLanes = 16;
  float m[kLanes];
  for (float& v : m) v = -std::numeric_limits<float>::infinity();
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (size_t l = 0; l < kLanes; ++l) m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
  float best = -std::numeric_limits<float>::infinity();
  for (float v : m) best = v > best ? v : best;
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  for (size_t j = 0; j < n; ++j)
    if (x[j] == best) return static_cast<int32_t>(j);
  return 0;
}

}  // namespace

Sampler::Sampler(const SamplerOptions& opts) : opts_(opts), rng_(opts.seed) { opts_.Validate(); }

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> seen) {
  const int64_t v = static_cast<int64_t>(logits.size());
  MOE_CHECK(v > 0, "sample", "empty logits");
  if (opts_.temperature == 0.0 && opts_.repetition_penalty == 1.0) return ArgMax(logits);
  work_.assign(logits.begin(), logits.end());
  if (opts_.repetition_penalty != 1.0) {
    std::vector<char> done(static_cast<size_t>(v), 0);  // once per distinct token
    for (int32_t t : seen) {
      if (t < 0 || t >= v || done[static_cast<size_t>(t)]) continue;
      done[static_cast<size_t>(t)] = 1;
      double& x = work_[static_cast<size_t>(t)];
      x = x > 0 ? x / opts_.repetition_penalty : x * opts_.repetition_penalty;
    }
  }
  if (opts_.temperature == 0.0) {
    int64_t best = 0;
    for (int64_t i = 1; i < v; ++i)
      if (work_[static_cast<size_t>(i)] > work_[static_cast<size_t>(best)]) best = i;
    return static_cast<int32_t>(best);
  }
  for (double& x : work_) x /= opts_.temperature;
  order_.resize(static_cast<size_t>(v));
  std::iota(order_.begin(), order_.end(), 0);
  // Descending by logit, ties to the lower id (deterministic).
  auto cmp = [&](int32_t a, int32_t b) {
    const double xa = work_[static_cast<size_t>(a)], xb = work_[static_cast<size_t>(b)];
    return xa != xb ? xa > xb : a < b;
  };
  int64_t keep = v;
  if (opts_.top_k > 0 && opts_.top_k < v) {
    keep = opts_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), cmp);
  } else {
    std::sort(order_.begin(), order_.end(), cmp);
  }
  // Probabilities over the kept ones.
  const double mx = work_[static_cast<size_t>(order_[0])];
  std::vector<double> p(static_cast<size_t>(keep));
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    p[static_cast<size_t>(i)] = std::exp(work_[static_cast<size_t>(order_[static_cast<size_t>(i)])] - mx);
    sum += p[static_cast<size_t>(i)];
  }
  for (double& x : p) x /= sum;
  if (opts_.top_p < 1.0) {
    double acc = 0;
    int64_t n = 0;
    while (n < keep) {
      acc += p[static_cast<size_t>(n)];
      ++n;
      if (acc >= opts_.top_p) break;
    }
    keep = n;
  }
  if (opts_.min_p > 0) {
    const double floor = opts_.min_p * p[0];
    int64_t n = 1;
    while (n < keep && p[static_cast<size_t>(n)] >= floor) ++n;
    keep = n;
  }
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[static_cast<size_t>(i)];
  double r = rng_.Uniform() * total;
  for (int64_t i = 0; i < keep; ++i) {
    r -= p[static_cast<size_t>(i)];
    if (r < 0) return order_[static_cast<size_t>(i)];
  }
  return order_[static_cast<size_t>(keep - 1)];
}

}  // namespace moe::generate
