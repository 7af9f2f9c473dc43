// Tensor comparison for tests: per-element |a - e| <= atol + rtol * |e| (reporting the worst
// index) plus a normalised-MSE bound mse(a, e) / mse(e, 0).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <gtest/gtest.h>

namespace moe::testing {

struct Tolerance {
  double atol = 1e-5;
  double rtol = 1e-4;
  double nmse = 1e-7;  // f32: 1e-7, bf16: 1e-4, quantised: ~5e-4
};

struct CompareResult {
  bool ok = true;
  int64_t worst = -1;
  double worst_excess = 0;  // |a-e| - (atol + rtol|e|) at worst
  double max_abs_err = 0;
  double nmse = 0;
  std::string message;
};

template <typename A, typename E>
CompareResult Compare(const A* actual, const E* expected, int64_t n, const Tolerance& tol);

// gtest assertion: EXPECT_TRUE(ExpectClose(...)) reports the worst element and the NMSE.
template <typename A, typename E>
::testing::AssertionResult ExpectClose(const A* actual, const E* expected, int64_t n,
                                       const Tolerance& tol, const std::string& what = "");

// The message of the moe::Error that fn throws, or "(no error)" when it returns normally (tests
// assert on error messages with it).
std::string ErrorOf(const std::function<void()>& fn);

}  // namespace moe::testing
