// safetensors: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2,3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// and then the data buffer (offsets are relative to its start).
//
// SafetensorsFile maps a file read-only and validates the whole header before anything is read:
// sizes, types, dtypes, shape/offset agreement and non-overlap. Every problem is a moe::Error
// naming the file, the tensor and the offending field. SafetensorsWriter produces deterministic
// files (sorted names, data packed in name order, data buffer 8-byte aligned) written atomically.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/dtype.h"
#include "moe/core/tensor.h"

namespace moe::io {

// Element types of the safetensors format (a superset of moe::DType).
enum class StDType : uint8_t {
  kBool, kU8, kI8, kU16, kI16, kF16, kBF16, kU32, kI32, kF32, kU64, kI64, kF64, kF8E4M3, kF8E5M2,
};

std::string_view StDTypeName(StDType t);  // "F32", "BF16", "F8_E4M3", ...
size_t StDTypeSize(StDType t);
std::optional<StDType> ParseStDType(std::string_view name);
StDType ToStDType(DType t);
std::optional<DType> ToDType(StDType t);  // nullopt for types moe::Tensor cannot hold

// Upper bound on the JSON header (real files have a few hundred KB at most).
inline constexpr uint64_t kMaxSafetensorsHeader = uint64_t{100} << 20;

struct StTensorInfo {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;       // any rank; [] is a scalar
  int64_t numel = 0;
  size_t offset = 0;                // begin, relative to the data buffer
  size_t nbytes = 0;                // end - begin == numel * StDTypeSize(dtype)
  const uint8_t* data = nullptr;    // into the mapping (no alignment guarantee)

  std::string ShapeStr() const;     // "[2,3]"
};

class SafetensorsFile {
 public:
  // Maps `path` read-only (the descriptor is closed at once) and validates the header.
  static SafetensorsFile Open(const std::string& path);
  // Same parser over bytes in memory (copied); `name` is used in error messages.
  static SafetensorsFile FromBytes(std::string name, const void* data, size_t size);

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;

  const std::string& name() const { return name_; }
  // Every tensor, sorted by name.
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const StTensorInfo* Find(std::string_view tensor) const;
  // Error when absent.
  const StTensorInfo& Get(std::string_view tensor) const;
  bool Has(std::string_view tensor) const { return Find(tensor) != nullptr; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Error when the key is absent.
  const std::string& Metadata(std::string_view key) const;

  // Copies a tensor into a new moe::Tensor of dtype `want`. Any float type (F16, BF16, F32, F64)
  // converts to F32 or F64; otherwise the stored dtype must equal `want`. Rank must be <= 4; a
  // rank-0 tensor loads as shape [1] (moe::Tensor has no scalars).
  Tensor Load(std::string_view tensor, DType want) const;
  // Any integer or BOOL tensor as int64 values (U64 above INT64_MAX is an Error).
  std::vector<int64_t> LoadIntegers(std::string_view tensor) const;

 private:
  SafetensorsFile() = default;
  void Parse(const uint8_t* bytes, size_t size);

  std::string name_;
  std::shared_ptr<const void> storage_;  // mapping or heap copy; keeps `data` pointers valid
  std::vector<StTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
 public:
  // Copies nbytes from data; nbytes must equal numel(shape) * StDTypeSize(dtype). Names must be
  // unique, non-empty and not "__metadata__".
  void Add(std::string name, StDType dtype, std::vector<int64_t> shape, const void* data,
           size_t nbytes);
  // Copies a moe::Tensor with its own dtype and shape.
  void Add(std::string name, const Tensor& t);
  void SetMetadata(std::string key, std::string value);

  // The whole file in memory.
  std::vector<uint8_t> Serialize() const;
  // Writes `path.tmp` and renames it over `path`, so readers never see a partial file.
  void Write(const std::string& path) const;

 private:
  struct Entry {
    StDType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Entry> entries_;  // sorted by name
  std::map<std::string, std::string> metadata_;
};

}  // namespace moe::io
