// Grouped SwiGLU experts against the double references, with groups that are empty, tiny, and
// larger than the row chunk (so the chunked loops and the column-block tasks are all exercised).
#include <gtest/gtest.h>

#include <vector>

#include "moe/core/context.h"
#include "moe/core/rng.h"
#include "moe/mixture/experts.h"
#include "moe/testing/reference.h"

namespace moe::mixture {
namespace {

using testing::ExpectClose;
using testing::RefMatMulNT;
using testing::RefMatMulNTBackward;
using testing::RefSwiGlu;
using testing::RefSwiGluBackward;
using testing::Tolerance;

template <typename T>
std::vector<T> Random(int64_t n, Rng& rng, double std) {
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<T>(rng.Normal() * std);
  return v;
}

struct GroupData {
  int64_t rows, f;
  std::vector<double> x, w13, w2, dy;
};

template <typename T>
void CheckGrouped(int threads) {
  const int64_t d = 24;
  Rng rng(42);
  std::vector<GroupData> data;
  for (auto [rows, f] : std::vector<std::pair<int64_t, int64_t>>{{0, 40}, {3, 40}, {600, 40}, {257, 40}, {300, 72}}) {
    data.push_back({rows, f, Random<double>(rows * d, rng, 1.0), Random<double>(2 * f * d, rng, 0.2),
                    Random<double>(d * f, rng, 0.15), Random<double>(rows * d, rng, 1.0)});
  }
  // Buffers in T.
  struct Buf {
    std::vector<T> x, w13, w2, h, a, y, dy, dx, da, dh, dw13, dw2;
  };
  std::vector<Buf> bufs(data.size());
  std::vector<FfnGroup<T>> groups;
  std::vector<FfnGroupGrad<T>> grads;
  for (size_t g = 0; g < data.size(); ++g) {
    const auto& gd = data[g];
    auto& b = bufs[g];
    auto cast = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
    b.x = cast(gd.x), b.w13 = cast(gd.w13), b.w2 = cast(gd.w2), b.dy = cast(gd.dy);
    b.h.assign(static_cast<size_t>(gd.rows * 2 * gd.f), T(0));
    b.a.assign(static_cast<size_t>(gd.rows * gd.f), T(0));
    b.y.assign(static_cast<size_t>(gd.rows * d), T(0));
    b.dx.assign(static_cast<size_t>(gd.rows * d), T(0));
    b.da.assign(static_cast<size_t>(gd.rows * gd.f), T(0));
    b.dh.assign(static_cast<size_t>(gd.rows * 2 * gd.f), T(0));
    b.dw13.assign(static_cast<size_t>(2 * gd.f * d), T(0));
    b.dw2.assign(static_cast<size_t>(d * gd.f), T(0));
    groups.push_back({gd.rows, gd.f, b.x.data(), b.w13.data(), b.w2.data(), b.h.data(), b.a.data(), b.y.data()});
    grads.push_back({b.dy.data(), b.dx.data(), b.da.data(), b.dh.data(), b.dw13.data(), b.dw2.data()});
  }
  Context ctx({.threads = threads});
  GroupedSwiGluForward<T>(groups, d, ctx);
  GroupedSwiGluBackward<T>(groups, grads, d, ctx);

  const Tolerance tol = std::is_same_v<T, float> ? Tolerance{2e-5, 2e-4, 1e-9} : Tolerance{1e-11, 1e-10, 1e-20};
  for (size_t g = 0; g < data.size(); ++g) {
    const auto& gd = data[g];
    const auto& b = bufs[g];
    if (gd.rows == 0) continue;
    const auto h = RefMatMulNT(gd.x.data(), gd.w13.data(), gd.rows, 2 * gd.f, d);
    const auto a = RefSwiGlu(h.data(), gd.rows, gd.f);
    const auto y = RefMatMulNT(a.data(), gd.w2.data(), gd.rows, d, gd.f);
    const std::string what = "group " + std::to_string(g);
    EXPECT_TRUE(ExpectClose(b.h.data(), h.data(), gd.rows * 2 * gd.f, tol, what + " h"));
    EXPECT_TRUE(ExpectClose(b.y.data(), y.data(), gd.rows * d, tol, what + " y"));
    const auto g2 = RefMatMulNTBackward(gd.dy.data(), a.data(), gd.w2.data(), gd.rows, d, gd.f);
    const auto dh = RefSwiGluBackward(h.data(), g2.dx.data(), gd.rows, gd.f);
    const auto g13 = RefMatMulNTBackward(dh.data(), gd.x.data(), gd.w13.data(), gd.rows, 2 * gd.f, d);
    EXPECT_TRUE(ExpectClose(b.dw2.data(), g2.dw.data(), d * gd.f, tol, what + " dw2"));
    EXPECT_TRUE(ExpectClose(b.dw13.data(), g13.dw.data(), 2 * gd.f * d, tol, what + " dw13"));
    EXPECT_TRUE(ExpectClose(b.dx.data(), g13.dx.data(), gd.rows * d, tol, what + " dx"));
  }
}

TEST(GroupedSwiGlu, MatchesReferenceDoubleOneThread) { CheckGrouped<double>(1); }
TEST(GroupedSwiGlu, MatchesReferenceDoubleTwoThreads) { CheckGrouped<double>(2); }
TEST(GroupedSwiGlu, MatchesReferenceFloatThreeThreads) { CheckGrouped<float>(3); }

}  // namespace
}  // namespace moe::mixture
