// Shape, Tensor, View and moe::Error.
#include "moe/core/tensor.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "moe/core/error.h"

namespace moe {
namespace {

TEST(Tensor, AllocatesZeroedAndAligned) {
  Tensor t(DType::kF32, {3, 5});
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % kAlign, 0u);
  auto v = t.view<float>();
  for (int64_t i = 0; i < v.numel(); ++i) EXPECT_EQ(v[i], 0.0f);
}

TEST(Tensor, LazyZerosIsZeroWritableAndResidentOnlyWhereWritten) {
  // 64 MiB, of which one page per MiB is written: the rest is never committed.
  Tensor t = Tensor::LazyZeros(DType::kF32, {64, 1 << 18});
  ASSERT_EQ(t.nbytes(), size_t{64} << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  constexpr int64_t kRow = 1 << 18;
  auto* v = static_cast<float*>(t.raw());
  for (int64_t r = 0; r < 64; ++r) {
    EXPECT_EQ(v[r * kRow], 0.0f);
    EXPECT_EQ(v[r * kRow + kRow - 1], 0.0f);
    v[r * kRow + 7] = static_cast<float>(r);
  }
  // A page of row 0 never read or written is not resident (mincore: bit 0 of its byte).
  unsigned char resident = 1;
  ASSERT_EQ(::mincore(v + kRow / 2, 4096, &resident), 0);
  EXPECT_EQ(resident & 1, 0);
  ASSERT_EQ(::mincore(v, 4096, &resident), 0);
  EXPECT_EQ(resident & 1, 1);
  Tensor moved = std::move(t);  // the mapping moves with the tensor and is unmapped once
  const auto* mv = static_cast<const float*>(std::as_const(moved).raw());
  for (int64_t r = 0; r < 64; ++r) EXPECT_EQ(mv[r * kRow + 7], static_cast<float>(r));
  // Resizing within the mapping keeps it; growing past it takes ordinary storage.
  moved.Resize(DType::kF32, {16}, /*zero=*/true);
  EXPECT_EQ(static_cast<const float*>(std::as_const(moved).raw())[3], 0.0f);
  moved.Resize(DType::kF32, {64, 2 * kRow}, /*zero=*/false);
  EXPECT_EQ(moved.nbytes(), size_t{128} << 20);
  EXPECT_EQ(Tensor::LazyZeros(DType::kF32, {0, 4}).nbytes(), 0u);
  EXPECT_THROW(Tensor::LazyZeros(DType::kF32, {int64_t{1} << 40, int64_t{1} << 20}), Error);
}

TEST(Tensor, PrefaultCommitsTheRangeAndKeepsTheContents) {
  Tensor t = Tensor::LazyZeros(DType::kF32, {16, 1 << 16});  // 4 MiB
  auto* v = static_cast<float*>(t.raw());
  v[3] = 2.0f;
  auto resident = [&](size_t byte) {
    unsigned char r = 0;
    EXPECT_EQ(::mincore(reinterpret_cast<char*>(v) + byte / 4096 * 4096, 4096, &r), 0);
    return (r & 1) != 0;
  };
  EXPECT_FALSE(resident(size_t{1} << 20));
  t.Prefault((size_t{1} << 20) + 100, 3 * 4096);  // straddles 4 pages
  for (size_t p = 0; p < 4; ++p) EXPECT_TRUE(resident((size_t{1} << 20) + p * 4096)) << p;
  EXPECT_FALSE(resident((size_t{1} << 20) + 5 * 4096));
  EXPECT_FALSE(resident((size_t{1} << 20) - 4096));
  t.Prefault(0, 8);  // a page already written keeps its contents
  EXPECT_EQ(v[3], 2.0f);
  EXPECT_EQ(v[(1 << 18) + 30], 0.0f);
  t.Prefault(t.nbytes() - 4, 4);  // the last bytes
  EXPECT_TRUE(resident(t.nbytes() - 4));
  t.Prefault(t.nbytes(), 0);
  EXPECT_THROW(t.Prefault(t.nbytes() - 4, 8), Error);
  EXPECT_THROW(t.Prefault(t.nbytes() + 1, 0), Error);
  Tensor owned(DType::kF32, {4});  // ordinary storage: nothing to do
  owned.Prefault(0, 16);
  EXPECT_THROW(owned.Prefault(8, 16), Error);
}

TEST(Tensor, UninitializedHasTheShapeAndOwnsItsStorage) {
  Tensor t = Tensor::Uninitialized(DType::kQ4_0, {16, 64});
  EXPECT_EQ(t.nbytes(), size_t{16 * 2 * 18});
  EXPECT_FALSE(t.borrowed());
  std::memset(t.raw(), 0xAB, t.nbytes());
  EXPECT_EQ(static_cast<const uint8_t*>(std::as_const(t).raw())[t.nbytes() - 1], 0xAB);
  EXPECT_THROW(Tensor::Uninitialized(DType::kQ4_0, {16, 40}), Error);  // not whole blocks
}

TEST(Tensor, WrongDtypeViewIsAnError) {
  Tensor t(DType::kF32, {2});
  EXPECT_THROW(t.view<double>(), Error);
}

TEST(Tensor, AbsurdShapeIsAnError) {
  EXPECT_THROW(Tensor(DType::kF32, {int64_t{1} << 30, int64_t{1} << 30}), Error);
  EXPECT_THROW(Tensor(DType::kF32, {-1}), Error);
}

TEST(Shape, RankNumelStrAndEquality) {
  const Shape s{2, 3, 4};
  EXPECT_EQ(s.rank, 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.str(), "[2,3,4]");
  EXPECT_EQ(Shape{}.numel(), 1);  // a scalar
  EXPECT_EQ(Shape{}.str(), "[]");
  EXPECT_EQ(Shape({5, 0}).numel(), 0);
  EXPECT_TRUE((Shape{2, 3} == Shape{2, 3}));
  EXPECT_FALSE((Shape{2, 3} == Shape{3, 2}));
  EXPECT_FALSE((Shape{6} == Shape{6, 1}));
  EXPECT_THROW((Shape{1, 2, 3, 4, 5}), Error);
  EXPECT_THROW((Shape{2, -1}), Error);
}

TEST(Tensor, ResizeReusesALargeEnoughAllocation) {
  Tensor t(DType::kF32, {4, 8});
  void* const first = t.raw();
  auto v = t.view<float>();
  for (int64_t i = 0; i < v.numel(); ++i) v[i] = 1.0f;
  // Smaller, then a different dtype with the same byte count: no reallocation.
  t.Resize(DType::kF32, {2, 8});
  EXPECT_EQ(t.raw(), first);
  EXPECT_EQ(t.shape(), (Shape{2, 8}));
  EXPECT_EQ(t.nbytes(), 64u);
  t.Resize(DType::kF64, {4, 4});
  EXPECT_EQ(t.raw(), first);
  EXPECT_EQ(t.dtype(), DType::kF64);
  EXPECT_THROW(t.view<float>(), Error);
  // zero = true clears the reused storage.
  t.Resize(DType::kF32, {4, 8}, /*zero=*/true);
  EXPECT_EQ(t.raw(), first);
  for (int64_t i = 0; i < 32; ++i) ASSERT_EQ(t.view<float>()[i], 0.0f);
  // Growing reallocates and the new storage is zeroed even without zero = true.
  t.Resize(DType::kF32, {64, 64});
  EXPECT_EQ(t.numel(), 4096);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % kAlign, 0u);
  for (int64_t i = 0; i < 4096; ++i) ASSERT_EQ(t.view<float>()[i], 0.0f);
}

TEST(Tensor, ShapeOnlyHasNoDataUntilResized) {
  Tensor t = Tensor::ShapeOnly(DType::kF32, {3, 4});
  EXPECT_TRUE(t.defined());
  EXPECT_TRUE(t.shape_only());
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_THROW((void)t.raw(), Error);
  EXPECT_THROW((void)std::as_const(t).view<float>(), Error);
  t.Resize(t.dtype(), t.shape());
  EXPECT_FALSE(t.shape_only());
  EXPECT_EQ(t.view<float>()[11], 0.0f);
  // Absurd shapes are refused as for an allocation.
  EXPECT_THROW(Tensor::ShapeOnly(DType::kF32, {int64_t{1} << 40, int64_t{1} << 30}), Error);
}

TEST(Tensor, SetZero) {
  Tensor t(DType::kF32, {3});
  t.view<float>()[1] = 5.0f;
  t.SetZero();
  EXPECT_EQ(t.view<float>()[1], 0.0f);
  Tensor empty;
  EXPECT_FALSE(empty.defined());
  empty.SetZero();  // no storage: nothing to do
}

TEST(Tensor, CloneIsADeepCopy) {
  Tensor a(DType::kF64, {2, 3});
  auto av = a.view<double>();
  for (int64_t i = 0; i < 6; ++i) av[i] = 0.5 * static_cast<double>(i);
  Tensor b = a.Clone();
  EXPECT_NE(b.raw(), a.raw());
  EXPECT_EQ(b.dtype(), DType::kF64);
  EXPECT_EQ(b.shape(), a.shape());
  auto bv = b.view<double>();
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(bv[i], av[i]);
  bv[2] = -1.0;
  EXPECT_EQ(av[2], 1.0);  // the original is untouched
  // Moving keeps the storage.
  void* const p = b.raw();
  Tensor c = std::move(b);
  EXPECT_EQ(c.raw(), p);
}

TEST(View, RowsReshapeAndConstConversion) {
  Tensor t(DType::kF32, {4, 3});
  auto v = t.view<float>();
  for (int64_t i = 0; i < 12; ++i) v[i] = static_cast<float>(i);
  EXPECT_EQ(v.rows(), 4);
  EXPECT_EQ(v.cols(), 3);
  EXPECT_EQ(v.at(2, 1), 7.0f);
  EXPECT_EQ(v.row(3)[0], 9.0f);
  const View<float> mid = v.Rows(1, 3);
  EXPECT_EQ(mid.shape, (Shape{2, 3}));
  EXPECT_EQ(mid[0], 3.0f);
  const View<float> r = v.Reshape({2, 2, 3});
  EXPECT_EQ(r.rows(), 2);
  EXPECT_EQ(r.cols(), 6);
  EXPECT_EQ(r.at(1, 0), 6.0f);
  const CView<float> c = v;  // View<T> -> View<const T>
  EXPECT_EQ(c.data, v.data);
  EXPECT_EQ(Const<float>(t).at(3, 2), 11.0f);
}

TEST(View, DefaultAndZeroElementViewsAreEmpty) {
  // Ops take a default View as "none" (e.g. LinearBackward skips an empty dx or dw).
  EXPECT_TRUE(View<float>().empty());
  EXPECT_TRUE(CView<float>().empty());
  float one = 1.0f;
  EXPECT_FALSE(View<float>(&one, Shape{}).empty());  // a real scalar
  EXPECT_TRUE(View<float>(&one, {0, 3}).empty());
  EXPECT_FALSE(View<float>(&one, {1, 1}).empty());
}

TEST(View, ReshapeToADifferentSizeIsAnErrorNamingBothShapes) {
  Tensor t(DType::kF32, {4, 3});
  try {
    (void)t.view<float>().Reshape({5, 3});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[tensor] cannot reshape [4,3] to [5,3]");
  }
}

TEST(Tensor, WrongDtypeMessage) {
  Tensor t(DType::kBF16, {2, 2});
  try {
    (void)t.view<float>();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[tensor] tensor of BF16 [2,2] viewed as F32");
  }
}

TEST(AlignedAlloc, AlignsAndRefusesAbsurdSizes) {
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{63}, size_t{65}, size_t{4096}}) {
    void* p = AlignedAlloc(bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kAlign, 0u);
    AlignedFree(p);
  }
  EXPECT_THROW(AlignedAlloc(kMaxAllocBytes + 1), Error);
}

TEST(Error, MessageIsTagThenFormattedText) {
  try {
    Fail("gguf", "tensor '{}' has shape {}, expected {}", "blk.3.ffn_up_exps", "[8,14336,4096]",
         "[8,4096,14336]");
    ADD_FAILURE() << "Fail returned";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "[gguf] tensor 'blk.3.ffn_up_exps' has shape [8,14336,4096], expected "
                 "[8,4096,14336]");
  }
  // moe::Error is a std::runtime_error, so tools can catch either.
  EXPECT_THROW(Fail("x", "y"), std::runtime_error);
}

TEST(Error, CheckThrowsOnlyWhenTheConditionFails) {
  int evaluated = 0;
  EXPECT_NO_THROW(MOE_CHECK(++evaluated == 1, "test", "never {}", 1));
  EXPECT_EQ(evaluated, 1);  // the condition is evaluated exactly once
  try {
    const int k = 9, n = 4;
    MOE_CHECK(k <= n, "topk", "k = {} not in 1..{}", k, n);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[topk] k = 9 not in 1..4");
  }
}

TEST(Tensor, QuantisedDtypesCountBlocks) {
  EXPECT_TRUE(IsQuantized(DType::kQ4_K));
  EXPECT_FALSE(IsQuantized(DType::kBF16));
  // [3, 512] of Q4_K: 2 blocks of 144 bytes per row; Q8_0: 16 blocks of 34.
  EXPECT_EQ(TensorBytes(DType::kQ4_K, {3, 512}), 3u * 2u * 144u);
  EXPECT_EQ(TensorBytes(DType::kQ8_0, {3, 512}), 3u * 16u * 34u);
  EXPECT_EQ(TensorBytes(DType::kQ6_K, {2, 2, 256}), 4u * 210u);
  EXPECT_EQ(Tensor(DType::kQ5_K, {2, 256}).nbytes(), 2u * 176u);
  try {
    (void)TensorBytes(DType::kQ4_K, {3, 100});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[tensor] Q4_K stores rows of whole 256-value blocks; shape [3,100] does not");
  }
  EXPECT_THROW((void)DTypeSize(DType::kQ4_0), Error);
  // A quantised tensor has no float view.
  const Tensor q(DType::kQ8_0, {1, 32});
  EXPECT_THROW((void)q.view<float>(), Error);
}

TEST(Tensor, BorrowedStorageIsReadOnlyAndKeptAlive) {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4, 5, 6});
  std::weak_ptr<std::vector<float>> watch = owner;
  Tensor t = Tensor::Borrow(DType::kF32, {2, 3}, owner->data(), owner);
  owner.reset();
  ASSERT_FALSE(watch.expired());  // the tensor keeps its memory alive
  EXPECT_TRUE(t.borrowed());
  const Tensor& ct = t;
  EXPECT_EQ(ct.view<float>().at(1, 2), 6.0f);
  EXPECT_EQ(t.view<const float>().at(0, 1), 2.0f);  // const views of a non-const borrow work too
  try {
    (void)t.view<float>();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "[tensor] F32 [2,3] is a read-only view of memory it does not own (e.g. a mapped "
                 "model file)");
  }
  EXPECT_THROW(t.SetZero(), Error);
  Tensor c = ct.Clone();  // an owned copy
  EXPECT_FALSE(c.borrowed());
  c.view<float>()[0] = 9.0f;
  EXPECT_EQ(ct.view<float>()[0], 1.0f);
  t.Resize(DType::kF32, {2, 3}, true);  // owned storage again; the borrow is released
  EXPECT_FALSE(t.borrowed());
  EXPECT_TRUE(watch.expired());
  EXPECT_EQ(t.view<float>()[5], 0.0f);
  EXPECT_THROW(Tensor::Borrow(DType::kF32, {2}, nullptr, nullptr), Error);
}

}  // namespace
}  // namespace moe
