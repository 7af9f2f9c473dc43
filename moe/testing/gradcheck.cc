#include "moe/testing/gradcheck.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "moe/core/rng.h"

namespace moe::testing {
namespace {

// The element indices of a buffer of n that get checked: all of them, or max_n distinct ones
// including 0 and n - 1, in increasing order.
std::vector<int64_t> ChooseIndices(int64_t n, int64_t max_n, Rng& rng) {
  std::vector<int64_t> idx;
  if (n <= max_n) {
    idx.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
    return idx;
  }
  std::unordered_set<int64_t> chosen{0, n - 1};
  while (static_cast<int64_t>(chosen.size()) < max_n)
    chosen.insert(static_cast<int64_t>(rng.Below(static_cast<uint64_t>(n))));
  idx.assign(chosen.begin(), chosen.end());
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

::testing::AssertionResult GradCheck(const std::function<double()>& objective,
                                     const std::vector<GradParam>& params,
                                     const GradCheckOptions& opts) {
  Rng rng(opts.seed);
  int64_t checked = 0, failed = 0;
  std::string report;
  for (const GradParam& p : params) {
    if (p.n > 0 && (p.value == nullptr || p.grad == nullptr))
      return ::testing::AssertionFailure() << "gradcheck: buffer '" << p.name << "' is null";
    for (const int64_t i : ChooseIndices(p.n, std::max<int64_t>(opts.max_per_param, 2), rng)) {
      double& v = p.value[i];
      const double saved = v;
      v = saved + opts.step;
      const double f_plus = objective();
      v = saved - opts.step;
      const double f_minus = objective();
      v = saved;
      const double numeric = (f_plus - f_minus) / (2.0 * opts.step);
      const double analytic = p.grad[i];
      const double err = std::fabs(analytic - numeric);
      const double bound =
          opts.atol + opts.rtol * std::max(std::fabs(analytic), std::fabs(numeric));
      ++checked;
      // Written so that a NaN on either side counts as a failure.
      if (!(err <= bound)) {
        if (failed < opts.max_reported)
          report +=
              fmt::format("\n  {}[{}]: analytic {:.10g}, numeric {:.10g}, |diff| {:.3g} > {:.3g}",
                          p.name, i, analytic, numeric, err, bound);
        ++failed;
      }
    }
  }
  if (failed == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << fmt::format(
                "gradcheck: {} of {} checked elements differ (h={:g}, atol={:g}, rtol={:g}):",
                failed, checked, opts.step, opts.atol, opts.rtol)
         << report;
}

double WeightedSum(const double* out, const double* weights, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += out[i] * weights[i];
  return s;
}

}  // namespace moe::testing
