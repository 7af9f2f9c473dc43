#pragma once
// Template body of RunBalanced (included from experts.h).

#include <algorithm>
#include <vector>

namespace moe::mixture {

template <typename Fn>
void RunBalanced(const std::vector<double>& costs, Context& ctx, Fn&& fn) {
  const int64_t n = static_cast<int64_t>(costs.size());
  if (n == 0) return;
  const int workers = static_cast<int>(std::min<int64_t>(ctx.threads(), n));
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // Task i goes to the worker whose share of the total cost holds the task's midpoint.
  double total = 0;
  for (double c : costs) total += c;
  std::vector<int64_t> begin(static_cast<size_t>(workers + 1), n);
  begin[0] = 0;
  double acc = 0;
  int w = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double mid = acc + costs[static_cast<size_t>(i)] / 2;
    const int owner = total > 0 ? std::min(workers - 1, static_cast<int>(mid / total * workers)) : 0;
    while (w < owner) begin[static_cast<size_t>(++w)] = i;
    acc += costs[static_cast<size_t>(i)];
  }
  ctx.pool().Run([&](int wk) {
    if (wk >= workers) return;
    for (int64_t i = begin[static_cast<size_t>(wk)]; i < begin[static_cast<size_t>(wk + 1)]; ++i) fn(i);
  });
}

}  // namespace moe::mixture
