// Central-difference gradient checks in double.
//
// The caller evaluates the analytic gradients of a scalar objective at the current parameter
// values, then hands GradCheck the objective and a list of {name, value, grad, n}. Each checked
// element is set to v + h and v - h in turn (and restored exactly), and
//   numeric = (f(v + h) - f(v - h)) / (2h)
// must satisfy |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
// Large buffers are sampled (a seeded random subset, always with the first and last element), so
// the same check scales from one kernel to a whole MoE layer.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moe::testing {

struct GradParam {
  std::string name;              // reported on failure, e.g. "w_up"
  double* value = nullptr;       // [n] perturbed in place, restored afterwards
  const double* grad = nullptr;  // [n] analytic d objective / d value at the unperturbed point
  int64_t n = 0;
};

struct GradCheckOptions {
  double step = 1e-6;  // h
  double atol = 1e-6;
  double rtol = 1e-5;
  int64_t max_per_param = 256;  // elements checked per buffer; all of them when n <= this
  uint64_t seed = 1;            // for choosing the sampled elements
  int max_reported = 5;         // failures listed in the message
};

// EXPECT_TRUE(GradCheck(objective, {{"x", x.data(), dx.data(), n}, ...})). On failure the message
// names the buffer, the index, the analytic and numeric values, and how many elements failed.
::testing::AssertionResult GradCheck(const std::function<double()>& objective,
                                     const std::vector<GradParam>& params,
                                     const GradCheckOptions& opts = {});

// sum_i out[i] * weights[i]: the usual objective, whose gradient with respect to out is weights.
double WeightedSum(const double* out, const double* weights, int64_t n);

}  // namespace moe::testing
