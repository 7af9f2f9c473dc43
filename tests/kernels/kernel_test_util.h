// Small helpers shared by the kernel tests: seeded random buffers and views over std::vector.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "moe/core/rng.h"
#include "moe/core/tensor.h"
#include "moe/testing/compare.h"

namespace moe::kernels {

// n values ~ scale * N(0, 1).
template <typename T>
std::vector<T> RandomNormal(Rng& rng, int64_t n, double scale = 1.0) {
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<T>(scale * rng.Normal());
  return v;
}

// n values uniform in [lo, hi).
template <typename T>
std::vector<T> RandomUniform(Rng& rng, int64_t n, double lo, double hi) {
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<T>(rng.Uniform(lo, hi));
  return v;
}

template <typename T>
View<T> ViewOf(std::vector<T>& v, Shape s) {
  MOE_CHECK(s.numel() == static_cast<int64_t>(v.size()), "test", "shape {} vs {} elements", s.str(),
            v.size());
  return View<T>(v.data(), s);
}

template <typename T>
CView<T> CViewOf(const std::vector<T>& v, Shape s) {
  MOE_CHECK(s.numel() == static_cast<int64_t>(v.size()), "test", "shape {} vs {} elements", s.str(),
            v.size());
  return CView<T>(v.data(), s);
}

template <typename T>
double MaxAbs(const std::vector<T>& v) {
  double m = 0;
  for (const T& x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

template <typename T>
bool AllFinite(const std::vector<T>& v) {
  return std::all_of(v.begin(), v.end(), [](T x) { return std::isfinite(static_cast<double>(x)); });
}

template <typename T>
int64_t Size(const std::vector<T>& v) {
  return static_cast<int64_t>(v.size());
}

// The NMSE bound is relative to the energy of the expected values; when they are all nearly zero
// (e.g. a short row of silu(g) with g << 0) it measures nothing, and the per-element bound is the
// real check. Returns tol with the NMSE bound dropped in that case.
template <typename T>
testing::Tolerance NmseIfMeaningful(testing::Tolerance tol, const std::vector<T>& expected,
                                    double min_max_abs = 1e-3) {
  if (MaxAbs(expected) < min_max_abs) tol.nmse = HUGE_VAL;
  return tol;
}

// Thread counts the View-level kernels are checked with (serial, and an uneven split).
inline constexpr int kThreadCounts[] = {1, 3};

}  // namespace moe::kernels
