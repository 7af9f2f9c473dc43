#include "moe/io/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <numeric>

#include "moe/core/error.h"
#include "moe/io/file.h"

namespace moe::io {

static_assert(std::endian::native == std::endian::little,
              "GGUF files are read little-endian; big-endian hosts would need byte swaps");

namespace {

constexpr std::string_view kTag = "gguf";
constexpr std::string_view kAlignmentKey = "general.alignment";
constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kWriteVersion = 3;

// The smallest encodings, used to bound counts by the bytes left before anything is allocated.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;  // key length, 1-byte key, type, u8
constexpr uint64_t kMinTensorInfoBytes =
    8 + 1 + 4 + 8 + 4 + 8;  // name, n_dims, 1 dim, type, offset

// block sizes from ggml's block structs (the spec lists the ids; sizes follow the layouts).
constexpr GgmlTypeTraits kTypes[] = {
    {GgmlType::kF32, "F32", 1, 4, true},
    {GgmlType::kF16, "F16", 1, 2, true},
    {GgmlType::kQ4_0, "Q4_0", 32, 18, true},
    {GgmlType::kQ4_1, "Q4_1", 32, 20, false},
    {GgmlType::kQ5_0, "Q5_0", 32, 22, false},
    {GgmlType::kQ5_1, "Q5_1", 32, 24, false},
    {GgmlType::kQ8_0, "Q8_0", 32, 34, true},
    {GgmlType::kQ8_1, "Q8_1", 32, 36, false},
    {GgmlType::kQ2_K, "Q2_K", 256, 84, false},
    {GgmlType::kQ3_K, "Q3_K", 256, 110, false},
    {GgmlType::kQ4_K, "Q4_K", 256, 144, true},
    {GgmlType::kQ5_K, "Q5_K", 256, 176, true},
    {GgmlType::kQ6_K, "Q6_K", 256, 210, true},
    {GgmlType::kQ8_K, "Q8_K", 256, 292, false},
    {GgmlType::kIQ2_XXS, "IQ2_XXS", 256, 66, false},
    {GgmlType::kIQ2_XS, "IQ2_XS", 256, 74, false},
    {GgmlType::kIQ3_XXS, "IQ3_XXS", 256, 98, false},
    {GgmlType::kIQ1_S, "IQ1_S", 256, 50, false},
    {GgmlType::kIQ4_NL, "IQ4_NL", 32, 18, false},
    {GgmlType::kIQ3_S, "IQ3_S", 256, 110, false},
    {GgmlType::kIQ2_S, "IQ2_S", 256, 82, false},
    {GgmlType::kIQ4_XS, "IQ4_XS", 256, 136, false},
    {GgmlType::kI8, "I8", 1, 1, false},
    {GgmlType::kI16, "I16", 1, 2, false},
    {GgmlType::kI32, "I32", 1, 4, false},
    {GgmlType::kI64, "I64", 1, 8, false},
    {GgmlType::kF64, "F64", 1, 8, false},
    {GgmlType::kIQ1_M, "IQ1_M", 256, 56, false},
    {GgmlType::kBF16, "BF16", 1, 2, true},
    {GgmlType::kTQ1_0, "TQ1_0", 256, 54, false},
    {GgmlType::kTQ2_0, "TQ2_0", 256, 66, false},
    {GgmlType::kMXFP4, "MXFP4", 32, 17, false},
};

struct RemovedType {
  uint32_t id;
  std::string_view name;
};
constexpr RemovedType kRemovedTypes[] = {
    {4, "Q4_2"},      {5, "Q4_3"},        {31, "Q4_0_4_4"},   {32, "Q4_0_4_8"},
    {33, "Q4_0_8_8"}, {36, "IQ4_NL_4_4"}, {37, "IQ4_NL_4_8"}, {38, "IQ4_NL_8_8"},
};

// Order in which supported types are listed in messages.
constexpr GgmlType kSupportedOrder[] = {GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16,
                                        GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_K,
                                        GgmlType::kQ5_K, GgmlType::kQ6_K};

bool KnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kF64); }

// Bytes of a numeric/bool scalar; 0 for string and array.
size_t ScalarSize(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

// Fewest bytes one value of type t takes in a file.
uint64_t MinEncodedBytes(GgufValueType t) {
  if (t == GgufValueType::kString) return 8;
  if (t == GgufValueType::kArray) return 4 + 8;
  return ScalarSize(t);
}

bool IsIntegerType(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kU16:
    case GgufValueType::kI16:
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kU64:
    case GgufValueType::kI64:
      return true;
    default:
      return false;
  }
}

bool IsFloatType(GgufValueType t) { return t == GgufValueType::kF32 || t == GgufValueType::kF64; }

// The value of integer type t stored (zero-extended) in `bits`.
__int128 IntOf(GgufValueType t, uint64_t bits) {
  switch (t) {
    case GgufValueType::kI8:
      return static_cast<int8_t>(static_cast<uint8_t>(bits));
    case GgufValueType::kI16:
      return static_cast<int16_t>(static_cast<uint16_t>(bits));
    case GgufValueType::kI32:
      return static_cast<int32_t>(static_cast<uint32_t>(bits));
    case GgufValueType::kI64:
      return static_cast<int64_t>(bits);
    default:
      return bits;
  }
}

double FloatOf(GgufValueType t, uint64_t bits) {
  if (t == GgufValueType::kF32) {
    const uint32_t u = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

uint64_t LoadBits(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

std::string ScalarString(GgufValueType t, uint64_t bits) {
  if (t == GgufValueType::kBool) return bits ? "true" : "false";
  if (IsFloatType(t)) return fmt::format("{}", FloatOf(t, bits));
  const __int128 v = IntOf(t, bits);
  if (v < 0) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", static_cast<uint64_t>(v));
}

// A string for messages: quoted, non-printable bytes escaped, long strings cut.
std::string Quote(std::string_view s, size_t max_chars = 80) {
  std::string out = "'";
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out + "'";
}

// Keys: 1..65535 printable ASCII bytes. Returns the index of the first bad byte, or -1.
int64_t BadKeyByte(std::string_view key) {
  for (size_t i = 0; i < key.size(); ++i) {
    const auto c = static_cast<unsigned char>(key[i]);
    if (c < 0x20 || c > 0x7e) return static_cast<int64_t>(i);
  }
  return -1;
}

std::string KeyProblem(std::string_view key) {
  if (key.empty()) return "key is empty";
  if (key.size() > kGgufMaxKeyBytes)
    return fmt::format("key of {} bytes exceeds the limit of {}", key.size(), kGgufMaxKeyBytes);
  const int64_t bad = BadKeyByte(key);
  if (bad >= 0)
    return fmt::format("key {} has byte 0x{:02x} at position {}; keys must be printable ASCII",
                       Quote(key), static_cast<unsigned char>(key[static_cast<size_t>(bad)]), bad);
  return {};
}

std::string AlignmentProblem(uint64_t a) {
  if (a == 0 || (a & (a - 1)) != 0) return fmt::format("{} is not a power of two", a);
  if (a > kGgufMaxAlignment) return fmt::format("{} exceeds the limit of {}", a, kGgufMaxAlignment);
  return {};
}

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

std::string DimsString(std::span<const int64_t> dims) {
  return fmt::format("[{}]", fmt::join(dims, ","));
}

int ArrayDepth(const GgufValue& v) {
  if (!v.is_array()) return 0;
  int d = 1;
  for (const GgufValue& item : v.items()) d = std::max(d, 1 + ArrayDepth(item));
  return d;
}

template <typename T>
constexpr GgufValueType ValueTypeOf() {
  if constexpr (std::is_same_v<T, uint8_t>) return GgufValueType::kU8;
  if constexpr (std::is_same_v<T, int8_t>) return GgufValueType::kI8;
  if constexpr (std::is_same_v<T, uint16_t>) return GgufValueType::kU16;
  if constexpr (std::is_same_v<T, int16_t>) return GgufValueType::kI16;
  if constexpr (std::is_same_v<T, uint32_t>) return GgufValueType::kU32;
  if constexpr (std::is_same_v<T, int32_t>) return GgufValueType::kI32;
  if constexpr (std::is_same_v<T, uint64_t>) return GgufValueType::kU64;
  if constexpr (std::is_same_v<T, int64_t>) return GgufValueType::kI64;
  if constexpr (std::is_same_v<T, float>) return GgufValueType::kF32;
  if constexpr (std::is_same_v<T, double>) return GgufValueType::kF64;
}

template <typename T>
const char* IntTypeName() {
  if constexpr (std::is_same_v<T, uint32_t>) return "u32";
  if constexpr (std::is_same_v<T, int32_t>) return "i32";
  if constexpr (std::is_same_v<T, uint64_t>) return "u64";
  if constexpr (std::is_same_v<T, int64_t>) return "i64";
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Types

std::span<const GgmlTypeTraits> AllGgmlTypes() { return kTypes; }

const GgmlTypeTraits* FindGgmlType(uint32_t id) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.type) == id) return &t;
  return nullptr;
}

const GgmlTypeTraits& GgufTypeInfo(GgmlType type) {
  const GgmlTypeTraits* t = FindGgmlType(static_cast<uint32_t>(type));
  if (!t) Fail(kTag, "unknown ggml type {}", static_cast<uint32_t>(type));
  return *t;
}

std::string_view GgmlTypeName(GgmlType type) { return GgufTypeInfo(type).name; }

std::string SupportedGgmlTypeNames() {
  std::string out;
  for (GgmlType t : kSupportedOrder) {
    if (!out.empty()) out += ", ";
    out += GgmlTypeName(t);
  }
  return out;
}

std::optional<uint64_t> GgmlTensorBytes(GgmlType type, std::span<const int64_t> dims) {
  const GgmlTypeTraits* t = FindGgmlType(static_cast<uint32_t>(type));
  if (!t || dims.empty()) return std::nullopt;
  uint64_t numel = 1;
  for (int64_t d : dims) {
    if (d < 1) return std::nullopt;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) return std::nullopt;
  }
  if (numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  if (static_cast<uint64_t>(dims[0]) % t->block_elems != 0) return std::nullopt;
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel / t->block_elems, uint64_t{t->block_bytes}, &bytes))
    return std::nullopt;
  if (bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return bytes;
}

std::string GgufValueTypeName(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
      return "u8";
    case GgufValueType::kI8:
      return "i8";
    case GgufValueType::kU16:
      return "u16";
    case GgufValueType::kI16:
      return "i16";
    case GgufValueType::kU32:
      return "u32";
    case GgufValueType::kI32:
      return "i32";
    case GgufValueType::kF32:
      return "f32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kU64:
      return "u64";
    case GgufValueType::kI64:
      return "i64";
    case GgufValueType::kF64:
      return "f64";
  }
  return fmt::format("type {}", static_cast<uint32_t>(t));
}

// ------------------------------------------------------------------------------------------------
// Values

GgufValue GgufValue::Scalar(GgufValueType t, uint64_t bits) {
  GgufValue v;
  v.type_ = t;
  v.bits_ = bits;
  return v;
}

GgufValue GgufValue::U8(uint8_t v) { return Scalar(GgufValueType::kU8, v); }
GgufValue GgufValue::I8(int8_t v) { return Scalar(GgufValueType::kI8, static_cast<uint8_t>(v)); }
GgufValue GgufValue::U16(uint16_t v) { return Scalar(GgufValueType::kU16, v); }
GgufValue GgufValue::I16(int16_t v) {
  return Scalar(GgufValueType::kI16, static_cast<uint16_t>(v));
}
GgufValue GgufValue::U32(uint32_t v) { return Scalar(GgufValueType::kU32, v); }
GgufValue GgufValue::I32(int32_t v) {
  return Scalar(GgufValueType::kI32, static_cast<uint32_t>(v));
}
GgufValue GgufValue::U64(uint64_t v) { return Scalar(GgufValueType::kU64, v); }
GgufValue GgufValue::I64(int64_t v) {
  return Scalar(GgufValueType::kI64, static_cast<uint64_t>(v));
}
GgufValue GgufValue::F32(float v) {
  return Scalar(GgufValueType::kF32, std::bit_cast<uint32_t>(v));
}
GgufValue GgufValue::F64(double v) {
  return Scalar(GgufValueType::kF64, std::bit_cast<uint64_t>(v));
}
GgufValue GgufValue::Bool(bool v) { return Scalar(GgufValueType::kBool, v ? 1 : 0); }

GgufValue GgufValue::String(std::string v) {
  GgufValue out;
  out.type_ = GgufValueType::kString;
  out.str_ = std::move(v);
  return out;
}

template <typename T>
GgufValue GgufValue::Array(std::span<const T> v) {
  GgufValue out;
  out.type_ = GgufValueType::kArray;
  out.elem_ = ValueTypeOf<T>();
  out.count_ = v.size();
  out.raw_.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.raw_.data(), v.data(), out.raw_.size());
  return out;
}
template GgufValue GgufValue::Array<uint8_t>(std::span<const uint8_t>);
template GgufValue GgufValue::Array<int8_t>(std::span<const int8_t>);
template GgufValue GgufValue::Array<uint16_t>(std::span<const uint16_t>);
template GgufValue GgufValue::Array<int16_t>(std::span<const int16_t>);
template GgufValue GgufValue::Array<uint32_t>(std::span<const uint32_t>);
template GgufValue GgufValue::Array<int32_t>(std::span<const int32_t>);
template GgufValue GgufValue::Array<uint64_t>(std::span<const uint64_t>);
template GgufValue GgufValue::Array<int64_t>(std::span<const int64_t>);
template GgufValue GgufValue::Array<float>(std::span<const float>);
template GgufValue GgufValue::Array<double>(std::span<const double>);

GgufValue GgufValue::Bools(const std::vector<bool>& v) {
  GgufValue out;
  out.type_ = GgufValueType::kArray;
  out.elem_ = GgufValueType::kBool;
  out.count_ = v.size();
  out.raw_.assign(v.begin(), v.end());
  return out;
}

GgufValue GgufValue::Strings(std::vector<std::string> v) {
  GgufValue out;
  out.type_ = GgufValueType::kArray;
  out.elem_ = GgufValueType::kString;
  out.count_ = v.size();
  out.strings_ = std::move(v);
  return out;
}

GgufValue GgufValue::Arrays(std::vector<GgufValue> items) {
  for (size_t i = 0; i < items.size(); ++i)
    if (!items[i].is_array())
      Fail(kTag, "array of arrays: item {} is {}, not an array", i, items[i].ToString());
  GgufValue out;
  out.type_ = GgufValueType::kArray;
  out.elem_ = GgufValueType::kArray;
  out.count_ = items.size();
  out.items_ = std::move(items);
  return out;
}

GgufValue GgufValue::EmptyArray(GgufValueType elem) {
  if (!KnownValueType(static_cast<uint32_t>(elem)))
    Fail(kTag, "empty array of unknown value type {}", static_cast<uint32_t>(elem));
  GgufValue out;
  out.type_ = GgufValueType::kArray;
  out.elem_ = elem;
  return out;
}

bool GgufValue::is_integer() const { return IsIntegerType(type_); }
bool GgufValue::is_float() const { return IsFloatType(type_); }

std::optional<int64_t> GgufValue::AsI64() const {
  if (!is_integer()) return std::nullopt;
  const __int128 v = IntOf(type_, bits_);
  if (v > std::numeric_limits<int64_t>::max()) return std::nullopt;
  return static_cast<int64_t>(v);
}

std::optional<uint64_t> GgufValue::AsU64() const {
  if (!is_integer()) return std::nullopt;
  const __int128 v = IntOf(type_, bits_);
  if (v < 0) return std::nullopt;
  return static_cast<uint64_t>(v);
}

std::optional<double> GgufValue::AsF64() const {
  if (is_float()) return FloatOf(type_, bits_);
  if (is_integer()) return static_cast<double>(IntOf(type_, bits_));
  return std::nullopt;
}

std::optional<bool> GgufValue::AsBool() const {
  if (type_ != GgufValueType::kBool) return std::nullopt;
  return bits_ != 0;
}

const std::string& GgufValue::str() const {
  if (type_ != GgufValueType::kString) Fail(kTag, "value {} is not a string", ToString());
  return str_;
}

GgufValue GgufValue::At(uint64_t i) const {
  const size_t sz = ScalarSize(elem_);
  if (!is_array() || sz == 0 || i >= count_)
    Fail(kTag, "element {} of {}: not a numeric array element", i, ToString());
  return Scalar(elem_, LoadBits(raw_.data() + i * sz, sz));
}

std::string GgufValue::ToString(size_t max_items) const {
  if (type_ == GgufValueType::kString) return "string " + Quote(str_);
  if (!is_array()) return GgufValueTypeName(type_) + " " + ScalarString(type_, bits_);
  std::string out = fmt::format("array<{}>[{}]", GgufValueTypeName(elem_), count_);
  if (count_ == 0) return out;
  out += " {";
  const uint64_t n = std::min<uint64_t>(count_, max_items);
  for (uint64_t i = 0; i < n; ++i) {
    if (i) out += ", ";
    if (elem_ == GgufValueType::kString) {
      out += Quote(strings_[i], 40);
    } else if (elem_ == GgufValueType::kArray) {
      out += items_[i].ToString(max_items);
    } else {
      const size_t sz = ScalarSize(elem_);
      out += ScalarString(elem_, LoadBits(raw_.data() + i * sz, sz));
    }
  }
  if (n < count_) out += ", ...";
  return out + "}";
}

bool GgufValue::operator==(const GgufValue& o) const {
  return type_ == o.type_ && bits_ == o.bits_ && str_ == o.str_ && elem_ == o.elem_ &&
         count_ == o.count_ && raw_ == o.raw_ && strings_ == o.strings_ && items_ == o.items_;
}

// ------------------------------------------------------------------------------------------------
// Reader

std::vector<int64_t> GgufTensorInfo::RowMajorShape() const {
  return std::vector<int64_t>(dims.rbegin(), dims.rend());
}

std::string GgufTensorInfo::ShapeStr() const { return DimsString(dims); }

// Reads the header, metadata and tensor infos of one file into a GgufFile, checking every read
// against the end of the file and every count against the bytes that could hold it.
class GgufParser {
 public:
  GgufParser(GgufFile& f, const uint8_t* p, size_t size) : f_(f), p_(p), size_(size) {}

  void Run() {
    ReadHeader();
    ReadMetadata();
    ReadAlignment();
    ReadTensorInfos();
    PlaceTensors();
  }

 private:
  template <typename... Args>
  [[noreturn]] void Error(fmt::format_string<Args...> fmt_str, Args&&... args) const {
    Fail(kTag, "{}: {}{}", f_.name_, where_.empty() ? "" : where_ + ": ",
         fmt::format(fmt_str, std::forward<Args>(args)...));
  }

  uint64_t Left() const { return size_ - pos_; }

  // `what` + `suffix` names the field in the message (joined only on failure).
  void Need(uint64_t n, std::string_view what, std::string_view suffix = {}) const {
    if (n > Left())
      Error("truncated: {}{} needs {} bytes at offset {}, the file ends at {}", what, suffix, n,
            pos_, size_);
  }

  template <typename T>
  T Read(std::string_view what, std::string_view suffix = {}) {
    Need(sizeof(T), what, suffix);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  static constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

  // A u64 length and that many bytes; the length must be <= max_len and fit in the file.
  std::string_view ReadString(std::string_view what, uint64_t max_len) {
    const auto n = Read<uint64_t>(what, " length");
    if (n > max_len) Error("{} length {} exceeds the limit of {} bytes", what, n, max_len);
    if (n > Left())
      Error("{} length {} runs past the end of the file ({} bytes left at offset {})", what, n,
            Left(), pos_);
    std::string_view s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
  }

  GgufValueType ReadValueType(std::string_view what) {
    const auto t = Read<uint32_t>(what);
    if (!KnownValueType(t))
      Error("unknown {} {} (known: 0..{})", what, t, static_cast<uint32_t>(GgufValueType::kF64));
    return static_cast<GgufValueType>(t);
  }

  void ReadHeader() {
    where_ = "header";
    Need(4, "magic");
    if (std::memcmp(p_, kMagic, 4) != 0)
      Error(
          "not a GGUF file: it starts with bytes {:02x} {:02x} {:02x} {:02x}, expected "
          "47 47 55 46 ('GGUF')",
          p_[0], p_[1], p_[2], p_[3]);
    pos_ = 4;
    const auto version = Read<uint32_t>("version");
    if (version == 1)
      Error("GGUF version 1 is not supported (it used 32-bit counts); versions 2 and 3 are");
    if (version != 2 && version != 3) {
      const uint32_t swapped = __builtin_bswap32(version);
      if (swapped >= 1 && swapped <= 3)
        Error(
            "the version field reads {} little-endian, {} big-endian: this is a big-endian "
            "GGUF file, only little-endian files are supported",
            version, swapped);
      Error("unsupported GGUF version {} (supported: 2, 3)", version);
    }
    f_.version_ = version;
    tensor_count_ = Read<uint64_t>("tensor_count");
    kv_count_ = Read<uint64_t>("metadata_kv_count");
    const uint64_t left = Left();
    if (kv_count_ > left / kMinKvBytes)
      Error(
          "metadata_kv_count {} is more than the {} bytes after the header could hold (at "
          "least {} bytes per key-value pair)",
          kv_count_, left, kMinKvBytes);
    if (tensor_count_ > left / kMinTensorInfoBytes)
      Error(
          "tensor_count {} is more than the {} bytes after the header could hold (at least {} "
          "bytes per tensor info)",
          tensor_count_, left, kMinTensorInfoBytes);
    if (kv_count_ * kMinKvBytes + tensor_count_ * kMinTensorInfoBytes > left)
      Error(
          "metadata_kv_count {} and tensor_count {} need at least {} bytes, only {} follow the "
          "header",
          kv_count_, tensor_count_, kv_count_ * kMinKvBytes + tensor_count_ * kMinTensorInfoBytes,
          left);
  }

  void ReadMetadata() {
    f_.kv_.reserve(kv_count_);
    for (uint64_t i = 0; i < kv_count_; ++i) {
      where_ = fmt::format("key-value pair #{}", i);
      std::string_view key = ReadString("key", kGgufMaxKeyBytes);
      if (const std::string problem = KeyProblem(key); !problem.empty()) Error("{}", problem);
      where_ = fmt::format("key '{}'", key);
      if (auto it = f_.kv_index_.find(std::string(key)); it != f_.kv_index_.end())
        Error("appears twice (key-value pairs #{} and #{})", it->second, i);
      const GgufValueType t = ReadValueType("value type");
      GgufValue v = ReadValue(t, 0);
      f_.kv_index_.emplace(std::string(key), f_.kv_.size());
      f_.kv_.emplace_back(std::string(key), std::move(v));
    }
  }

  GgufValue ReadValue(GgufValueType t, int depth) {
    if (t == GgufValueType::kString)
      return GgufValue::String(std::string(ReadString("string", kNoLimit)));
    if (t != GgufValueType::kArray) {
      const size_t sz = ScalarSize(t);
      if (sz > Left()) Need(sz, GgufValueTypeName(t), " value");
      const uint64_t bits = LoadBits(p_ + pos_, sz);
      if (t == GgufValueType::kBool && bits > 1) Error("bool value {} is neither 0 nor 1", bits);
      pos_ += sz;
      return GgufValue::Scalar(t, bits);
    }
    if (depth + 1 > kGgufMaxArrayDepth)
      Error("arrays nested more than {} deep at offset {}", kGgufMaxArrayDepth, pos_);
    GgufValue v;
    v.type_ = GgufValueType::kArray;
    v.elem_ = ReadValueType("array element type");
    const auto n = Read<uint64_t>("array length");
    const uint64_t min_bytes = MinEncodedBytes(v.elem_);
    if (n > Left() / min_bytes)
      Error(
          "array of {} {} elements needs at least {} bytes each, only {} bytes are left at "
          "offset {}",
          n, GgufValueTypeName(v.elem_), min_bytes, Left(), pos_);
    v.count_ = n;
    switch (v.elem_) {
      case GgufValueType::kString:
        v.strings_.reserve(n);
        for (uint64_t i = 0; i < n; ++i)
          v.strings_.emplace_back(ReadString("string element", kNoLimit));
        break;
      case GgufValueType::kArray:
        v.items_.reserve(n);
        for (uint64_t i = 0; i < n; ++i)
          v.items_.push_back(ReadValue(GgufValueType::kArray, depth + 1));
        break;
      default: {
        const uint64_t bytes = n * min_bytes;  // <= Left(), checked above
        v.raw_.assign(p_ + pos_, p_ + pos_ + bytes);
        if (v.elem_ == GgufValueType::kBool)
          for (uint64_t i = 0; i < n; ++i)
            if (v.raw_[i] > 1) Error("bool array element {} is {}, neither 0 nor 1", i, v.raw_[i]);
        pos_ += bytes;
      }
    }
    return v;
  }

  void ReadAlignment() {
    where_.clear();
    const GgufValue* a = f_.Find(kAlignmentKey);
    if (!a) return;
    where_ = fmt::format("key '{}'", kAlignmentKey);
    const auto v = a->AsU64();
    if (!v) Error("is {}, expected an unsigned integer (u32)", a->ToString());
    if (const std::string problem = AlignmentProblem(*v); !problem.empty())
      Error("alignment {}", problem);
    f_.alignment_ = *v;
  }

  void ReadTensorInfos() {
    where_.clear();
    if (tensor_count_ > Left() / kMinTensorInfoBytes)
      Error(
          "tensor_count {} needs at least {} bytes per tensor info, only {} bytes follow the "
          "metadata at offset {}",
          tensor_count_, kMinTensorInfoBytes, Left(), pos_);
    f_.tensors_.reserve(tensor_count_);
    for (uint64_t i = 0; i < tensor_count_; ++i) {
      where_ = fmt::format("tensor info #{}", i);
      GgufTensorInfo t;
      t.name = std::string(ReadString("tensor name", kGgufMaxTensorNameBytes));
      if (t.name.empty()) Error("tensor name is empty");
      where_ = fmt::format("tensor {}", Quote(t.name));
      if (auto it = f_.tensor_index_.find(t.name); it != f_.tensor_index_.end())
        Error("appears twice (tensor infos #{} and #{})", it->second, i);
      const auto n_dims = Read<uint32_t>("n_dims");
      if (n_dims < 1 || n_dims > static_cast<uint32_t>(kGgufMaxDims))
        Error("n_dims is {}, expected 1..{}", n_dims, kGgufMaxDims);
      for (uint32_t j = 0; j < n_dims; ++j) {
        const auto d = Read<uint64_t>("dimension");
        if (d == 0) Error("dimension {} is 0", j);
        if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          Error("dimension {} is {}, too large", j, d);
        t.dims.push_back(static_cast<int64_t>(d));
      }
      const auto type_id = Read<uint32_t>("ggml type");
      const GgmlTypeTraits* traits = FindGgmlType(type_id);
      if (!traits) {
        for (const auto& r : kRemovedTypes)
          if (r.id == type_id)
            Error("has type {} ({}), which was removed from ggml; supported: {}", type_id, r.name,
                  SupportedGgmlTypeNames());
        Error("has unknown ggml type {}", type_id);
      }
      t.type = traits->type;
      if (static_cast<uint64_t>(t.dims[0]) % traits->block_elems != 0)
        Error("shape {} of {}: ne0 = {} is not a multiple of the block size {}", t.ShapeStr(),
              traits->name, t.dims[0], traits->block_elems);
      const auto nbytes = GgmlTensorBytes(t.type, t.dims);
      if (!nbytes)
        Error("shape {} of {} overflows a 63-bit byte count", t.ShapeStr(), traits->name);
      t.nbytes = *nbytes;
      t.numel = static_cast<int64_t>(*nbytes / traits->block_bytes * traits->block_elems);
      t.offset = Read<uint64_t>("offset");
      f_.tensor_index_.emplace(t.name, f_.tensors_.size());
      f_.tensors_.push_back(std::move(t));
    }
  }

  void PlaceTensors() {
    where_.clear();
    const uint64_t a = f_.alignment_;
    f_.data_offset_ = AlignUp(pos_, a);
    f_.size_ = size_;
    if (f_.tensors_.empty()) return;
    if (f_.data_offset_ > size_)
      Error(
          "truncated: the tensor data section starts at offset {} (alignment {}), the file "
          "ends at {}",
          f_.data_offset_, a, size_);
    const uint64_t data_size = size_ - f_.data_offset_;
    for (GgufTensorInfo& t : f_.tensors_) {
      where_ = fmt::format("tensor {}", Quote(t.name));
      if (t.offset % a != 0) Error("offset {} is not a multiple of the alignment {}", t.offset, a);
      if (t.offset > data_size || t.nbytes > data_size - t.offset)
        Error(
            "{} bytes of {} at offset {} run past the end of the data section ({} bytes from "
            "file offset {}; the file is {} bytes)",
            t.nbytes, t.traits().name, t.offset, data_size, f_.data_offset_, size_);
      t.data = p_ + f_.data_offset_ + t.offset;
    }
    where_.clear();
    // No two tensors may share bytes (every tensor has at least one byte).
    std::vector<size_t> order(f_.tensors_.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(),
              [&](size_t x, size_t y) { return f_.tensors_[x].offset < f_.tensors_[y].offset; });
    const GgufTensorInfo* last = nullptr;  // the tensor reaching furthest so far
    for (size_t i : order) {
      const GgufTensorInfo& t = f_.tensors_[i];
      if (last && t.offset < last->offset + last->nbytes)
        Error("tensors {} [{}, {}) and {} [{}, {}) overlap", Quote(last->name), last->offset,
              last->offset + last->nbytes, Quote(t.name), t.offset, t.offset + t.nbytes);
      if (!last || t.offset + t.nbytes > last->offset + last->nbytes) last = &t;
    }
  }

  GgufFile& f_;
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  uint64_t tensor_count_ = 0, kv_count_ = 0;
  std::string where_;  // what is being read, for messages: "key 'general.name'"
};

GgufFile GgufFile::Open(const std::string& path) {
  GgufFile f;
  f.name_ = path;
  MappedFile m = MapFileReadOnly(path, kTag);
  f.storage_ = std::move(m.storage);
  f.Parse(m.data, m.size);
  return f;
}

GgufFile GgufFile::FromBytes(std::string name, const void* data, size_t size) {
  GgufFile f;
  f.name_ = std::move(name);
  constexpr std::align_val_t kAlign{64};
  void* buf = ::operator new(std::max<size_t>(size, 1), kAlign);
  if (size) std::memcpy(buf, data, size);
  f.storage_ = std::shared_ptr<const void>(
      buf, [](const void* q) { ::operator delete (const_cast<void*>(q), std::align_val_t{64}); });
  f.Parse(static_cast<const uint8_t*>(buf), size);
  return f;
}

void GgufFile::Parse(const uint8_t* bytes, size_t size) {
  kv_.clear();
  kv_index_.clear();
  tensors_.clear();
  tensor_index_.clear();
  GgufParser(*this, bytes, size).Run();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufValue& GgufFile::Get(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (!v) Fail(kTag, "{}: no metadata key '{}' ({} keys in the file)", name_, key, kv_.size());
  return *v;
}

namespace {

template <typename T>
T IntAs(const std::string& file, std::string_view key, const GgufValue& v) {
  if (!v.is_integer())
    Fail(kTag, "{}: key '{}' is {}, expected an integer ({})", file, key, v.ToString(),
         IntTypeName<T>());
  if constexpr (std::is_signed_v<T>) {
    const auto x = v.AsI64();
    if (!x || *x < std::numeric_limits<T>::min() || *x > std::numeric_limits<T>::max())
      Fail(kTag, "{}: key '{}' is {}, out of range for {}", file, key, v.ToString(),
           IntTypeName<T>());
    return static_cast<T>(*x);
  } else {
    const auto x = v.AsU64();
    if (!x || *x > std::numeric_limits<T>::max())
      Fail(kTag, "{}: key '{}' is {}, out of range for {}", file, key, v.ToString(),
           IntTypeName<T>());
    return static_cast<T>(*x);
  }
}

double FloatAs(const std::string& file, std::string_view key, const GgufValue& v) {
  const auto x = v.AsF64();
  if (!x) Fail(kTag, "{}: key '{}' is {}, expected a number", file, key, v.ToString());
  return *x;
}

float ToF32(const std::string& file, std::string_view key, double d) {
  if (std::isfinite(d) && std::fabs(d) > std::numeric_limits<float>::max())
    Fail(kTag, "{}: key '{}' is {}, out of range for f32", file, key, d);
  return static_cast<float>(d);
}

}  // namespace

uint32_t GgufFile::GetU32(std::string_view key) const {
  return IntAs<uint32_t>(name_, key, Get(key));
}
uint32_t GgufFile::GetU32(std::string_view key, uint32_t fallback) const {
  const GgufValue* v = Find(key);
  return v ? IntAs<uint32_t>(name_, key, *v) : fallback;
}
int32_t GgufFile::GetI32(std::string_view key) const {
  return IntAs<int32_t>(name_, key, Get(key));
}
int32_t GgufFile::GetI32(std::string_view key, int32_t fallback) const {
  const GgufValue* v = Find(key);
  return v ? IntAs<int32_t>(name_, key, *v) : fallback;
}
uint64_t GgufFile::GetU64(std::string_view key) const {
  return IntAs<uint64_t>(name_, key, Get(key));
}
uint64_t GgufFile::GetU64(std::string_view key, uint64_t fallback) const {
  const GgufValue* v = Find(key);
  return v ? IntAs<uint64_t>(name_, key, *v) : fallback;
}
int64_t GgufFile::GetI64(std::string_view key) const {
  return IntAs<int64_t>(name_, key, Get(key));
}
int64_t GgufFile::GetI64(std::string_view key, int64_t fallback) const {
  const GgufValue* v = Find(key);
  return v ? IntAs<int64_t>(name_, key, *v) : fallback;
}
float GgufFile::GetF32(std::string_view key) const {
  return ToF32(name_, key, FloatAs(name_, key, Get(key)));
}
float GgufFile::GetF32(std::string_view key, float fallback) const {
  const GgufValue* v = Find(key);
  return v ? ToF32(name_, key, FloatAs(name_, key, *v)) : fallback;
}
double GgufFile::GetF64(std::string_view key) const { return FloatAs(name_, key, Get(key)); }

bool GgufFile::GetBool(std::string_view key) const {
  const GgufValue& v = Get(key);
  const auto b = v.AsBool();
  if (!b) Fail(kTag, "{}: key '{}' is {}, expected a bool", name_, key, v.ToString());
  return *b;
}
bool GgufFile::GetBool(std::string_view key, bool fallback) const {
  return Has(key) ? GetBool(key) : fallback;
}

const std::string& GgufFile::GetString(std::string_view key) const {
  const GgufValue& v = Get(key);
  if (v.type() != GgufValueType::kString)
    Fail(kTag, "{}: key '{}' is {}, expected a string", name_, key, v.ToString());
  return v.str();
}
std::string GgufFile::GetString(std::string_view key, std::string_view fallback) const {
  return Has(key) ? GetString(key) : std::string(fallback);
}

const GgufValue& GgufFile::GetArray(std::string_view key) const {
  const GgufValue& v = Get(key);
  if (!v.is_array()) Fail(kTag, "{}: key '{}' is {}, expected an array", name_, key, v.ToString());
  return v;
}

const std::vector<std::string>& GgufFile::GetStrings(std::string_view key) const {
  const GgufValue& v = GetArray(key);
  if (v.array_type() != GgufValueType::kString)
    Fail(kTag, "{}: key '{}' is {}, expected an array of strings", name_, key, v.ToString());
  return v.strings();
}

std::vector<int64_t> GgufFile::GetInts(std::string_view key) const {
  const GgufValue& v = GetArray(key);
  if (!IsIntegerType(v.array_type()))
    Fail(kTag, "{}: key '{}' is {}, expected an array of integers", name_, key, v.ToString());
  std::vector<int64_t> out(v.size());
  for (uint64_t i = 0; i < v.size(); ++i) {
    const auto x = v.At(i).AsI64();
    if (!x)
      Fail(kTag, "{}: key '{}' element {} is {}, out of range for i64", name_, key, i,
           v.At(i).ToString());
    out[i] = *x;
  }
  return out;
}

std::vector<float> GgufFile::GetF32s(std::string_view key) const {
  const GgufValue& v = GetArray(key);
  if (!IsFloatType(v.array_type()))
    Fail(kTag, "{}: key '{}' is {}, expected an array of f32 or f64", name_, key, v.ToString());
  std::vector<float> out(v.size());
  for (uint64_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(*v.At(i).AsF64());
  return out;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::GetTensor(std::string_view name) const {
  const GgufTensorInfo* t = FindTensor(name);
  if (!t)
    Fail(kTag, "{}: no tensor {} ({} tensors in the file)", name_, Quote(name), tensors_.size());
  return *t;
}

void GgufFile::RequireSupported(const GgufTensorInfo& t) const {
  if (!t.traits().supported)
    Fail(kTag, "{}: tensor {} has type {} ({}), supported: {}", name_, Quote(t.name),
         t.traits().name, static_cast<uint32_t>(t.type), SupportedGgmlTypeNames());
}

void GgufFile::RequireAllSupported() const {
  for (const auto& t : tensors_) RequireSupported(t);
}

// ------------------------------------------------------------------------------------------------
// Writer

namespace {

void PutU32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutU64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutString(std::vector<uint8_t>& out, std::string_view s) {
  PutU64(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

// Writes one value (without its type tag).
class GgufValueEncoder {
 public:
  static void Put(std::vector<uint8_t>& out, const GgufValue& v) {
    if (v.type_ == GgufValueType::kString) return PutString(out, v.str_);
    if (v.type_ != GgufValueType::kArray) {
      const size_t sz = ScalarSize(v.type_);
      for (size_t i = 0; i < sz; ++i) out.push_back(static_cast<uint8_t>(v.bits_ >> (8 * i)));
      return;
    }
    PutU32(out, static_cast<uint32_t>(v.elem_));
    PutU64(out, v.count_);
    if (v.elem_ == GgufValueType::kString) {
      for (const auto& s : v.strings_) PutString(out, s);
    } else if (v.elem_ == GgufValueType::kArray) {
      for (const auto& item : v.items_) Put(out, item);
    } else {
      out.insert(out.end(), v.raw_.begin(), v.raw_.end());
    }
  }
};

void GgufWriter::AddMetadata(std::string key, GgufValue value) {
  if (const std::string problem = KeyProblem(key); !problem.empty())
    Fail(kTag, "writer: {}", problem);
  if (kv_index_.count(key)) Fail(kTag, "writer: key '{}' added twice", key);
  if (ArrayDepth(value) > kGgufMaxArrayDepth)
    Fail(kTag, "writer: key '{}' has arrays nested more than {} deep", key, kGgufMaxArrayDepth);
  if (key == kAlignmentKey) {
    if (value.type() != GgufValueType::kU32)
      Fail(kTag, "writer: key '{}' is {}, expected a u32", key, value.ToString());
    if (const std::string problem = AlignmentProblem(*value.AsU64()); !problem.empty())
      Fail(kTag, "writer: alignment {}", problem);
    alignment_ = *value.AsU64();
  }
  kv_index_.emplace(key, kv_.size());
  kv_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::AddTensor(std::string name, GgmlType type, std::vector<int64_t> dims,
                           const void* data, size_t nbytes) {
  Add(std::move(name), type, std::move(dims), data, nbytes, /*copy=*/true);
}

void GgufWriter::AddTensorView(std::string name, GgmlType type, std::vector<int64_t> dims,
                               const void* data, size_t nbytes) {
  Add(std::move(name), type, std::move(dims), data, nbytes, /*copy=*/false);
}

void GgufWriter::AddTensorLazy(std::string name, GgmlType type, std::vector<int64_t> dims,
                               size_t nbytes, std::function<void(uint8_t*)> fill) {
  if (!fill) Fail(kTag, "writer: tensor {} has no fill function", Quote(name));
  static const uint8_t kPlaceholder = 0;
  Add(std::move(name), type, std::move(dims), &kPlaceholder, nbytes, false);
  tensors_.back()->data = nullptr;
  tensors_.back()->fill = std::move(fill);
}

const uint8_t* GgufWriter::DataOf(const Entry& e, std::vector<uint8_t>& buffer) const {
  if (!e.fill) return e.data;
  buffer.assign(e.nbytes, 0);
  e.fill(buffer.data());
  return buffer.data();
}

void GgufWriter::Add(std::string name, GgmlType type, std::vector<int64_t> dims, const void* data,
                     size_t nbytes, bool copy) {
  if (name.empty()) Fail(kTag, "writer: empty tensor name");
  if (name.size() > kGgufMaxTensorNameBytes)
    Fail(kTag, "writer: tensor name {} is {} bytes, more than the limit of {}", Quote(name),
         name.size(), kGgufMaxTensorNameBytes);
  if (tensor_index_.count(name)) Fail(kTag, "writer: tensor {} added twice", Quote(name));
  const GgmlTypeTraits* traits = FindGgmlType(static_cast<uint32_t>(type));
  if (!traits)
    Fail(kTag, "writer: tensor {} has unknown ggml type {}", Quote(name),
         static_cast<uint32_t>(type));
  if (dims.empty() || dims.size() > static_cast<size_t>(kGgufMaxDims))
    Fail(kTag, "writer: tensor {} has {} dimensions, expected 1..{}", Quote(name), dims.size(),
         kGgufMaxDims);
  for (int64_t d : dims)
    if (d < 1)
      Fail(kTag, "writer: tensor {} shape {} has a dimension < 1", Quote(name), DimsString(dims));
  if (dims[0] % traits->block_elems != 0)
    Fail(kTag, "writer: tensor {} shape {} of {}: ne0 = {} is not a multiple of the block size {}",
         Quote(name), DimsString(dims), traits->name, dims[0], traits->block_elems);
  const auto need = GgmlTensorBytes(type, dims);
  if (!need) Fail(kTag, "writer: tensor {} shape {} overflows", Quote(name), DimsString(dims));
  if (*need != nbytes)
    Fail(kTag, "writer: tensor {} has {} bytes, shape {} of {} needs {}", Quote(name), nbytes,
         DimsString(dims), traits->name, *need);
  if (data == nullptr) Fail(kTag, "writer: tensor {} has no data", Quote(name));
  auto e = std::make_unique<Entry>();
  e->name = std::move(name);
  e->type = type;
  e->dims = std::move(dims);
  e->nbytes = nbytes;
  if (copy) {
    const auto* src = static_cast<const uint8_t*>(data);
    e->owned.assign(src, src + nbytes);
    e->data = e->owned.data();
  } else {
    e->data = static_cast<const uint8_t*>(data);
  }
  tensor_index_.emplace(e->name, tensors_.size());
  tensors_.push_back(std::move(e));
}

std::vector<uint8_t> GgufWriter::Head() const {
  std::vector<uint8_t> out(kMagic, kMagic + 4);
  PutU32(out, kWriteVersion);
  PutU64(out, tensors_.size());
  PutU64(out, kv_.size());
  for (const auto& [key, value] : kv_) {
    PutString(out, key);
    PutU32(out, static_cast<uint32_t>(value.type()));
    GgufValueEncoder::Put(out, value);
  }
  uint64_t offset = 0;
  for (const auto& e : tensors_) {
    PutString(out, e->name);
    PutU32(out, static_cast<uint32_t>(e->dims.size()));
    for (int64_t d : e->dims) PutU64(out, static_cast<uint64_t>(d));
    PutU32(out, static_cast<uint32_t>(e->type));
    PutU64(out, offset);
    offset += AlignUp(e->nbytes, alignment_);
  }
  out.resize(AlignUp(out.size(), alignment_), 0);
  return out;
}

std::vector<uint8_t> GgufWriter::Serialize() const {
  std::vector<uint8_t> out = Head(), buffer;
  for (const auto& e : tensors_) {
    const uint8_t* data = DataOf(*e, buffer);
    out.insert(out.end(), data, data + e->nbytes);
    out.resize(AlignUp(out.size(), alignment_), 0);
  }
  return out;
}

void GgufWriter::Write(const std::string& path) const {
  AtomicFileWriter w(path);
  const std::vector<uint8_t> head = Head();
  w.Append(head.data(), head.size());
  static constexpr uint8_t kZeros[4096] = {};
  std::vector<uint8_t> buffer;
  for (const auto& e : tensors_) {
    w.Append(DataOf(*e, buffer), e->nbytes);
    for (uint64_t pad = AlignUp(e->nbytes, alignment_) - e->nbytes; pad > 0;) {
      const uint64_t n = std::min<uint64_t>(pad, sizeof kZeros);
      w.Append(kZeros, n);
      pad -= n;
    }
  }
  w.Commit();
}

}  // namespace moe::io
