#include "moe/core/tensor.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace moe {

Shape::Shape(std::initializer_list<int64_t> d) {
  MOE_CHECK(d.size() <= static_cast<size_t>(kMaxRank), "tensor", "rank {} exceeds {}", d.size(),
            kMaxRank);
  for (int64_t v : d) {
    MOE_CHECK(v >= 0, "tensor", "negative dimension {}", v);
    dims[static_cast<size_t>(rank++)] = v;
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= dims[static_cast<size_t>(i)];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank != o.rank) return false;
  for (int i = 0; i < rank; ++i)
    if (dims[static_cast<size_t>(i)] != o.dims[static_cast<size_t>(i)]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) {
    if (i) s += ",";
    s += std::to_string(dims[static_cast<size_t>(i)]);
  }
  return s + "]";
}

void* AlignedAlloc(size_t bytes) {
  MOE_CHECK(bytes <= kMaxAllocBytes, "alloc", "refusing to allocate {} bytes", bytes);
  if (bytes == 0) bytes = kAlign;
  // Large buffers (weights, big activations) on 2 MiB boundaries, asking the kernel for huge pages:
  // streaming gigabytes of weights through 4 KiB pages costs a TLB miss every 4 KiB.
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t align = bytes >= 4 * kHuge ? kHuge : kAlign;
  const size_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded);
  MOE_CHECK(p != nullptr, "alloc", "out of memory allocating {} bytes", bytes);
#if defined(MADV_HUGEPAGE)
  if (align == kHuge) (void)::madvise(p, rounded, MADV_HUGEPAGE);  // advice only; failure is harmless
#endif
  return p;
}

void AlignedFree(void* p) { std::free(p); }

void Tensor::Free::operator()(void* p) const {
  if (mapped != 0) {
    (void)::munmap(p, mapped);
  } else {
    AlignedFree(p);
  }
}

Tensor::Tensor(DType dtype, Shape shape) { Resize(dtype, shape, /*zero=*/true); }

Tensor Tensor::Uninitialized(DType dtype, Shape shape) {
  const size_t bytes = TensorBytes(dtype, shape);
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.data_ = std::unique_ptr<void, Free>(AlignedAlloc(bytes), Free{});
  t.capacity_ = bytes;
  return t;
}

Tensor Tensor::LazyZeros(DType dtype, Shape shape) {
  const size_t bytes = TensorBytes(dtype, shape);
  if (bytes == 0) return Tensor(dtype, shape);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  MOE_CHECK(p != MAP_FAILED, "alloc", "out of memory mapping {} bytes for {} {}", bytes,
            DTypeName(dtype), shape.str());
#if defined(MADV_NOHUGEPAGE)
  // 4 KiB pages even where transparent huge pages are "always": a 2 MiB page would commit other
  // heads' rows of a KV cache long before they are reached. Advice only; failure is harmless.
  (void)::madvise(p, bytes, MADV_NOHUGEPAGE);
#endif
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.data_ = std::unique_ptr<void, Free>(p, Free(bytes));
  t.capacity_ = bytes;
  return t;
}

void Tensor::Prefault(size_t offset, size_t bytes) {
  MOE_CHECK(offset <= nbytes() && bytes <= nbytes() - offset, "tensor",
            "prefault of bytes [{}, {}) outside {} {} ({} bytes)", offset, offset + bytes,
            DTypeName(dtype_), shape_.str(), nbytes());
  if (bytes == 0 || data_.get_deleter().mapped == 0 || borrowed_ != nullptr) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  auto* base = static_cast<char*>(data_.get());
  const size_t lo = offset / page * page, hi = offset + bytes;
#if defined(MADV_POPULATE_WRITE)
  // One call commits the range (Linux 5.14+); older kernels refuse the advice: touch instead.
  if (::madvise(base + lo, hi - lo, MADV_POPULATE_WRITE) == 0) return;
#endif
  // Rewriting a byte with itself commits its page without changing it (no other thread writes
  // the tensor meanwhile: it belongs to the caller).
  for (size_t at = lo; at < hi; at += page) {
    volatile char* c = base + at;
    *c = *c;
  }
}

size_t TensorBytes(DType dtype, const Shape& shape) {
  int64_t n = 1;
  for (int i = 0; i < shape.rank; ++i) {
    MOE_CHECK(shape[i] >= 0, "tensor", "negative dimension in {}", shape.str());
    MOE_CHECK(shape[i] == 0 || n <= static_cast<int64_t>(kMaxAllocBytes) / shape[i], "tensor",
              "shape {} is too large", shape.str());
    n *= shape[i];
  }
  const int64_t block = DTypeBlockValues(dtype);
  if (block > 1)
    MOE_CHECK(shape.rank >= 1 && shape[shape.rank - 1] % block == 0, "tensor",
              "{} stores rows of whole {}-value blocks; shape {} does not", DTypeName(dtype), block,
              shape.str());
  const auto bytes = static_cast<size_t>(n / block) * static_cast<size_t>(DTypeBlockBytes(dtype));
  MOE_CHECK(bytes <= kMaxAllocBytes, "tensor", "shape {} of {} needs {} bytes", shape.str(),
            DTypeName(dtype), bytes);
  return bytes;
}

Tensor Tensor::Borrow(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner) {
  const size_t bytes = TensorBytes(dtype, shape);
  MOE_CHECK(data != nullptr || bytes == 0, "tensor", "borrowing {} {} from a null pointer",
            DTypeName(dtype), shape.str());
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  static const char kEmpty = 0;
  t.borrowed_ = data != nullptr ? data : &kEmpty;  // non-null: an empty borrow is still a borrow
  t.owner_ = std::move(owner);
  return t;
}

void Tensor::FailReadOnly() const {
  Fail("tensor", "{} {} is a read-only view of memory it does not own (e.g. a mapped model file)",
       DTypeName(dtype_), shape_.str());
}

Tensor Tensor::ShapeOnly(DType dtype, Shape shape) {
  (void)TensorBytes(dtype, shape);  // the same checks as an allocation
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.shape_only_ = true;
  return t;
}

void Tensor::FailShapeOnly() const {
  Fail("tensor", "{} {} has a shape but no storage (its data was never loaded)", DTypeName(dtype_),
       shape_.str());
}

void Tensor::Resize(DType dtype, Shape shape, bool zero) {
  const size_t bytes = TensorBytes(dtype, shape);
  shape_only_ = false;
  if (borrowed_) {
    borrowed_ = nullptr;
    owner_.reset();
  }
  dtype_ = dtype;
  shape_ = shape;
  if (bytes > capacity_ || !data_) {
    data_ = std::unique_ptr<void, Free>(AlignedAlloc(bytes), Free{});
    capacity_ = bytes;
    zero = true;
  }
  if (zero) std::memset(data_.get(), 0, bytes);
}

void Tensor::SetZero() {
  if (borrowed_) FailReadOnly();
  if (data_) std::memset(data_.get(), 0, nbytes());
}

Tensor Tensor::Clone() const {
  Tensor t = Uninitialized(dtype_, shape_);
  if (nbytes()) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

void Tensor::CheckType(DType want) const {
  MOE_CHECK(dtype_ == want, "tensor", "tensor of {} {} viewed as {}", DTypeName(dtype_),
            shape_.str(), DTypeName(want));
}

}  // namespace moe
