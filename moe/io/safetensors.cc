#include "moe/io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>

#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/io/file.h"

namespace moe::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts would need byte swaps");

using nlohmann::json;

namespace {

constexpr std::string_view kTag = "safetensors";
constexpr std::string_view kMetadataKey = "__metadata__";

struct DTypeRow {
  StDType type;
  std::string_view name;
  size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {StDType::kBool, "BOOL", 1},  {StDType::kU8, "U8", 1},         {StDType::kI8, "I8", 1},
    {StDType::kU16, "U16", 2},    {StDType::kI16, "I16", 2},       {StDType::kF16, "F16", 2},
    {StDType::kBF16, "BF16", 2},  {StDType::kU32, "U32", 4},       {StDType::kI32, "I32", 4},
    {StDType::kF32, "F32", 4},    {StDType::kU64, "U64", 8},       {StDType::kI64, "I64", 8},
    {StDType::kF64, "F64", 8},    {StDType::kF8E4M3, "F8_E4M3", 1}, {StDType::kF8E5M2, "F8_E5M2", 1},
};

const DTypeRow& Row(StDType t) {
  for (const auto& r : kDTypes)
    if (r.type == t) return r;
  Fail(kTag, "unknown dtype code {}", static_cast<int>(t));
}

// Element count of `shape`, or nullopt when numel * elem_size overflows 64 bits.
std::optional<uint64_t> CheckedBytes(const std::vector<int64_t>& shape, size_t elem_size) {
  for (int64_t d : shape)
    if (d == 0) return 0;
  uint64_t n = elem_size;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

// A JSON value as a short string for messages (long values are cut).
std::string Brief(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Reads element i of a little-endian array of U (possibly unaligned).
template <typename U>
U LoadAt(const uint8_t* p, int64_t i) {
  U v;
  std::memcpy(&v, p + static_cast<size_t>(i) * sizeof(U), sizeof(U));
  return v;
}

template <typename Dst>
void ConvertFloats(const uint8_t* src, StDType st, int64_t n, Dst* dst) {
  switch (st) {
    case StDType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(FromF16(LoadAt<uint16_t>(src, i)));
      return;
    case StDType::kBF16:
      for (int64_t i = 0; i < n; ++i)
        dst[i] = static_cast<Dst>(FromBf16(bf16{LoadAt<uint16_t>(src, i)}));
      return;
    case StDType::kF32:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(LoadAt<float>(src, i));
      return;
    case StDType::kF64:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(LoadAt<double>(src, i));
      return;
    default:
      Fail(kTag, "internal: {} is not a float type", StDTypeName(st));
  }
}

bool IsFloat(StDType t) {
  return t == StDType::kF16 || t == StDType::kBF16 || t == StDType::kF32 || t == StDType::kF64;
}

}  // namespace

std::string_view StDTypeName(StDType t) { return Row(t).name; }
size_t StDTypeSize(StDType t) { return Row(t).size; }

std::optional<StDType> ParseStDType(std::string_view name) {
  for (const auto& r : kDTypes)
    if (r.name == name) return r.type;
  return std::nullopt;
}

StDType ToStDType(DType t) {
  switch (t) {
    case DType::kF32: return StDType::kF32;
    case DType::kF64: return StDType::kF64;
    case DType::kBF16: return StDType::kBF16;
    case DType::kF16: return StDType::kF16;
    default: break;
  }
  Fail(kTag, "{} tensors have no safetensors dtype (block-quantised weights are GGUF's)",
       DTypeName(t));
}

std::optional<DType> ToDType(StDType t) {
  switch (t) {
    case StDType::kF32: return DType::kF32;
    case StDType::kF64: return DType::kF64;
    case StDType::kBF16: return DType::kBF16;
    case StDType::kF16: return DType::kF16;
    default: return std::nullopt;
  }
}

std::string StTensorInfo::ShapeStr() const { return ShapeString(shape); }

// ------------------------------------------------------------------------------------------------
// Reader

SafetensorsFile SafetensorsFile::Open(const std::string& path) {
  SafetensorsFile f;
  f.name_ = path;
  MappedFile m = MapFileReadOnly(path, kTag);
  f.storage_ = std::move(m.storage);
  f.Parse(m.data, m.size);
  return f;
}

SafetensorsFile SafetensorsFile::FromBytes(std::string name, const void* data, size_t size) {
  SafetensorsFile f;
  f.name_ = std::move(name);
  const auto* src = static_cast<const uint8_t*>(data);
  auto copy = std::make_shared<std::vector<uint8_t>>(src, src + size);
  f.storage_ = std::shared_ptr<const void>(copy, copy->data());
  f.Parse(copy->data(), size);
  return f;
}

void SafetensorsFile::Parse(const uint8_t* bytes, size_t size) {
  const std::string& file = name_;
  if (size < 8)
    Fail(kTag, "{}: file is {} bytes, too short for the 8-byte header length", file, size);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  if (n > kMaxSafetensorsHeader)
    Fail(kTag, "{}: header length {} exceeds the limit of {} bytes", file, n,
         kMaxSafetensorsHeader);
  if (n > size - 8)
    Fail(kTag, "{}: header length {} runs past the end of the file ({} bytes follow it)", file, n,
         size - 8);
  const char* hb = reinterpret_cast<const char*>(bytes + 8);
  const uint8_t* data = bytes + 8 + n;
  const uint64_t data_size = size - 8 - n;

  // Duplicate names would silently replace each other in the parsed object: catch them here.
  std::set<std::string> seen;
  std::string duplicate;
  const json::parser_callback_t on_event = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (depth == 1 && ev == json::parse_event_t::key && duplicate.empty() && parsed.is_string()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second) duplicate = k;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(hb, hb + n, on_event);
  } catch (const json::exception& e) {
    Fail(kTag, "{}: header is not valid JSON: {}", file, e.what());
  }
  if (!header.is_object())
    Fail(kTag, "{}: header is a JSON {}, expected an object", file, header.type_name());
  if (!duplicate.empty()) Fail(kTag, "{}: name '{}' appears twice in the header", file, duplicate);

  tensors_.clear();
  metadata_.clear();
  for (const auto& [key, val] : header.items()) {
    if (key == kMetadataKey) {
      if (!val.is_object())
        Fail(kTag, "{}: __metadata__ is a JSON {}, expected an object of strings", file,
             val.type_name());
      for (const auto& [mk, mv] : val.items()) {
        if (!mv.is_string())
          Fail(kTag, "{}: __metadata__ value of '{}' is a JSON {} ({}), expected a string", file,
               mk, mv.type_name(), Brief(mv));
        metadata_.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    // A name is how a loader finds a tensor (and what the writer requires): an empty one is no
    // tensor anyone can ask for.
    if (key.empty()) Fail(kTag, "{}: a tensor in the header has an empty name", file);
    if (!val.is_object())
      Fail(kTag, "{}: tensor '{}' is a JSON {} ({}), expected an object", file, key,
           val.type_name(), Brief(val));
    for (const auto& [field, unused] : val.items()) {
      (void)unused;
      if (field != "dtype" && field != "shape" && field != "data_offsets")
        Fail(kTag, "{}: tensor '{}' has unknown field '{}'", file, key, field);
    }
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!val.contains(field)) Fail(kTag, "{}: tensor '{}' is missing field '{}'", file, key, field);

    StTensorInfo info;
    info.name = key;
    const json& jd = val["dtype"];
    if (!jd.is_string())
      Fail(kTag, "{}: tensor '{}' field 'dtype' is a JSON {} ({}), expected a string", file, key,
           jd.type_name(), Brief(jd));
    const auto dt = ParseStDType(jd.get_ref<const std::string&>());
    if (!dt) Fail(kTag, "{}: tensor '{}' has unknown dtype {}", file, key, Brief(jd));
    info.dtype = *dt;

    const json& js = val["shape"];
    if (!js.is_array())
      Fail(kTag, "{}: tensor '{}' field 'shape' is a JSON {} ({}), expected an array", file, key,
           js.type_name(), Brief(js));
    for (const json& dim : js) {
      if (dim.is_number_unsigned()) {
        const uint64_t u = dim.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          Fail(kTag, "{}: tensor '{}' shape {} has dimension {}, too large", file, key, Brief(js), u);
        info.shape.push_back(static_cast<int64_t>(u));
      } else if (dim.is_number_integer()) {
        Fail(kTag, "{}: tensor '{}' shape {} has negative dimension {}", file, key, Brief(js),
             dim.get<int64_t>());
      } else {
        Fail(kTag, "{}: tensor '{}' shape {} has {} ({}), expected non-negative integers", file,
             key, Brief(js), dim.type_name(), Brief(dim));
      }
    }
    const size_t elem = StDTypeSize(info.dtype);
    const auto need = CheckedBytes(info.shape, elem);
    if (!need)
      Fail(kTag, "{}: tensor '{}' shape {} of {} overflows a 64-bit byte count", file, key,
           info.ShapeStr(), jd.get_ref<const std::string&>());

    const json& jo = val["data_offsets"];
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() ||
        !jo[1].is_number_unsigned())
      Fail(kTag, "{}: tensor '{}' field 'data_offsets' is {}, expected [begin, end] (non-negative "
           "integers)", file, key, Brief(jo));
    const uint64_t begin = jo[0].get<uint64_t>(), end = jo[1].get<uint64_t>();
    if (begin > end)
      Fail(kTag, "{}: tensor '{}' data_offsets [{},{}] end before they begin", file, key, begin,
           end);
    if (end > data_size)
      Fail(kTag, "{}: tensor '{}' data_offsets [{},{}] run past the data buffer of {} bytes", file,
           key, begin, end, data_size);
    if (end - begin != *need)
      Fail(kTag, "{}: tensor '{}' data_offsets [{},{}] hold {} bytes, shape {} of {} needs {}", file,
           key, begin, end, end - begin, info.ShapeStr(), StDTypeName(info.dtype), *need);
    info.offset = static_cast<size_t>(begin);
    info.nbytes = static_cast<size_t>(end - begin);
    info.numel = static_cast<int64_t>(info.nbytes / elem);
    info.data = data + begin;
    tensors_.push_back(std::move(info));
  }

  // No two tensors may share bytes (empty tensors occupy none).
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors_[a].offset < tensors_[b].offset;
  });
  const StTensorInfo* last = nullptr;  // the non-empty tensor reaching furthest so far
  for (size_t i : order) {
    const StTensorInfo& t = tensors_[i];
    if (t.nbytes == 0) continue;
    if (last && t.offset < last->offset + last->nbytes)
      Fail(kTag, "{}: tensors '{}' [{},{}] and '{}' [{},{}] overlap", file, last->name,
           last->offset, last->offset + last->nbytes, t.name, t.offset, t.offset + t.nbytes);
    if (!last || t.offset + t.nbytes > last->offset + last->nbytes) last = &t;
  }
}

const StTensorInfo* SafetensorsFile::Find(std::string_view tensor) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), tensor,
                             [](const StTensorInfo& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == tensor ? &*it : nullptr;
}

const StTensorInfo& SafetensorsFile::Get(std::string_view tensor) const {
  const StTensorInfo* t = Find(tensor);
  if (!t) Fail(kTag, "{}: no tensor '{}' ({} tensors in the file)", name_, tensor, tensors_.size());
  return *t;
}

const std::string& SafetensorsFile::Metadata(std::string_view key) const {
  auto it = metadata_.find(std::string(key));
  if (it == metadata_.end()) Fail(kTag, "{}: no metadata key '{}'", name_, key);
  return it->second;
}

Tensor SafetensorsFile::Load(std::string_view tensor, DType want) const {
  const StTensorInfo& t = Get(tensor);
  if (t.shape.size() > static_cast<size_t>(kMaxRank))
    Fail(kTag, "{}: tensor '{}' has rank {} (shape {}); at most {} is supported", name_, t.name,
         t.shape.size(), t.ShapeStr(), kMaxRank);
  const auto src = ToDType(t.dtype);
  const bool convert = IsFloat(t.dtype) && (want == DType::kF32 || want == DType::kF64);
  if (!convert && src != want)
    Fail(kTag, "{}: tensor '{}' is {}, cannot load it as {}", name_, t.name,
         StDTypeName(t.dtype), DTypeName(want));
  Shape shape;
  for (int64_t d : t.shape) shape.dims[static_cast<size_t>(shape.rank++)] = d;
  if (shape.rank == 0) shape = Shape{1};
  Tensor out(want, shape);
  if (src == want) {
    if (t.nbytes) std::memcpy(out.raw(), t.data, t.nbytes);
  } else if (want == DType::kF32) {
    ConvertFloats(t.data, t.dtype, t.numel, static_cast<float*>(out.raw()));
  } else {
    ConvertFloats(t.data, t.dtype, t.numel, static_cast<double*>(out.raw()));
  }
  return out;
}

std::vector<int64_t> SafetensorsFile::LoadIntegers(std::string_view tensor) const {
  const StTensorInfo& t = Get(tensor);
  std::vector<int64_t> out(static_cast<size_t>(t.numel));
  const uint8_t* p = t.data;
  for (int64_t i = 0; i < t.numel; ++i) {
    int64_t v = 0;
    switch (t.dtype) {
      case StDType::kBool:
      case StDType::kU8: v = LoadAt<uint8_t>(p, i); break;
      case StDType::kI8: v = LoadAt<int8_t>(p, i); break;
      case StDType::kU16: v = LoadAt<uint16_t>(p, i); break;
      case StDType::kI16: v = LoadAt<int16_t>(p, i); break;
      case StDType::kU32: v = LoadAt<uint32_t>(p, i); break;
      case StDType::kI32: v = LoadAt<int32_t>(p, i); break;
      case StDType::kI64: v = LoadAt<int64_t>(p, i); break;
      case StDType::kU64: {
        const uint64_t u = LoadAt<uint64_t>(p, i);
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          Fail(kTag, "{}: tensor '{}' element {} = {} does not fit in int64", name_, t.name, i, u);
        v = static_cast<int64_t>(u);
        break;
      }
      default:
        Fail(kTag, "{}: tensor '{}' is {}, not an integer type", name_, t.name,
             StDTypeName(t.dtype));
    }
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Writer

void SafetensorsWriter::Add(std::string name, StDType dtype, std::vector<int64_t> shape,
                            const void* data, size_t nbytes) {
  if (name.empty()) Fail(kTag, "writer: empty tensor name");
  if (name == kMetadataKey) Fail(kTag, "writer: '{}' is reserved for metadata", name);
  if (entries_.count(name)) Fail(kTag, "writer: tensor '{}' added twice", name);
  for (int64_t d : shape)
    if (d < 0) Fail(kTag, "writer: tensor '{}' shape {} has a negative dimension", name, ShapeString(shape));
  const auto need = CheckedBytes(shape, StDTypeSize(dtype));
  if (!need || *need != nbytes)
    Fail(kTag, "writer: tensor '{}' has {} bytes, shape {} of {} needs {}", name, nbytes,
         ShapeString(shape), StDTypeName(dtype), need ? fmt::format("{}", *need) : "overflow");
  if (nbytes > 0 && data == nullptr) Fail(kTag, "writer: tensor '{}' has no data", name);
  Entry e{dtype, std::move(shape), {}};
  const auto* src = static_cast<const uint8_t*>(data);
  if (nbytes) e.bytes.assign(src, src + nbytes);
  entries_.emplace(std::move(name), std::move(e));
}

void SafetensorsWriter::Add(std::string name, const Tensor& t) {
  if (!t.defined()) Fail(kTag, "writer: tensor '{}' is undefined", name);
  std::vector<int64_t> shape(t.shape().dims.begin(), t.shape().dims.begin() + t.shape().rank);
  Add(std::move(name), ToStDType(t.dtype()), std::move(shape), t.raw(), t.nbytes());
}

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

std::vector<uint8_t> SafetensorsWriter::Serialize() const {
  json header = json::object();
  if (!metadata_.empty()) header[std::string(kMetadataKey)] = metadata_;
  uint64_t offset = 0;
  for (const auto& [name, e] : entries_) {
    json entry = json::object();
    entry["dtype"] = std::string(StDTypeName(e.dtype));
    entry["shape"] = e.shape;
    entry["data_offsets"] = json::array({offset, offset + e.bytes.size()});
    header[name] = std::move(entry);
    offset += e.bytes.size();
  }
  std::string text;
  try {
    text = header.dump();  // strict: invalid UTF-8 in a name or metadata throws
  } catch (const json::exception& e) {
    Fail(kTag, "writer: header cannot be encoded: {}", e.what());
  }
  // Pad with spaces so the data buffer starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const auto& kv : entries_) out.insert(out.end(), kv.second.bytes.begin(), kv.second.bytes.end());
  return out;
}

void SafetensorsWriter::Write(const std::string& path) const {
  const std::vector<uint8_t> bytes = Serialize();
  WriteFileAtomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace moe::io
