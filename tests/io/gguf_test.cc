#include "moe/io/gguf.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "moe/core/dtype.h"
#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/io/file.h"
#include "moe/testing/compare.h"

namespace moe::io {

void PrintTo(const GgufValue& v, std::ostream* os) { *os << v.ToString(8); }

namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

using moe::testing::ErrorOf;

#define EXPECT_ERROR(stmt, substr)                                            \
  do {                                                                        \
    const std::string err_ = ErrorOf([&] { stmt; });                          \
    EXPECT_NE(err_.find(substr), std::string::npos) << "error was: " << err_; \
  } while (0)

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "moe_gguf_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Files for scripts/gguf_crosscheck.sh (checked by the independent Python reader).
  static void Dump(const GgufWriter& w, const std::string& name) {
    if (const char* dir = std::getenv("MOE_GGUF_DUMP_DIR")) w.Write(std::string(dir) + "/" + name);
  }

  fs::path dir_;
};

// Builds raw GGUF bytes field by field, so tests can write what the writer refuses to.
class Raw {
 public:
  Raw& U8(uint8_t v) {
    b.push_back(v);
    return *this;
  }
  Raw& U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  Raw& U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  Raw& Str(std::string_view s) {
    U64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Raw& Fill(size_t n, uint8_t v = 0x5a) {
    b.insert(b.end(), n, v);
    return *this;
  }
  Raw& Header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    return U32(version).U64(n_tensors).U64(n_kv);
  }
  Raw& KvU32(std::string_view key, uint32_t v) { return Str(key).U32(4).U32(v); }
  Raw& KvStr(std::string_view key, std::string_view v) { return Str(key).U32(8).Str(v); }
  Raw& Info(std::string_view name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(offset);
  }
  Raw& Pad(size_t a) {
    b.resize((b.size() + a - 1) / a * a, 0);
    return *this;
  }
  std::vector<uint8_t> b;
};

GgufFile Parse(const std::vector<uint8_t>& bytes, std::string name = "bad.gguf") {
  return GgufFile::FromBytes(std::move(name), bytes.data(), bytes.size());
}

// A valid file: one key, two F32 tensors of 8 elements (32 bytes each, no trailing padding).
std::vector<uint8_t> TwoTensorFile() {
  Raw r;
  r.Header(3, 2, 1).KvStr("general.name", "x");
  r.Info("a", {8}, 0, 0).Info("b", {8}, 0, 32).Pad(32).Fill(64);
  return r.b;
}

// ------------------------------------------------------------------------------------------------

TEST(GgufTypes, BlockSizesAndNames) {
  struct Want {
    GgmlType t;
    const char* name;
    uint32_t elems, bytes;
  };
  for (const Want& w :
       {Want{GgmlType::kF32, "F32", 1, 4}, Want{GgmlType::kF16, "F16", 1, 2},
        Want{GgmlType::kBF16, "BF16", 1, 2}, Want{GgmlType::kQ8_0, "Q8_0", 32, 34},
        Want{GgmlType::kQ4_0, "Q4_0", 32, 18}, Want{GgmlType::kQ4_K, "Q4_K", 256, 144},
        Want{GgmlType::kQ5_K, "Q5_K", 256, 176}, Want{GgmlType::kQ6_K, "Q6_K", 256, 210}}) {
    const GgmlTypeTraits& t = GgufTypeInfo(w.t);
    EXPECT_EQ(t.name, w.name);
    EXPECT_EQ(t.block_elems, w.elems) << w.name;
    EXPECT_EQ(t.block_bytes, w.bytes) << w.name;
    EXPECT_TRUE(t.supported) << w.name;
  }
  EXPECT_EQ(GgmlTypeName(GgmlType::kQ3_K), "Q3_K");
  EXPECT_FALSE(GgufTypeInfo(GgmlType::kQ3_K).supported);
  EXPECT_EQ(GgufTypeInfo(GgmlType::kQ2_K).block_bytes, 84u);
  EXPECT_EQ(GgufTypeInfo(GgmlType::kIQ4_XS).block_bytes, 136u);
  EXPECT_EQ(FindGgmlType(4), nullptr);  // Q4_2, removed
  EXPECT_EQ(FindGgmlType(99), nullptr);
  EXPECT_EQ(FindGgmlType(30)->type, GgmlType::kBF16);
  EXPECT_EQ(SupportedGgmlTypeNames(), "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K");
  // Ids are unique and increasing.
  const auto all = AllGgmlTypes();
  for (size_t i = 1; i < all.size(); ++i)
    EXPECT_LT(static_cast<uint32_t>(all[i - 1].type), static_cast<uint32_t>(all[i].type));

  const std::vector<int64_t> q4k = {512, 3};
  EXPECT_EQ(GgmlTensorBytes(GgmlType::kQ4_K, q4k), 2u * 3u * 144u);
  const std::vector<int64_t> odd = {100, 3};
  EXPECT_EQ(GgmlTensorBytes(GgmlType::kQ4_K, odd), std::nullopt);
  const std::vector<int64_t> huge = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_EQ(GgmlTensorBytes(GgmlType::kF32, huge), std::nullopt);
}

TEST(GgufValues, ScalarsConvertWhereTheValueFits) {
  EXPECT_EQ(GgufValue::I32(7).AsU64(), 7u);
  EXPECT_EQ(GgufValue::I32(-7).AsU64(), std::nullopt);
  EXPECT_EQ(GgufValue::I32(-7).AsI64(), -7);
  EXPECT_EQ(GgufValue::U64(~uint64_t{0}).AsI64(), std::nullopt);
  EXPECT_EQ(GgufValue::U64(~uint64_t{0}).AsU64(), ~uint64_t{0});
  EXPECT_EQ(GgufValue::I8(-128).AsI64(), -128);
  EXPECT_EQ(GgufValue::F32(0.5f).AsF64(), 0.5);
  EXPECT_EQ(GgufValue::U16(3).AsF64(), 3.0);
  EXPECT_EQ(GgufValue::String("x").AsI64(), std::nullopt);
  EXPECT_EQ(GgufValue::Bool(true).AsBool(), true);
  EXPECT_EQ(GgufValue::U8(1).AsBool(), std::nullopt);
  EXPECT_EQ(GgufValue::U32(32).ToString(), "u32 32");
  EXPECT_EQ(GgufValue::String("llama").ToString(), "string 'llama'");
  EXPECT_EQ(GgufValue::Strings({"a", "b", "c", "d", "e"}).ToString(),
            "array<string>[5] {'a', 'b', 'c', 'd', ...}");
  EXPECT_EQ(GgufValue::Array(std::vector<int16_t>{-1, 2}).ToString(), "array<i16>[2] {-1, 2}");
  EXPECT_ERROR(GgufValue::Arrays({GgufValue::U8(1)}), "item 0 is u8 1, not an array");
  EXPECT_TRUE(GgufValue::F32(NAN) == GgufValue::F32(NAN));  // same bits
  EXPECT_FALSE(GgufValue::I32(1) == GgufValue::U32(1));
}

TEST_F(GgufTest, RoundTripsEveryMetadataType) {
  GgufWriter w;
  const std::string with_nul("a\0b", 3);
  std::vector<std::pair<std::string, GgufValue>> want = {
      {"general.architecture", GgufValue::String("llama")},
      {"t.u8", GgufValue::U8(255)},
      {"t.i8", GgufValue::I8(-128)},
      {"t.u16", GgufValue::U16(65535)},
      {"t.i16", GgufValue::I16(-32768)},
      {"t.u32", GgufValue::U32(4294967295u)},
      {"t.i32", GgufValue::I32(std::numeric_limits<int32_t>::min())},
      {"t.u64", GgufValue::U64(~uint64_t{0})},
      {"t.i64", GgufValue::I64(std::numeric_limits<int64_t>::min())},
      {"t.f32", GgufValue::F32(-1.25e-30f)},
      {"t.f64", GgufValue::F64(1e300)},
      {"t.f32_nan", GgufValue::F32(std::numeric_limits<float>::quiet_NaN())},
      {"t.bool_true", GgufValue::Bool(true)},
      {"t.bool_false", GgufValue::Bool(false)},
      {"t.string_utf8", GgufValue::String("h\xc3\xa9llo \xe4\xb8\x96")},
      {"t.string_nul", GgufValue::String(with_nul)},
      {"t.string_empty", GgufValue::String("")},
      {"t.arr_u8", GgufValue::Array(std::vector<uint8_t>{0, 1, 255})},
      {"t.arr_i8", GgufValue::Array(std::vector<int8_t>{-1, 1})},
      {"t.arr_u16", GgufValue::Array(std::vector<uint16_t>{1, 65535})},
      {"t.arr_i16", GgufValue::Array(std::vector<int16_t>{-2, 2})},
      {"t.arr_u32", GgufValue::Array(std::vector<uint32_t>{7, 4000000000u})},
      {"t.arr_i32", GgufValue::Array(std::vector<int32_t>{-3, 0, 3})},
      {"t.arr_u64", GgufValue::Array(std::vector<uint64_t>{~uint64_t{0}})},
      {"t.arr_i64", GgufValue::Array(std::vector<int64_t>{-5, 5})},
      {"t.arr_f32", GgufValue::Array(std::vector<float>{0.5f, -0.0f, 3e38f})},
      {"t.arr_f64", GgufValue::Array(std::vector<double>{1.0 / 3.0})},
      {"t.arr_bool", GgufValue::Bools({true, false, false, true})},
      {"t.arr_str", GgufValue::Strings({"<unk>", "", "\xc4\xa0the", with_nul})},
      {"t.arr_empty_str", GgufValue::EmptyArray(GgufValueType::kString)},
      {"t.arr_empty_f32", GgufValue::EmptyArray(GgufValueType::kF32)},
      {"t.arr_nested",
       GgufValue::Arrays({GgufValue::Array(std::vector<uint32_t>{1, 2}), GgufValue::Strings({"x"}),
                          GgufValue::Arrays({GgufValue::Bools({true})}),
                          GgufValue::EmptyArray(GgufValueType::kArray)})},
  };
  for (const auto& [k, v] : want) w.AddMetadata(k, v);
  const std::string p = Path("meta.gguf");
  w.Write(p);
  Dump(w, "cpp_metadata.gguf");
  const GgufFile f = GgufFile::Open(p);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_TRUE(f.tensors().empty());
  ASSERT_EQ(f.metadata().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {  // same order, same values
    EXPECT_EQ(f.metadata()[i].first, want[i].first);
    EXPECT_TRUE(f.metadata()[i].second == want[i].second)
        << want[i].first << ": " << f.metadata()[i].second.ToString() << " vs "
        << want[i].second.ToString();
  }
  EXPECT_EQ(f.GetString("general.architecture"), "llama");
  EXPECT_EQ(f.GetU32("t.u32"), 4294967295u);
  EXPECT_EQ(f.GetI32("t.i32"), std::numeric_limits<int32_t>::min());
  EXPECT_EQ(f.GetU64("t.u64"), ~uint64_t{0});
  EXPECT_EQ(f.GetI64("t.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.GetF32("t.f32"), -1.25e-30f);
  EXPECT_EQ(f.GetF64("t.f64"), 1e300);
  EXPECT_TRUE(std::isnan(f.GetF32("t.f32_nan")));
  EXPECT_TRUE(f.GetBool("t.bool_true"));
  EXPECT_FALSE(f.GetBool("t.bool_false"));
  EXPECT_EQ(f.GetString("t.string_nul"), with_nul);
  EXPECT_EQ(f.GetStrings("t.arr_str"),
            (std::vector<std::string>{"<unk>", "", "\xc4\xa0the", with_nul}));
  EXPECT_EQ(f.GetInts("t.arr_i8"), (std::vector<int64_t>{-1, 1}));
  EXPECT_EQ(f.GetInts("t.arr_u32"), (std::vector<int64_t>{7, 4000000000}));
  EXPECT_EQ(f.GetF32s("t.arr_f32"), (std::vector<float>{0.5f, -0.0f, 3e38f}));
  EXPECT_EQ(f.GetF32s("t.arr_f64"), (std::vector<float>{static_cast<float>(1.0 / 3.0)}));
  const GgufValue& nested = f.GetArray("t.arr_nested");
  ASSERT_EQ(nested.array_type(), GgufValueType::kArray);
  ASSERT_EQ(nested.items().size(), 4u);
  EXPECT_EQ(nested.items()[0].At(1).AsU64(), 2u);
  EXPECT_EQ(nested.items()[1].strings()[0], "x");
  EXPECT_EQ(nested.items()[2].items()[0].At(0).AsBool(), true);
  EXPECT_EQ(nested.items()[3].size(), 0u);
  EXPECT_EQ(f.GetArray("t.arr_bool").At(3).AsBool(), true);
  // The file is exactly what Serialize() produces, and writing is deterministic.
  EXPECT_EQ(ReadAll(p), w.Serialize());
  GgufWriter w2;
  for (const auto& [k, v] : want) w2.AddMetadata(k, v);
  EXPECT_EQ(w2.Serialize(), w.Serialize());
  EXPECT_FALSE(fs::exists(p + ".tmp"));
}

TEST_F(GgufTest, TypedGettersConvertAndNameTheProblem) {
  GgufWriter w;
  w.AddMetadata("llama.block_count", GgufValue::I32(48));
  w.AddMetadata("llama.expert_count", GgufValue::U64(8));
  w.AddMetadata("neg", GgufValue::I32(-1));
  w.AddMetadata("big", GgufValue::U64(uint64_t{1} << 40));
  w.AddMetadata("huge", GgufValue::U64(~uint64_t{0}));
  w.AddMetadata("name", GgufValue::String("m"));
  w.AddMetadata("eps", GgufValue::F64(1e-5));
  w.AddMetadata("int_as_float", GgufValue::U32(10000));
  w.AddMetadata("too_big_f32", GgufValue::F64(1e300));
  w.AddMetadata("flag", GgufValue::Bool(true));
  w.AddMetadata("ints", GgufValue::Array(std::vector<uint64_t>{1, ~uint64_t{0}}));
  w.AddMetadata("floats", GgufValue::Array(std::vector<float>{1.0f}));
  const std::vector<uint8_t> bytes = w.Serialize();
  const GgufFile f = Parse(bytes, "m.gguf");
  // An integer key may be stored as any integer type.
  EXPECT_EQ(f.GetU32("llama.block_count"), 48u);
  EXPECT_EQ(f.GetI64("llama.block_count"), 48);
  EXPECT_EQ(f.GetU32("llama.expert_count"), 8u);
  EXPECT_EQ(f.GetI32("neg"), -1);
  EXPECT_EQ(f.GetU64("big"), uint64_t{1} << 40);
  EXPECT_EQ(f.GetF32("eps"), 1e-5f);
  EXPECT_EQ(f.GetF32("int_as_float"), 10000.0f);
  EXPECT_EQ(f.GetU32("absent", 7u), 7u);
  EXPECT_EQ(f.GetI32("absent", -7), -7);
  EXPECT_EQ(f.GetU64("absent", 9u), 9u);
  EXPECT_EQ(f.GetI64("absent", -9), -9);
  EXPECT_EQ(f.GetF32("absent", 0.5f), 0.5f);
  EXPECT_EQ(f.GetBool("absent", true), true);
  EXPECT_EQ(f.GetString("absent", "dflt"), "dflt");
  EXPECT_EQ(f.GetU32("llama.block_count", 7u), 48u);
  EXPECT_ERROR(f.GetU32("neg"), "[gguf] m.gguf: key 'neg' is i32 -1, out of range for u32");
  EXPECT_ERROR(f.GetI32("big"), "key 'big' is u64 1099511627776, out of range for i32");
  EXPECT_ERROR(f.GetU32("big", 1u), "out of range for u32");  // present: no fallback
  EXPECT_ERROR(f.GetI64("huge"), "out of range for i64");
  EXPECT_ERROR(f.GetU32("name"), "key 'name' is string 'm', expected an integer (u32)");
  EXPECT_ERROR(f.GetF32("name"), "expected a number");
  EXPECT_ERROR(f.GetF32("too_big_f32"), "out of range for f32");
  EXPECT_ERROR(f.GetBool("name"), "expected a bool");
  EXPECT_ERROR(f.GetString("flag"), "key 'flag' is bool true, expected a string");
  EXPECT_ERROR(f.GetStrings("ints"), "expected an array of strings");
  EXPECT_ERROR(f.GetStrings("name"), "expected an array");
  EXPECT_ERROR(f.GetInts("ints"), "key 'ints' element 1 is u64 18446744073709551615, out of range");
  EXPECT_ERROR(f.GetInts("floats"), "expected an array of integers");
  EXPECT_ERROR(f.GetF32s("ints"), "expected an array of f32 or f64");
  EXPECT_ERROR(f.GetU32("missing"), "[gguf] m.gguf: no metadata key 'missing'");
  EXPECT_ERROR(f.GetTensor("missing"), "no tensor 'missing' (0 tensors in the file)");
}

TEST_F(GgufTest, RoundTripsEveryTensorType) {
  Rng rng(11);
  GgufWriter w;
  struct Want {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> bytes;
  };
  std::vector<Want> want;
  int rank = 1;
  for (const GgmlTypeTraits& t : AllGgmlTypes()) {
    Want x{"t." + std::string(t.name), t.type, {2 * t.block_elems}, {}};
    for (int r = 1; r < rank; ++r) x.dims.push_back(r + 1);  // ranks 1..4 in turn
    rank = rank % kGgufMaxDims + 1;
    x.bytes.resize(*GgmlTensorBytes(t.type, x.dims));
    for (auto& b : x.bytes) b = static_cast<uint8_t>(rng.Below(256));
    w.AddTensor(x.name, x.type, x.dims, x.bytes.data(), x.bytes.size());
    want.push_back(std::move(x));
  }
  w.AddMetadata("general.architecture", GgufValue::String("test"));
  const std::string p = Path("tensors.gguf");
  w.Write(p);
  Dump(w, "cpp_tensors.gguf");
  const GgufFile f = GgufFile::Open(p);
  ASSERT_EQ(f.tensors().size(), want.size());
  EXPECT_EQ(f.data_offset() % 32, 0u);
  uint64_t expect_offset = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const GgufTensorInfo& t = f.tensors()[i];
    EXPECT_EQ(t.name, want[i].name);
    EXPECT_EQ(&f.GetTensor(want[i].name), &t);
    EXPECT_EQ(t.type, want[i].type);
    EXPECT_EQ(t.dims, want[i].dims);
    EXPECT_EQ(t.RowMajorShape(), std::vector<int64_t>(want[i].dims.rbegin(), want[i].dims.rend()));
    int64_t numel = 1;
    for (int64_t d : want[i].dims) numel *= d;
    EXPECT_EQ(t.numel, numel);
    EXPECT_EQ(t.offset, expect_offset) << t.name;  // packed in order, each aligned
    expect_offset += (want[i].bytes.size() + 31) / 32 * 32;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u) << t.name;  // mmap keeps alignment
    ASSERT_EQ(t.nbytes, want[i].bytes.size());
    EXPECT_EQ(std::memcmp(t.data, want[i].bytes.data(), t.nbytes), 0) << t.name;
  }
  EXPECT_EQ(f.file_size(), f.data_offset() + expect_offset);
  EXPECT_EQ(ReadAll(p), w.Serialize());
  const auto bytes = ReadAll(p);
  const GgufFile g = Parse(bytes, "mem");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(g.tensors()[0].data) % 32, 0u);
  EXPECT_EQ(g.tensors().size(), f.tensors().size());
  EXPECT_ERROR(f.RequireAllSupported(), "has type Q4_1 (3), supported: F32, F16, BF16");
}

TEST_F(GgufTest, AlignmentKeySetsTheLayout) {
  for (uint32_t a : {1u, 8u, 64u, 4096u}) {
    GgufWriter w;
    const std::vector<float> x = {1, 2, 3};
    w.AddTensor("x", GgmlType::kF32, {3}, x.data(), 12);
    w.AddMetadata("general.alignment", GgufValue::U32(a));  // after a tensor: still applies
    w.AddTensor("y", GgmlType::kF32, {3}, x.data(), 12);
    EXPECT_EQ(w.alignment(), a);
    const std::vector<uint8_t> bytes = w.Serialize();
    const GgufFile f = Parse(bytes);
    EXPECT_EQ(f.alignment(), a);
    EXPECT_EQ(f.data_offset() % a, 0u);
    EXPECT_EQ(f.GetTensor("y").offset, (12 + a - 1) / a * a);
    EXPECT_EQ(bytes.size() % a, 0u);
    EXPECT_EQ(std::memcmp(f.GetTensor("y").data, x.data(), 12), 0);
  }
  GgufWriter w;
  EXPECT_ERROR(w.AddMetadata("general.alignment", GgufValue::U64(32)), "expected a u32");
  EXPECT_ERROR(w.AddMetadata("general.alignment", GgufValue::U32(48)), "48 is not a power of two");
  EXPECT_ERROR(w.AddMetadata("general.alignment", GgufValue::U32(0)), "0 is not a power of two");
  EXPECT_ERROR(w.AddMetadata("general.alignment", GgufValue::U32(1u << 31)), "exceeds the limit");
  EXPECT_ERROR(w.AddMetadata("general.alignment", GgufValue::U32(1u << 25)), "exceeds the limit");
}

TEST_F(GgufTest, ReadsThePythonWrittenFixtures) {
  const std::string dir = std::string(MOE_TEST_DATA_DIR) + "/gguf/";
  for (const char* file : {"python_v3.gguf", "python_v2.gguf"}) {
    SCOPED_TRACE(file);
    const bool v3 = std::string(file) == "python_v3.gguf";
    const GgufFile f = GgufFile::Open(dir + file);
    EXPECT_EQ(f.version(), v3 ? 3u : 2u);
    EXPECT_EQ(f.alignment(), v3 ? 64u : 32u);
    EXPECT_EQ(f.metadata().size(), v3 ? 23u : 22u);
    EXPECT_EQ(f.metadata()[0].first, "general.architecture");
    EXPECT_EQ(f.GetString("general.architecture"), "llama");
    EXPECT_EQ(f.GetString("general.name"), "python fixture \xc3\xbc");
    EXPECT_EQ(f.Get("test.u8"), GgufValue::U8(200));
    EXPECT_EQ(f.Get("test.i8"), GgufValue::I8(-100));
    EXPECT_EQ(f.Get("test.u16"), GgufValue::U16(60000));
    EXPECT_EQ(f.Get("test.i16"), GgufValue::I16(-30000));
    EXPECT_EQ(f.Get("test.u32"), GgufValue::U32(4000000000u));
    EXPECT_EQ(f.Get("test.i32"), GgufValue::I32(-2000000000));
    EXPECT_EQ(f.Get("test.u64"), GgufValue::U64((uint64_t{1} << 63) + 5));
    EXPECT_EQ(f.Get("test.i64"), GgufValue::I64(-(int64_t{1} << 62)));
    EXPECT_EQ(f.Get("test.f32"), GgufValue::F32(1.5f));
    EXPECT_EQ(f.Get("test.f64"), GgufValue::F64(-0.125));
    EXPECT_EQ(f.Get("test.bool"), GgufValue::Bool(true));
    EXPECT_EQ(f.Get("test.empty_string"), GgufValue::String(""));
    EXPECT_EQ(f.Get("test.arr_u8"), GgufValue::Array(std::vector<uint8_t>{1, 2, 3}));
    EXPECT_EQ(f.Get("test.arr_i32"), GgufValue::Array(std::vector<int32_t>{-1, 0, 7}));
    EXPECT_EQ(f.Get("test.arr_f32"), GgufValue::Array(std::vector<float>{0.5f, -2.0f}));
    EXPECT_EQ(f.Get("test.arr_bool"), GgufValue::Bools({true, false, true}));
    EXPECT_EQ(f.Get("test.arr_str"), GgufValue::Strings({"a", "", "\xc3\xbc"}));
    EXPECT_EQ(
        f.Get("test.arr_nested"),
        GgufValue::Arrays({GgufValue::Array(std::vector<uint16_t>{1, 2}), GgufValue::Strings({"x"}),
                           GgufValue::EmptyArray(GgufValueType::kF64)}));
    EXPECT_EQ(f.Get("test.arr_empty"), GgufValue::EmptyArray(GgufValueType::kU64));
    EXPECT_EQ(f.GetU32("llama.block_count"), 2u);  // stored as i32

    const std::vector<std::pair<const char*, GgmlType>> names = {
        {"token_embd.weight", GgmlType::kF32},
        {"blk.0.attn_q.weight", GgmlType::kF16},
        {"blk.0.ffn_down.weight", GgmlType::kQ8_0},
        {"blk.0.ffn_gate_exps.weight", GgmlType::kQ4_K},
        {"blk.0.ffn_up_exps.weight", GgmlType::kQ6_K},
        {"output_norm.weight", GgmlType::kBF16}};
    ASSERT_EQ(f.tensors().size(), names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      EXPECT_EQ(f.tensors()[i].name, names[i].first);
      EXPECT_EQ(f.tensors()[i].type, names[i].second);
      f.RequireSupported(f.tensors()[i]);
    }
    const GgufTensorInfo& emb = f.GetTensor("token_embd.weight");
    EXPECT_EQ(emb.dims, (std::vector<int64_t>{4, 3}));
    EXPECT_EQ(emb.RowMajorShape(), (std::vector<int64_t>{3, 4}));
    for (int k = 0; k < 12; ++k) {
      float v;
      std::memcpy(&v, emb.data + 4 * k, 4);
      EXPECT_EQ(v, 0.25f * static_cast<float>(k) - 1.0f);
    }
    const GgufTensorInfo& q = f.GetTensor("blk.0.attn_q.weight");
    for (int k = 0; k < 16; ++k) {
      uint16_t h;
      std::memcpy(&h, q.data + 2 * k, 2);
      EXPECT_EQ(FromF16(h), 0.5f * static_cast<float>(k) - 4.0f);
    }
    const GgufTensorInfo& norm = f.GetTensor("output_norm.weight");
    for (int k = 0; k < 4; ++k) {
      uint16_t h;
      std::memcpy(&h, norm.data + 2 * k, 2);
      EXPECT_EQ(FromBf16(bf16{h}), 1.0f + static_cast<float>(k));
    }
    int seed = 1;
    for (const char* name :
         {"blk.0.ffn_down.weight", "blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight"}) {
      const GgufTensorInfo& t = f.GetTensor(name);
      for (uint64_t k = 0; k < t.nbytes; ++k)
        ASSERT_EQ(t.data[k], static_cast<uint8_t>(k * 31 + seed * 7 + 3)) << name << " " << k;
      ++seed;
    }
    EXPECT_EQ(f.GetTensor("blk.0.ffn_gate_exps.weight").nbytes, 288u);
    EXPECT_EQ(f.GetTensor("blk.0.ffn_down.weight").nbytes, 68u);
    if (!v3) {  // data stored in reverse order
      EXPECT_GT(emb.offset, f.GetTensor("output_norm.weight").offset);
    } else {
      // moe's writer reproduces the Python writer's file byte for byte.
      GgufWriter w;
      for (const auto& [k, v] : f.metadata()) w.AddMetadata(k, v);
      for (const auto& t : f.tensors()) w.AddTensorView(t.name, t.type, t.dims, t.data, t.nbytes);
      EXPECT_EQ(w.Serialize(), ReadAll(dir + file));
    }
  }
}

TEST_F(GgufTest, UnsupportedTypesOpenButAreNamedWhenRequired) {
  GgufWriter w;
  std::vector<uint8_t> q3(110 * 2, 1);
  std::vector<uint8_t> f32(4 * 256, 0);
  w.AddTensor("blk.0.ffn_up.weight", GgmlType::kF32, {256}, f32.data(), f32.size());
  w.AddTensor("blk.0.ffn_down.weight", GgmlType::kQ3_K, {256, 2}, q3.data(), q3.size());
  const std::vector<uint8_t> bytes = w.Serialize();
  const GgufFile f = Parse(bytes, "q3.gguf");
  f.RequireSupported(f.GetTensor("blk.0.ffn_up.weight"));
  EXPECT_ERROR(f.RequireSupported(f.GetTensor("blk.0.ffn_down.weight")),
               "[gguf] q3.gguf: tensor 'blk.0.ffn_down.weight' has type Q3_K (11), supported: F32, "
               "F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K");
  EXPECT_ERROR(f.RequireAllSupported(), "Q3_K");
}

TEST_F(GgufTest, EveryTruncationIsAnError) {
  GgufWriter w;
  w.AddMetadata("general.architecture", GgufValue::String("llama"));
  w.AddMetadata("a.ints", GgufValue::Array(std::vector<int32_t>{1, 2, 3}));
  w.AddMetadata("a.strs", GgufValue::Strings({"x", "yz"}));
  w.AddMetadata("a.nested", GgufValue::Arrays({GgufValue::Array(std::vector<uint8_t>{9})}));
  w.AddMetadata("a.f", GgufValue::F64(2.5));
  const std::vector<uint8_t> q8(34, 7);
  const std::vector<uint8_t> f32(32, 1);
  w.AddTensor("q", GgmlType::kQ8_0, {32}, q8.data(), q8.size());
  w.AddTensor("f", GgmlType::kF32, {8}, f32.data(), f32.size());  // ends aligned: no padding
  const std::vector<uint8_t> bytes = w.Serialize();
  ASSERT_NO_THROW(Parse(bytes));
  for (size_t n = 0; n < bytes.size(); ++n) {
    try {
      GgufFile::FromBytes("cut.gguf", bytes.data(), n);
      ADD_FAILURE() << "a file cut to " << n << " of " << bytes.size() << " bytes was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[gguf] cut.gguf: "), std::string::npos) << e.what();
    }
  }
  EXPECT_ERROR(GgufFile::FromBytes("cut.gguf", bytes.data(), 2),
               "header: truncated: magic needs 4 bytes at offset 0, the file ends at 2");
  EXPECT_ERROR(GgufFile::FromBytes("cut.gguf", bytes.data(), bytes.size() - 1),
               "32 bytes of F32 at offset 64 run past the end of the data section");
}

TEST_F(GgufTest, CorruptFilesAreErrorsNamingTheProblem) {
  const uint64_t kHuge = uint64_t{1} << 60;
  struct Case {
    const char* what;
    std::vector<uint8_t> bytes;
    const char* message;
  };
  std::vector<Case> cases;
  auto add = [&](const char* what, const Raw& r, const char* message) {
    cases.push_back({what, r.b, message});
  };
  {
    Raw r;
    r.b = {'G', 'G', 'M', 'L', 1, 0, 0, 0};
    add("bad magic", r, "not a GGUF file: it starts with bytes 47 47 4d 4c, expected 47 47 55 46");
  }
  add("version 1", Raw().Header(1, 0, 0), "GGUF version 1 is not supported");
  add("version 4", Raw().Header(4, 0, 0), "unsupported GGUF version 4 (supported: 2, 3)");
  add("big-endian v3", Raw().Header(0x03000000u, 0, 0),
      "this is a big-endian GGUF file, only little-endian files are supported");
  add("tensor_count 2^60", Raw().Header(3, kHuge, 0).Fill(64),
      "tensor_count 1152921504606846976 is more than the 64 bytes after the header could hold");
  add("kv_count 2^60", Raw().Header(3, 0, kHuge).Fill(64),
      "metadata_kv_count 1152921504606846976 is more than the 64 bytes");
  add("both counts together too many", Raw().Header(3, 1, 2).Fill(40),
      "metadata_kv_count 2 and tensor_count 1 need at least 61 bytes, only 40");
  add("key length 2^60", Raw().Header(3, 0, 1).U64(kHuge).Fill(32),
      "key-value pair #0: key length 1152921504606846976 exceeds the limit of 65535 bytes");
  add("key length past the end", Raw().Header(3, 0, 1).U64(1000).Fill(32),
      "key length 1000 runs past the end of the file (32 bytes left at offset 32)");
  add("empty key", Raw().Header(3, 0, 1).Str("").U32(0).U8(1).Fill(8), "key is empty");
  add("non-ASCII key", Raw().Header(3, 0, 1).Str("gen\xc3\xa9ral").U32(0).U8(1),
      "key 'gen\\xc3\\xa9ral' has byte 0xc3 at position 3; keys must be printable ASCII");
  add("duplicate key", Raw().Header(3, 0, 2).KvU32("a.b", 1).KvU32("a.b", 2),
      "key 'a.b': appears twice (key-value pairs #0 and #1)");
  add("unknown value type 99", Raw().Header(3, 0, 1).Str("k").U32(99).Fill(8),
      "key 'k': unknown value type 99");
  add("unknown value type 13", Raw().Header(3, 0, 1).Str("k").U32(13).Fill(8),
      "unknown value type 13");
  add("string value past the end", Raw().Header(3, 0, 1).Str("k").U32(8).U64(1000000).Fill(10),
      "key 'k': string length 1000000 runs past the end of the file (10 bytes left");
  add("string value length 2^63", Raw().Header(3, 0, 1).Str("k").U32(8).U64(uint64_t{1} << 63),
      "string length 9223372036854775808 runs past the end");
  add("truncated scalar", Raw().Header(3, 0, 1).Str("k").U32(10).U32(0),
      "key 'k': truncated: u64 value needs 8 bytes at offset 37, the file ends at 41");
  add("array count 2^60", Raw().Header(3, 0, 1).Str("k").U32(9).U32(4).U64(kHuge).Fill(16),
      "key 'k': array of 1152921504606846976 u32 elements needs at least 4 bytes each, only 16");
  add("array of strings count too large",
      Raw().Header(3, 0, 1).Str("k").U32(9).U32(8).U64(3).Fill(16),
      "array of 3 string elements needs at least 8 bytes each, only 16 bytes are left");
  add("array element type 99", Raw().Header(3, 0, 1).Str("k").U32(9).U32(99).U64(0),
      "key 'k': unknown array element type 99");
  add("bool value 2", Raw().Header(3, 0, 1).Str("k").U32(7).U8(2),
      "bool value 2 is neither 0 nor 1");
  add("bool array element 5", Raw().Header(3, 0, 1).Str("k").U32(9).U32(7).U64(3).U8(1).U8(0).U8(5),
      "bool array element 2 is 5, neither 0 nor 1");
  {
    Raw r;
    r.Header(3, 0, 1).Str("k").U32(9);
    for (int i = 0; i < 9; ++i) r.U32(9).U64(1);
    r.U32(9).U64(0);
    add("arrays nested 10 deep", r, "arrays nested more than 8 deep");
  }
  add("alignment 0", Raw().Header(3, 0, 1).KvU32("general.alignment", 0),
      "key 'general.alignment': alignment 0 is not a power of two");
  add("alignment 48", Raw().Header(3, 0, 1).KvU32("general.alignment", 48),
      "alignment 48 is not a power of two");
  add("alignment 2^31", Raw().Header(3, 0, 1).KvU32("general.alignment", 1u << 31),
      "alignment 2147483648 exceeds the limit of 16777216");
  add("alignment 2^30", Raw().Header(3, 0, 1).KvU32("general.alignment", 1u << 30),
      "alignment 1073741824 exceeds the limit of 16777216");
  add("alignment as a string", Raw().Header(3, 0, 1).KvStr("general.alignment", "32"),
      "key 'general.alignment': is string '32', expected an unsigned integer (u32)");
  add("alignment negative i32",
      Raw().Header(3, 0, 1).Str("general.alignment").U32(5).U32(0xffffffe0u),
      "is i32 -32, expected an unsigned integer");
  add("empty tensor name", Raw().Header(3, 1, 0).Info("", {8}, 0, 0).Pad(32).Fill(32),
      "tensor info #0: tensor name is empty");
  add("tensor name of 65 bytes",
      Raw().Header(3, 1, 0).Info(std::string(65, 'n'), {8}, 0, 0).Pad(32).Fill(32),
      "tensor info #0: tensor name length 65 exceeds the limit of 64 bytes");
  add("tensor name of 500 bytes", Raw().Header(3, 1, 0).U64(500).Fill(40),
      "tensor info #0: tensor name length 500 exceeds the limit of 64 bytes");
  add("tensor name past the end", Raw().Header(3, 1, 0).U64(60).Fill(40),
      "tensor name length 60 runs past the end of the file (40 bytes left at offset 32)");
  add("duplicate tensor",
      Raw().Header(3, 2, 0).Info("w", {8}, 0, 0).Info("w", {8}, 0, 32).Pad(32).Fill(64),
      "tensor 'w': appears twice (tensor infos #0 and #1)");
  add("n_dims 5", Raw().Header(3, 1, 0).Info("w", {1, 1, 1, 1, 8}, 0, 0).Pad(32).Fill(32),
      "tensor 'w': n_dims is 5, expected 1..4");
  add("n_dims 0", Raw().Header(3, 1, 0).Info("w", {}, 0, 0).Fill(64), "n_dims is 0, expected 1..4");
  add("n_dims 2^31", Raw().Header(3, 1, 0).Str("w").U32(1u << 31).Fill(64), "n_dims is 2147483648");
  add("dimension 0", Raw().Header(3, 1, 0).Info("w", {8, 0}, 0, 0).Pad(32).Fill(32),
      "tensor 'w': dimension 1 is 0");
  add("dimension 2^63", Raw().Header(3, 1, 0).Info("w", {uint64_t{1} << 63}, 0, 0).Pad(32).Fill(32),
      "dimension 0 is 9223372036854775808, too large");
  add("element count overflow",
      Raw()
          .Header(3, 1, 0)
          .Info("w", {uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0)
          .Pad(32)
          .Fill(32),
      "tensor 'w': shape [4294967296,4294967296] of F32 overflows a 63-bit byte count");
  add("byte count overflow",
      Raw().Header(3, 1, 0).Info("w", {uint64_t{1} << 62}, 0, 0).Pad(32).Fill(32),
      "overflows a 63-bit byte count");
  add("unknown ggml type 99", Raw().Header(3, 1, 0).Info("blk.0.w", {8}, 99, 0).Pad(32).Fill(32),
      "tensor 'blk.0.w': has unknown ggml type 99");
  add("removed ggml type 4", Raw().Header(3, 1, 0).Info("w", {32}, 4, 0).Pad(32).Fill(32),
      "has type 4 (Q4_2), which was removed from ggml; supported: F32, F16");
  add("Q4_K row not a multiple of 256",
      Raw().Header(3, 1, 0).Info("w", {100, 2}, 12, 0).Pad(32).Fill(320),
      "tensor 'w': shape [100,2] of Q4_K: ne0 = 100 is not a multiple of the block size 256");
  add("offset not aligned", Raw().Header(3, 1, 0).Info("w", {8}, 0, 8).Pad(32).Fill(64),
      "tensor 'w': offset 8 is not a multiple of the alignment 32");
  add("offset past the end", Raw().Header(3, 1, 0).Info("w", {8}, 0, 64).Pad(32).Fill(64),
      "tensor 'w': 32 bytes of F32 at offset 64 run past the end of the data section (64 bytes");
  add("offset near 2^64", Raw().Header(3, 1, 0).Info("w", {8}, 0, ~uint64_t{31}).Pad(32).Fill(64),
      "at offset 18446744073709551584 run past the end of the data section");
  add("data past the end", Raw().Header(3, 1, 0).Info("w", {16}, 0, 0).Pad(32).Fill(32),
      "64 bytes of F32 at offset 0 run past the end of the data section (32 bytes");
  add("overlapping tensors",
      Raw().Header(3, 2, 0).Info("a", {16}, 0, 0).Info("b", {8}, 0, 32).Pad(32).Fill(64),
      "tensors 'a' [0, 64) and 'b' [32, 64) overlap");
  add("same offset",
      Raw().Header(3, 2, 0).Info("a", {8}, 0, 0).Info("b", {8}, 0, 0).Pad(32).Fill(64),
      "tensors 'a' [0, 32) and 'b' [0, 32) overlap");
  add("data section past the end", Raw().Header(3, 1, 0).Info("w", {8}, 0, 0).Fill(1),
      "truncated: the tensor data section starts at offset 64 (alignment 32), the file ends at 58");
  add("tensor name with a control byte in the message",
      Raw().Header(3, 1, 0).Info("a\nb", {8}, 99, 0).Pad(32).Fill(32),
      "tensor 'a\\x0ab': has unknown ggml type 99");

  for (const Case& c : cases) {
    const std::string err = ErrorOf([&] { Parse(c.bytes); });
    EXPECT_NE(err.find("[gguf] bad.gguf: "), std::string::npos) << c.what << ": " << err;
    EXPECT_NE(err.find(c.message), std::string::npos) << c.what << ": " << err;
  }

  // The base file of these cases is valid.
  const GgufFile ok = Parse(TwoTensorFile());
  EXPECT_EQ(ok.tensors().size(), 2u);
  // Flipping a count in a valid file to 2^60.
  std::vector<uint8_t> b = TwoTensorFile();
  b[8 + 7] = 0x10;  // tensor_count = 2 + 2^60
  EXPECT_ERROR(Parse(b), "tensor_count 1152921504606846978 is more than");
  b = TwoTensorFile();
  b[16 + 7] = 0x10;  // metadata_kv_count = 1 + 2^60
  EXPECT_ERROR(Parse(b), "metadata_kv_count 1152921504606846977 is more than");
}

TEST_F(GgufTest, OpenErrors) {
  EXPECT_ERROR(GgufFile::Open(Path("missing.gguf")), "missing.gguf: cannot open");
  EXPECT_ERROR(GgufFile::Open(dir_.string()), "not a regular file");
  std::ofstream(Path("empty.gguf")).close();
  EXPECT_ERROR(GgufFile::Open(Path("empty.gguf")), "empty.gguf: header: truncated: magic");
  std::ofstream(Path("st.gguf")) << "{\"a\":1}";
  EXPECT_ERROR(GgufFile::Open(Path("st.gguf")), "not a GGUF file");
}

TEST_F(GgufTest, WriterRejectsWhatTheReaderWouldReject) {
  GgufWriter w;
  const std::vector<uint8_t> d(64, 0);
  EXPECT_ERROR(w.AddMetadata("", GgufValue::U8(1)), "writer: key is empty");
  EXPECT_ERROR(w.AddMetadata("caf\xc3\xa9", GgufValue::U8(1)), "keys must be printable ASCII");
  EXPECT_ERROR(w.AddMetadata(std::string(65536, 'k'), GgufValue::U8(1)),
               "exceeds the limit of 65535");
  w.AddMetadata("k", GgufValue::U8(1));
  EXPECT_ERROR(w.AddMetadata("k", GgufValue::U8(2)), "writer: key 'k' added twice");
  GgufValue deep = GgufValue::EmptyArray(GgufValueType::kU8);
  for (int i = 0; i < kGgufMaxArrayDepth; ++i) deep = GgufValue::Arrays({deep});
  EXPECT_ERROR(w.AddMetadata("deep", deep), "nested more than 8 deep");
  EXPECT_ERROR(w.AddTensor("", GgmlType::kF32, {16}, d.data(), 64), "empty tensor name");
  EXPECT_ERROR(w.AddTensor(std::string(65, 'n'), GgmlType::kF32, {16}, d.data(), 64),
               "more than the limit of 64");
  EXPECT_ERROR(w.AddTensor("t", GgmlType::kF32, {16}, d.data(), 60),
               "tensor 't' has 60 bytes, shape [16] of F32 needs 64");
  EXPECT_ERROR(w.AddTensor("t", GgmlType::kQ8_0, {16}, d.data(), 64),
               "ne0 = 16 is not a multiple of the block size 32");
  EXPECT_ERROR(w.AddTensor("t", GgmlType::kF32, {1, 1, 1, 1, 16}, d.data(), 64),
               "has 5 dimensions, expected 1..4");
  EXPECT_ERROR(w.AddTensor("t", GgmlType::kF32, {16, 0}, d.data(), 0), "has a dimension < 1");
  EXPECT_ERROR(w.AddTensor("t", static_cast<GgmlType>(99), {16}, d.data(), 64),
               "unknown ggml type 99");
  EXPECT_ERROR(w.AddTensor("t", GgmlType::kF32, {16}, nullptr, 64), "has no data");
  w.AddTensor("t", GgmlType::kF32, {16}, d.data(), 64);
  EXPECT_ERROR(w.AddTensor("t", GgmlType::kF32, {16}, d.data(), 64), "tensor 't' added twice");
}

TEST_F(GgufTest, WriteReplacesAtomicallyAndViewsAreNotCopied) {
  const std::string p = Path("m.gguf");
  std::vector<float> x(64, 1.0f);
  {
    GgufWriter w;
    w.AddTensor("x", GgmlType::kF32, {64}, x.data(), 256);
    w.Write(p);
  }
  std::vector<uint16_t> h(64);
  for (size_t i = 0; i < h.size(); ++i) h[i] = ToF16(static_cast<float>(i));
  GgufWriter w;
  w.AddTensorView("h", GgmlType::kF16, {64}, h.data(), 128);
  h[5] = ToF16(-5.0f);  // the view sees changes until written
  w.Write(p);           // replaces the old file
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  const GgufFile f = GgufFile::Open(p);
  EXPECT_FALSE(f.HasTensor("x"));
  const GgufTensorInfo& t = f.GetTensor("h");
  uint16_t v;
  std::memcpy(&v, t.data + 10, 2);
  EXPECT_EQ(FromF16(v), -5.0f);
  EXPECT_EQ(ReadAll(p), w.Serialize());
}

}  // namespace
}  // namespace moe::io

namespace moe::io {
namespace {

TEST(GgufWriter, LazyTensorsWriteWhatTheirFillProduces) {
  // The same tensors added eagerly and lazily give the same bytes; fills run once each, in order,
  // when the file is written; a fill that throws leaves no file behind.
  std::vector<float> a(64), b(40);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = -static_cast<float>(i);
  GgufWriter eager, lazy;
  eager.AddMetadata("general.architecture", GgufValue::String("llama"));
  lazy.AddMetadata("general.architecture", GgufValue::String("llama"));
  eager.AddTensor("a", GgmlType::kF32, {64}, a.data(), a.size() * 4);
  eager.AddTensor("b", GgmlType::kF32, {8, 5}, b.data(), b.size() * 4);
  std::vector<std::string> order;
  lazy.AddTensorLazy("a", GgmlType::kF32, {64}, a.size() * 4, [&](uint8_t* out) {
    order.push_back("a");
    std::memcpy(out, a.data(), a.size() * 4);
  });
  lazy.AddTensorLazy("b", GgmlType::kF32, {8, 5}, b.size() * 4, [&](uint8_t* out) {
    order.push_back("b");
    std::memcpy(out, b.data(), b.size() * 4);
  });
  EXPECT_TRUE(order.empty());
  const std::vector<uint8_t> want = eager.Serialize();
  EXPECT_EQ(want, lazy.Serialize());
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b"}));
  order.clear();
  const std::string path = ::testing::TempDir() + "/moe_gguf_lazy_" + std::to_string(::getpid());
  lazy.Write(path);
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ReadFile(path, 1 << 20), std::string(want.begin(), want.end()));
  std::remove(path.c_str());

  GgufWriter bad;
  bad.AddTensorLazy("x", GgmlType::kF32, {4}, 16, [](uint8_t*) { Fail("test", "fill failed"); });
  EXPECT_THROW(bad.Write(path), Error);
  EXPECT_FALSE(PathExists(path));
  EXPECT_FALSE(PathExists(path + ".tmp"));
  // Sizes are checked when the tensor is added, as for eager tensors.
  EXPECT_THROW(bad.AddTensorLazy("y", GgmlType::kF32, {4}, 15, [](uint8_t*) {}), Error);
  EXPECT_THROW(bad.AddTensorLazy("z", GgmlType::kF32, {4}, 16, nullptr), Error);
}

}  // namespace
}  // namespace moe::io
