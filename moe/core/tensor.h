// Tensor (dtype-tagged; owning and 64-byte aligned, or a read-only borrow of memory someone else
// keeps alive, e.g. a weight inside a memory-mapped model file) and View<T> (non-owning, typed,
// contiguous, row-major, rank <= 4). Ops take Views; layers own Tensors.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "moe/core/dtype.h"
#include "moe/core/error.h"

namespace moe {

inline constexpr int kMaxRank = 4;
inline constexpr size_t kAlign = 64;

struct Shape {
  std::array<int64_t, kMaxRank> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  int64_t operator[](int i) const { return dims[static_cast<size_t>(i)]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  std::string str() const;  // "[2,3,4]"
};

template <typename T>
struct View {
  T* data = nullptr;
  Shape shape;

  View() = default;
  View(T* d, Shape s) : data(d), shape(s) {}
  // View<T> -> View<const T>
  template <typename U, typename = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  View(const View<U>& o) : data(o.data), shape(o.shape) {}

  int rank() const { return shape.rank; }
  int64_t dim(int i) const { return shape[i]; }
  int64_t numel() const { return shape.numel(); }
  int64_t rows() const { return shape.rank == 0 ? 1 : shape[0]; }
  int64_t cols() const { return shape.rank == 0 ? 1 : numel() / shape[0]; }
  // True for a zero-element view and for a default (null) view, which ops take as "none".
  bool empty() const { return data == nullptr || numel() == 0; }
  // Row i of the view seen as [dim0, rest].
  T* row(int64_t i) const { return data + i * cols(); }
  T& operator[](int64_t i) const { return data[i]; }
  T& at(int64_t i, int64_t j) const { return data[i * cols() + j]; }
  // Rows [begin, end) as a view with the same trailing dims.
  View<T> Rows(int64_t begin, int64_t end) const {
    View<T> v(data + begin * cols(), shape);
    v.shape.dims[0] = end - begin;
    return v;
  }
  // Same data, new shape (numel must match).
  View<T> Reshape(Shape s) const {
    MOE_CHECK(s.numel() == numel(), "tensor", "cannot reshape {} to {}", shape.str(), s.str());
    return View<T>(data, s);
  }
};

template <typename T>
using CView = View<const T>;

// Bytes of a tensor of this dtype and shape. Block-quantised dtypes need the last dimension to be a
// whole number of blocks (Error naming the shape otherwise); absurd sizes are an Error.
size_t TensorBytes(DType dtype, const Shape& shape);

// Tensor. Owned storage is 64-byte aligned and zero-initialised on allocation (but see
// Uninitialized and LazyZeros). A borrowed tensor (Borrow) points at read-only memory kept alive
// by `owner`: its const views work as usual, while mutable access (raw(), view<T>()) is an Error;
// Resize gives it owned storage again.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape);
  static Tensor Zeros(DType dtype, Shape shape) { return Tensor(dtype, shape); }
  // Owned storage whose contents are unspecified, for a caller that writes every byte next (no
  // pass over the memory before the caller's own).
  static Tensor Uninitialized(DType dtype, Shape shape);
  // Zero storage mapped from the OS in 4 KiB pages that become resident when first written: for
  // big buffers filled from the front, such as a KV cache sized for a whole context (costs no
  // time or memory for the part never reached).
  static Tensor LazyZeros(DType dtype, Shape shape);
  // TensorBytes(dtype, shape) bytes at `data`, valid while `owner` lives.
  static Tensor Borrow(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner);
  // Dtype and shape without storage (a model's layout before its weights are streamed in one
  // tensor at a time): any data access is an Error until Resize gives it storage.
  static Tensor ShapeOnly(DType dtype, Shape shape);
  bool shape_only() const { return shape_only_; }

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor Clone() const;

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return TensorBytes(dtype_, shape_); }
  bool defined() const { return shape_.rank > 0; }
  bool borrowed() const { return borrowed_ != nullptr; }
  void* raw() {
    if (borrowed_) FailReadOnly();
    if (shape_only_) FailShapeOnly();
    return data_.get();
  }
  const void* raw() const {
    if (shape_only_) FailShapeOnly();
    return borrowed_ ? borrowed_ : data_.get();
  }

  // Makes bytes [offset, offset + bytes) of a LazyZeros tensor resident now, contents unchanged
  // (ahead of a loop that would otherwise take a page fault each time it reaches a new page). A
  // no-op for other storage, which is resident already. The range must lie within nbytes().
  void Prefault(size_t offset, size_t bytes);

  // Re-shapes in place, reusing the allocation when it is large enough. Contents are unspecified
  // unless zero == true.
  void Resize(DType dtype, Shape shape, bool zero = false);
  void SetZero();

  template <typename T>
  View<T> view() {
    CheckType(DTypeOf<std::remove_const_t<T>>());
    if constexpr (std::is_const_v<T>) {
      return View<T>(static_cast<T*>(std::as_const(*this).raw()), shape_);
    } else {
      return View<T>(static_cast<T*>(raw()), shape_);
    }
  }
  template <typename T>
  View<const T> view() const {
    CheckType(DTypeOf<std::remove_const_t<T>>());
    return View<const T>(static_cast<const T*>(raw()), shape_);
  }

 private:
  struct Free {
    Free() : mapped(0) {}
    explicit Free(size_t bytes) : mapped(bytes) {}
    size_t mapped;  // bytes of an mmap (LazyZeros), else 0: from AlignedAlloc
    void operator()(void* p) const;
  };
  void CheckType(DType want) const;
  [[noreturn]] void FailReadOnly() const;
  [[noreturn]] void FailShapeOnly() const;

  DType dtype_ = DType::kF32;
  Shape shape_;
  size_t capacity_ = 0;
  std::unique_ptr<void, Free> data_;
  const void* borrowed_ = nullptr;
  bool shape_only_ = false;
  std::shared_ptr<const void> owner_;
};

// Free-function views: usable on members of dependent types without the `template` keyword.
template <typename T>
View<T> Mut(Tensor& t) {
  return t.view<T>();
}
template <typename T>
View<const T> Const(const Tensor& t) {
  return t.view<T>();
}

// Aligned allocation for scratch buffers; throws Error on absurd or failed sizes.
void* AlignedAlloc(size_t bytes);
void AlignedFree(void* p);

// Upper bound on one allocation (guards against sizes read from corrupt files).
inline constexpr size_t kMaxAllocBytes = size_t{1} << 40;

}  // namespace moe
