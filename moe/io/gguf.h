// GGUF: the model container of ggml / llama.cpp (spec: ggml docs/gguf.md). Little-endian:
//   magic "GGUF", u32 version (2 or 3), u64 tensor_count, u64 metadata_kv_count,
//   metadata_kv_count × { string key, u32 value_type, value },
//   tensor_count × { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset },
//   zero padding to `general.alignment` (default 32), then the tensor data section; each tensor's
//   offset is relative to that section and a multiple of the alignment.
// A string is a u64 byte length and the bytes; an array is a u32 element type, a u64 count and
// the elements (arrays may nest).
//
// GgufFile maps a file read-only and validates everything before anything is handed out: every
// read against the end of the file, every count against the bytes that could hold it (nothing is
// allocated from an unchecked count), keys, value types, n_dims, dims, ggml types, block sizes,
// offsets, alignment, overlap and duplicates. Every problem is a moe::Error naming the file, the
// key or tensor and the offending value. GgufWriter produces deterministic v3 files (metadata and
// tensors in the order added), streamed to `path.tmp` and renamed into place.
//
// Dimensions are kept in ggml order: dims[0] (ne0) is the contiguous one, so a PyTorch weight of
// shape [out, in] is stored with dims {in, out}. RowMajorShape() gives the reversed shape.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace moe::io {

// ------------------------------------------------------------------------------------------------
// ggml tensor types

// Every type id that GGUF files may carry (the numeric values are the format's). Ids 4, 5, 31-33
// and 36-38 were removed from the format; the reader names them as removed.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct GgmlTypeTraits {
  GgmlType type;
  std::string_view name;  // "Q4_K"
  uint32_t block_elems;   // elements per block (1 for plain types)
  uint32_t block_bytes;   // bytes per block
  bool supported;         // moe can compute with it: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K
};

// Traits of a known type.
const GgmlTypeTraits& GgufTypeInfo(GgmlType type);
// nullptr for ids that are not (or no longer) ggml types.
const GgmlTypeTraits* FindGgmlType(uint32_t id);
std::string_view GgmlTypeName(GgmlType type);
// Every known type, in id order.
std::span<const GgmlTypeTraits> AllGgmlTypes();
// "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K"
std::string SupportedGgmlTypeNames();
// Bytes of a tensor of `type` with `dims` (ggml order); nullopt when dims[0] is not a multiple of
// the block size, a dimension is < 1, or the count overflows 63 bits.
std::optional<uint64_t> GgmlTensorBytes(GgmlType type, std::span<const int64_t> dims);

// ------------------------------------------------------------------------------------------------
// Metadata values

enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// "u8", "i32", "f32", "bool", "string", "array", ...; "type 99" for ids outside the enum.
std::string GgufValueTypeName(GgufValueType t);

// Limits beyond what the bytes of the file already bound.
inline constexpr uint64_t kGgufMaxKeyBytes = 65535;      // spec: keys are at most 2^16-1 bytes
inline constexpr uint64_t kGgufMaxTensorNameBytes = 64;  // spec (llama.cpp itself takes <= 63)
inline constexpr int kGgufMaxArrayDepth = 8;             // arrays of arrays of ...
inline constexpr int kGgufMaxDims = 4;
inline constexpr uint64_t kGgufDefaultAlignment = 32;
// Real files use 32 (llama.cpp's default); 16 MiB leaves room for page-sized choices while a
// writer never pads a header or a tensor by more (the fuzzer found a 1 GiB one: a 1 GiB head).
inline constexpr uint64_t kGgufMaxAlignment = uint64_t{1} << 24;

// One metadata value: a scalar, a string or an array. Numeric arrays keep their elements packed
// as in the file, so a 150k-entry score table costs its bytes and no more.
class GgufValue {
 public:
  GgufValue() = default;  // u8 0

  static GgufValue U8(uint8_t v);
  static GgufValue I8(int8_t v);
  static GgufValue U16(uint16_t v);
  static GgufValue I16(int16_t v);
  static GgufValue U32(uint32_t v);
  static GgufValue I32(int32_t v);
  static GgufValue U64(uint64_t v);
  static GgufValue I64(int64_t v);
  static GgufValue F32(float v);
  static GgufValue F64(double v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);

  // Arrays of numbers (T: uint8_t..int64_t, float, double) and bools.
  template <typename T>
  static GgufValue Array(std::span<const T> v);
  template <typename T>
  static GgufValue Array(const std::vector<T>& v) {
    return Array(std::span<const T>(v));
  }
  static GgufValue Bools(const std::vector<bool>& v);
  static GgufValue Strings(std::vector<std::string> v);
  // An array of arrays (each item must be an array; their element types may differ).
  static GgufValue Arrays(std::vector<GgufValue> items);
  // An empty array of `elem`.
  static GgufValue EmptyArray(GgufValueType elem);

  GgufValueType type() const { return type_; }
  bool is_array() const { return type_ == GgufValueType::kArray; }
  bool is_integer() const;  // scalar u8..i64
  bool is_float() const;    // scalar f32/f64

  // Scalars. Integers convert to any integer type that holds the value exactly (nullopt
  // otherwise, or when the value is not an integer); AsF64 takes f32, f64 and integers.
  std::optional<int64_t> AsI64() const;
  std::optional<uint64_t> AsU64() const;
  std::optional<double> AsF64() const;
  std::optional<bool> AsBool() const;  // bool only
  const std::string& str() const;      // kString only (Error otherwise)

  // Arrays.
  GgufValueType array_type() const { return elem_; }  // meaningful for arrays only
  uint64_t size() const { return count_; }            // element count of an array
  // Element i of a numeric/bool array as a scalar value.
  GgufValue At(uint64_t i) const;
  std::span<const uint8_t> raw() const { return raw_; }  // numeric/bool elements, little-endian
  const std::vector<std::string>& strings() const { return strings_; }  // array of strings
  const std::vector<GgufValue>& items() const { return items_; }        // array of arrays

  // "u32 32", "string \"llama\"", "array<string>[32000] {\"<unk>\", \"<s>\", ...}".
  std::string ToString(size_t max_items = 4) const;

  // Same type, same bits (NaN == NaN with equal bits), same elements.
  bool operator==(const GgufValue& o) const;

 private:
  friend class GgufParser;
  friend class GgufValueEncoder;
  static GgufValue Scalar(GgufValueType t, uint64_t bits);

  GgufValueType type_ = GgufValueType::kU8;
  uint64_t bits_ = 0;  // numeric/bool scalar: the little-endian value zero-extended
  std::string str_;    // kString
  GgufValueType elem_ = GgufValueType::kU8;  // arrays
  uint64_t count_ = 0;
  std::vector<uint8_t> raw_;          // numeric/bool array elements, packed
  std::vector<std::string> strings_;  // string array elements
  std::vector<GgufValue> items_;      // array array elements
};

// ------------------------------------------------------------------------------------------------
// Reader

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> dims;  // ggml order: dims[0] is contiguous; 1..4 entries, each >= 1
  int64_t numel = 0;
  uint64_t offset = 0;            // relative to the data section; a multiple of the alignment
  uint64_t nbytes = 0;            // numel / block_elems * block_bytes
  const uint8_t* data = nullptr;  // into the mapping

  const GgmlTypeTraits& traits() const { return GgufTypeInfo(type); }
  std::vector<int64_t> RowMajorShape() const;  // dims reversed: [out, in] for a weight
  std::string ShapeStr() const;                // "[4096,14336]" in ggml order
};

class GgufFile {
 public:
  // Maps `path` read-only (the descriptor is closed at once) and validates it. Tensor data is
  // then aligned in memory to min(alignment, page size).
  static GgufFile Open(const std::string& path);
  // Same parser over bytes in memory (copied to a 64-byte aligned buffer); `name` is used in
  // error messages.
  static GgufFile FromBytes(std::string name, const void* data, size_t size);

  GgufFile(GgufFile&&) noexcept = default;
  GgufFile& operator=(GgufFile&&) noexcept = default;

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // where the data section starts
  uint64_t file_size() const { return size_; }
  // Keeps the mapping (or buffer) that tensor data points into alive.
  const std::shared_ptr<const void>& storage() const { return storage_; }

  // ---- metadata, in file order
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* Find(std::string_view key) const;  // nullptr when absent
  const GgufValue& Get(std::string_view key) const;   // Error when absent
  bool Has(std::string_view key) const { return Find(key) != nullptr; }

  // Typed access with the conversions real files need: any integer type whose value fits (a
  // count may be stored as u32, i32 or u64), floats from f32/f64 (or an integer). Error naming
  // the key, the stored type and value when it is absent, of another type or out of range; the
  // overloads with `fallback` return it only when the key is absent.
  uint32_t GetU32(std::string_view key) const;
  uint32_t GetU32(std::string_view key, uint32_t fallback) const;
  int32_t GetI32(std::string_view key) const;
  int32_t GetI32(std::string_view key, int32_t fallback) const;
  uint64_t GetU64(std::string_view key) const;
  uint64_t GetU64(std::string_view key, uint64_t fallback) const;
  int64_t GetI64(std::string_view key) const;
  int64_t GetI64(std::string_view key, int64_t fallback) const;
  float GetF32(std::string_view key) const;
  float GetF32(std::string_view key, float fallback) const;
  double GetF64(std::string_view key) const;
  bool GetBool(std::string_view key) const;
  bool GetBool(std::string_view key, bool fallback) const;
  const std::string& GetString(std::string_view key) const;
  std::string GetString(std::string_view key, std::string_view fallback) const;
  // Arrays: strings; any integer element type (u64 above INT64_MAX is an Error); f32/f64.
  const std::vector<std::string>& GetStrings(std::string_view key) const;
  std::vector<int64_t> GetInts(std::string_view key) const;
  std::vector<float> GetF32s(std::string_view key) const;
  // The array itself (Error when absent or not an array).
  const GgufValue& GetArray(std::string_view key) const;

  // ---- tensors, in file order
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(std::string_view name) const;  // nullptr when absent
  const GgufTensorInfo& GetTensor(std::string_view name) const;   // Error when absent
  bool HasTensor(std::string_view name) const { return FindTensor(name) != nullptr; }
  // Error when the tensor's type has no moe kernels:
  //   "tensor 'blk.0.ffn_down.weight' has type Q3_K (11), supported: F32, F16, ..."
  void RequireSupported(const GgufTensorInfo& t) const;
  // RequireSupported for every tensor (the first offender).
  void RequireAllSupported() const;

 private:
  friend class GgufParser;
  GgufFile() = default;
  void Parse(const uint8_t* bytes, size_t size);
  const GgufValue& Typed(std::string_view key, const char* want) const;

  std::string name_;
  std::shared_ptr<const void> storage_;  // mapping or aligned heap copy
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  uint64_t size_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// ------------------------------------------------------------------------------------------------
// Writer

class GgufWriter {
 public:
  // Keys must be 1..65535 printable ASCII bytes and unique. `general.alignment`, when added, must
  // be a u32 power of two (<= 2^30) and sets the alignment (default 32, not written).
  void AddMetadata(std::string key, GgufValue value);
  // Copies the bytes. dims in ggml order (dims[0] contiguous), 1..4 entries each >= 1, dims[0] a
  // multiple of the type's block size, nbytes equal to GgmlTensorBytes. Names are 1..64 bytes and
  // unique. Any known ggml type is accepted (the container does not need kernels).
  void AddTensor(std::string name, GgmlType type, std::vector<int64_t> dims, const void* data,
                 size_t nbytes);
  // Same, without a copy: `data` must stay valid until the last Serialize/Write.
  void AddTensorView(std::string name, GgmlType type, std::vector<int64_t> dims, const void* data,
                     size_t nbytes);

  // Same, with the bytes produced when the file is written: fill(out) writes exactly nbytes at
  // out. Serialize/Write call each fill once, in order, one tensor's buffer at a time, so a model
  // can be converted tensor by tensor without holding the output (or the input) in memory.
  void AddTensorLazy(std::string name, GgmlType type, std::vector<int64_t> dims, size_t nbytes,
                     std::function<void(uint8_t*)> fill);

  uint64_t alignment() const { return alignment_; }

  // The whole file in memory.
  std::vector<uint8_t> Serialize() const;
  // Streams the file to `path.tmp` (no full copy in memory), fsyncs it and renames it over `path`.
  void Write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    const uint8_t* data;  // into `owned` or the caller's buffer (null for a lazy tensor)
    uint64_t nbytes;
    std::vector<uint8_t> owned;
    std::function<void(uint8_t*)> fill;  // lazy tensors
  };
  const uint8_t* DataOf(const Entry& e, std::vector<uint8_t>& buffer) const;
  void Add(std::string name, GgmlType type, std::vector<int64_t> dims, const void* data,
           size_t nbytes, bool copy);
  std::vector<uint8_t> Head() const;  // header, metadata, tensor infos and padding

  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<std::unique_ptr<Entry>> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  uint64_t alignment_ = kGgufDefaultAlignment;
};

}  // namespace moe::io
