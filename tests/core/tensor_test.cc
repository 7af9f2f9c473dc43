#include <gtest/gtest.h>

#include "moe/core/tensor.h"

namespace moe {
namespace {

TEST(Tensor, AllocatesZeroedAndAligned) {
  Tensor t(DType::kF32, {3, 5});
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % kAlign, 0u);
  auto v = t.view<float>();
  for (int64_t i = 0; i < v.numel(); ++i) EXPECT_EQ(v[i], 0.0f);
}

TEST(Tensor, WrongDtypeViewIsAnError) {
  Tensor t(DType::kF32, {2});
  EXPECT_THROW(t.view<double>(), Error);
}

TEST(Tensor, AbsurdShapeIsAnError) {
  EXPECT_THROW(Tensor(DType::kF32, {int64_t{1} << 30, int64_t{1} << 30}), Error);
  EXPECT_THROW(Tensor(DType::kF32, {-1}), Error);
}

}  // namespace
}  // namespace moe
