#include "moe/testing/compare.h"

#include "moe/core/error.h"

#include <cmath>

#include <fmt/format.h>

namespace moe::testing {

template <typename A, typename E>
CompareResult Compare(const A* actual, const E* expected, int64_t n, const Tolerance& tol) {
  CompareResult r;
  double se = 0, sref = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = static_cast<double>(actual[i]);
    const double e = static_cast<double>(expected[i]);
    const double err = std::fabs(a - e);
    if (!std::isfinite(a) || !std::isfinite(e)) {
      if (!(std::isnan(a) && std::isnan(e)) && a != e) {
        r.ok = false;
        if (r.worst < 0) r.worst = i;
      }
      continue;
    }
    se += err * err;
    sref += e * e;
    r.max_abs_err = std::max(r.max_abs_err, err);
    const double excess = err - (tol.atol + tol.rtol * std::fabs(e));
    if (excess > 0 && (r.worst < 0 || excess > r.worst_excess)) {
      r.ok = false;
      r.worst = i;
      r.worst_excess = excess;
    }
  }
  r.nmse = sref > 0 ? se / sref : se;
  if (r.nmse > tol.nmse) r.ok = false;
  if (!r.ok) {
    const double a = r.worst >= 0 ? static_cast<double>(actual[r.worst]) : 0.0;
    const double e = r.worst >= 0 ? static_cast<double>(expected[r.worst]) : 0.0;
    r.message = fmt::format("n={} max_abs_err={:.3g} nmse={:.3g} (bound {:.3g}); worst index {}: "
                            "actual {:.9g} expected {:.9g} (atol {:.3g} rtol {:.3g})",
                            n, r.max_abs_err, r.nmse, tol.nmse, r.worst, a, e, tol.atol, tol.rtol);
  }
  return r;
}

template <typename A, typename E>
::testing::AssertionResult ExpectClose(const A* actual, const E* expected, int64_t n,
                                       const Tolerance& tol, const std::string& what) {
  const CompareResult r = Compare(actual, expected, n, tol);
  if (r.ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << r.message;
}

#define MOE_INSTANTIATE(A, E)                                                               \
  template CompareResult Compare<A, E>(const A*, const E*, int64_t, const Tolerance&);      \
  template ::testing::AssertionResult ExpectClose<A, E>(const A*, const E*, int64_t,        \
                                                        const Tolerance&, const std::string&);
MOE_INSTANTIATE(float, float)
MOE_INSTANTIATE(float, double)
MOE_INSTANTIATE(double, double)
MOE_INSTANTIATE(double, float)
#undef MOE_INSTANTIATE

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace moe::testing
