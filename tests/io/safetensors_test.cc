#include "moe/io/safetensors.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/testing/compare.h"

namespace moe::io {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "moe_safetensors_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::string WriteRaw(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const std::string p = Path(name);
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  fs::path dir_;
};

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// 8-byte little-endian length n, then `header`, then `data_bytes` bytes of data.
std::vector<uint8_t> RawFile(uint64_t n, const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0x5a);
  return out;
}
std::vector<uint8_t> RawFile(const std::string& header, size_t data_bytes) {
  return RawFile(header.size(), header, data_bytes);
}

using moe::testing::ErrorOf;

TEST_F(SafetensorsTest, RoundTripsEveryDtype) {
  const StDType all[] = {StDType::kBool, StDType::kU8,   StDType::kI8,     StDType::kU16,
                         StDType::kI16,  StDType::kF16,  StDType::kBF16,   StDType::kU32,
                         StDType::kI32,  StDType::kF32,  StDType::kU64,    StDType::kI64,
                         StDType::kF64,  StDType::kF8E4M3, StDType::kF8E5M2};
  Rng rng(7);
  SafetensorsWriter w;
  std::map<std::string, std::vector<uint8_t>> want;
  for (StDType t : all) {
    const std::string name = "t_" + std::string(StDTypeName(t));
    std::vector<uint8_t> bytes(2 * 3 * StDTypeSize(t));
    for (auto& b : bytes) b = static_cast<uint8_t>(rng.Below(256));
    if (t == StDType::kBool)
      for (auto& b : bytes) b &= 1;
    w.Add(name, t, {2, 3}, bytes.data(), bytes.size());
    want[name] = bytes;
    EXPECT_EQ(ParseStDType(StDTypeName(t)), t);
  }
  const std::string p = Path("all.safetensors");
  w.Write(p);
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  const auto f = SafetensorsFile::Open(p);
  ASSERT_EQ(f.tensors().size(), std::size(all));
  for (StDType t : all) {
    const std::string name = "t_" + std::string(StDTypeName(t));
    const StTensorInfo& info = f.Get(name);
    EXPECT_EQ(info.dtype, t) << name;
    EXPECT_EQ(info.shape, (std::vector<int64_t>{2, 3})) << name;
    EXPECT_EQ(info.numel, 6);
    ASSERT_EQ(info.nbytes, want[name].size());
    EXPECT_EQ(std::memcmp(info.data, want[name].data(), info.nbytes), 0) << name;
  }
  // Sorted by name.
  for (size_t i = 1; i < f.tensors().size(); ++i)
    EXPECT_LT(f.tensors()[i - 1].name, f.tensors()[i].name);
  // The same bytes through the in-memory entry point.
  const auto bytes = ReadAll(p);
  const auto g = SafetensorsFile::FromBytes("mem", bytes.data(), bytes.size());
  EXPECT_EQ(g.tensors().size(), f.tensors().size());
}

TEST_F(SafetensorsTest, ScalarsEmptyTensorsAndMoeTensors) {
  SafetensorsWriter w;
  const double s = 2.5;
  w.Add("scalar", StDType::kF64, {}, &s, sizeof s);
  w.Add("empty", StDType::kF32, {0, 5}, nullptr, 0);
  Tensor t(DType::kF32, {2, 2, 3});
  for (int64_t i = 0; i < t.numel(); ++i) t.view<float>()[i] = 0.5f * static_cast<float>(i) - 1.0f;
  w.Add("moe", t);
  const std::string p = Path("misc.safetensors");
  w.Write(p);
  const auto f = SafetensorsFile::Open(p);
  EXPECT_TRUE(f.Get("scalar").shape.empty());
  Tensor sc = f.Load("scalar", DType::kF32);
  EXPECT_EQ(sc.shape(), Shape({1}));
  EXPECT_EQ(sc.view<float>()[0], 2.5f);
  EXPECT_EQ(f.Get("empty").nbytes, 0u);
  EXPECT_EQ(f.Load("empty", DType::kF32).shape(), Shape({0, 5}));
  Tensor back = f.Load("moe", DType::kF32);
  ASSERT_EQ(back.shape(), t.shape());
  EXPECT_EQ(std::memcmp(back.raw(), t.raw(), t.nbytes()), 0);
  EXPECT_FALSE(f.Has("nope"));
  const std::string err = ErrorOf([&] { f.Get("nope"); });
  EXPECT_NE(err.find("no tensor 'nope'"), std::string::npos) << err;
}

TEST_F(SafetensorsTest, ConvertsFloatTypes) {
  const std::vector<float> vals = {1.5f, -2.0f, 0.25f, 65504.0f, 0.0f, -0x1p-14f, 0x1p-24f};
  std::vector<uint16_t> h, b;
  for (float v : vals) {
    h.push_back(ToF16(v));
    b.push_back(ToBf16(v).bits);
  }
  std::vector<double> d(vals.begin(), vals.end());
  d[0] = 1.0 + 1e-12;  // not representable in f32
  SafetensorsWriter w;
  w.Add("h", StDType::kF16, {7}, h.data(), h.size() * 2);
  w.Add("b", StDType::kBF16, {7}, b.data(), b.size() * 2);
  w.Add("f", StDType::kF32, {7}, vals.data(), vals.size() * 4);
  w.Add("d", StDType::kF64, {7}, d.data(), d.size() * 8);
  const std::string p = Path("conv.safetensors");
  w.Write(p);
  const auto f = SafetensorsFile::Open(p);
  for (const char* name : {"h", "f"}) {
    Tensor t32 = f.Load(name, DType::kF32);
    Tensor t64 = f.Load(name, DType::kF64);
    for (size_t i = 0; i < vals.size(); ++i) {
      EXPECT_EQ(t32.view<float>()[static_cast<int64_t>(i)], vals[i]) << name << i;
      EXPECT_EQ(t64.view<double>()[static_cast<int64_t>(i)], static_cast<double>(vals[i])) << name << i;
    }
  }
  Tensor tb = f.Load("b", DType::kF32);
  EXPECT_EQ(tb.shape(), Shape({7}));
  for (size_t i = 0; i < vals.size(); ++i)
    EXPECT_EQ(tb.view<float>()[static_cast<int64_t>(i)], FromBf16(ToBf16(vals[i])));
  EXPECT_EQ(f.Load("d", DType::kF64).view<double>()[0], 1.0 + 1e-12);
  EXPECT_EQ(f.Load("d", DType::kF32).view<float>()[0], 1.0f);
  // Same-type loads keep the raw encoding.
  Tensor hb = f.Load("b", DType::kBF16);
  EXPECT_EQ(std::memcmp(hb.raw(), b.data(), b.size() * 2), 0);
  // A float tensor cannot be loaded as a different storage type.
  const std::string err = ErrorOf([&] { f.Load("f", DType::kBF16); });
  EXPECT_NE(err.find("tensor 'f' is F32, cannot load it as BF16"), std::string::npos) << err;
}

TEST_F(SafetensorsTest, IntegersAndTheirLimits) {
  const std::vector<int64_t> i64 = {-3, 0, int64_t{1} << 40};
  const std::vector<int32_t> i32 = {-7, 7};
  const std::vector<uint8_t> u8 = {0, 255};
  const std::vector<uint64_t> u64 = {1, ~uint64_t{0}};
  SafetensorsWriter w;
  w.Add("i64", StDType::kI64, {3}, i64.data(), 24);
  w.Add("i32", StDType::kI32, {2}, i32.data(), 8);
  w.Add("u8", StDType::kU8, {2}, u8.data(), 2);
  w.Add("u64", StDType::kU64, {2}, u64.data(), 16);
  w.Add("rank5", StDType::kF32, {1, 1, 1, 1, 1}, i32.data(), 4);
  const std::string p = Path("ints.safetensors");
  w.Write(p);
  const auto f = SafetensorsFile::Open(p);
  EXPECT_EQ(f.LoadIntegers("i64"), i64);
  EXPECT_EQ(f.LoadIntegers("i32"), (std::vector<int64_t>{-7, 7}));
  EXPECT_EQ(f.LoadIntegers("u8"), (std::vector<int64_t>{0, 255}));
  std::string err = ErrorOf([&] { f.LoadIntegers("u64"); });
  EXPECT_NE(err.find("does not fit in int64"), std::string::npos) << err;
  err = ErrorOf([&] { f.LoadIntegers("rank5"); });
  EXPECT_NE(err.find("not an integer type"), std::string::npos) << err;
  err = ErrorOf([&] { f.Load("i64", DType::kF32); });
  EXPECT_NE(err.find("tensor 'i64' is I64, cannot load it as F32"), std::string::npos) << err;
  err = ErrorOf([&] { f.Load("rank5", DType::kF32); });
  EXPECT_NE(err.find("rank 5"), std::string::npos) << err;
}

TEST_F(SafetensorsTest, MetadataRoundTrips) {
  SafetensorsWriter w;
  w.SetMetadata("config", R"({"d_model": 16, "note": "x\"y"})");
  w.SetMetadata("format", "pt");
  w.SetMetadata("unicode", "\xc3\xa9t\xc3\xa9");
  const float one = 1;
  w.Add("x", StDType::kF32, {1}, &one, 4);
  const std::string p = Path("meta.safetensors");
  w.Write(p);
  const auto f = SafetensorsFile::Open(p);
  EXPECT_EQ(f.metadata().size(), 3u);
  EXPECT_EQ(f.Metadata("config"), R"({"d_model": 16, "note": "x\"y"})");
  EXPECT_EQ(f.Metadata("format"), "pt");
  EXPECT_EQ(f.Metadata("unicode"), "\xc3\xa9t\xc3\xa9");
  const std::string err = ErrorOf([&] { f.Metadata("absent"); });
  EXPECT_NE(err.find("no metadata key 'absent'"), std::string::npos) << err;
  // Invalid UTF-8 cannot be encoded in the JSON header.
  SafetensorsWriter bad;
  bad.SetMetadata("k", "\xff\xfe");
  EXPECT_THROW(bad.Serialize(), Error);
}

TEST_F(SafetensorsTest, OutputIsDeterministicAlignedAndAtomic) {
  const std::vector<float> a = {1, 2, 3}, b = {4, 5};
  SafetensorsWriter w1, w2;
  w1.Add("zeta", StDType::kF32, {3}, a.data(), 12);
  w1.Add("alpha", StDType::kF32, {2}, b.data(), 8);
  w1.SetMetadata("k", "v");
  w2.SetMetadata("k", "v");
  w2.Add("alpha", StDType::kF32, {2}, b.data(), 8);
  w2.Add("zeta", StDType::kF32, {3}, a.data(), 12);
  const auto bytes = w1.Serialize();
  EXPECT_EQ(bytes, w2.Serialize());
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(bytes[static_cast<size_t>(i)]) << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 20);
  // Data packed in name order: alpha first.
  float first;
  std::memcpy(&first, bytes.data() + 8 + n, 4);
  EXPECT_EQ(first, 4.0f);

  // Overwriting an existing file replaces it whole and leaves no temporary behind.
  const std::string p = Path("atomic.safetensors");
  WriteRaw("atomic.safetensors", std::vector<uint8_t>(1000, 0xee));
  w1.Write(p);
  EXPECT_EQ(ReadAll(p), bytes);
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  // A path in a missing directory is an Error naming it.
  const std::string err = ErrorOf([&] { w1.Write(Path("no/such/dir/x.safetensors")); });
  EXPECT_NE(err.find("no/such/dir/x.safetensors.tmp"), std::string::npos) << err;
}

TEST_F(SafetensorsTest, WriterRejectsBadTensors) {
  SafetensorsWriter w;
  const float v[6] = {};
  w.Add("a", StDType::kF32, {2, 3}, v, 24);
  EXPECT_NE(ErrorOf([&] { w.Add("a", StDType::kF32, {2, 3}, v, 24); }).find("added twice"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { w.Add("b", StDType::kF32, {5, 6}, v, 24); }).find("needs 120"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { w.Add("c", StDType::kF32, {-1}, v, 0); }).find("negative"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { w.Add("__metadata__", StDType::kF32, {1}, v, 4); }).find("reserved"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { w.Add("", StDType::kF32, {1}, v, 4); }).find("empty tensor name"),
            std::string::npos);
}

TEST_F(SafetensorsTest, MissingFileIsAnError) {
  const std::string p = Path("absent.safetensors");
  const std::string err = ErrorOf([&] { SafetensorsFile::Open(p); });
  EXPECT_NE(err.find(p + ": cannot open"), std::string::npos) << err;
  EXPECT_NE(ErrorOf([&] { SafetensorsFile::Open(dir_.string()); }).find("not a regular file"),
            std::string::npos);
}

struct CorruptCase {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* expect;  // substring of the message (after the file name)
};

std::vector<CorruptCase> CorruptCases() {
  const std::string ok_entry = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  auto entry = [](const std::string& body) { return "{\"w\":{" + body + "}}"; };
  return {
      {"empty", {}, "file is 0 bytes, too short for the 8-byte header length"},
      {"seven_bytes", {1, 0, 0, 0, 0, 0, 0}, "file is 7 bytes, too short"},
      {"length_past_eof", RawFile(100, "{}", 10), "header length 100 runs past the end of the file (12 bytes follow it)"},
      {"huge_length", RawFile(uint64_t{1} << 62, "{}", 0), "header length 4611686018427387904 exceeds the limit"},
      {"max_length", RawFile(~uint64_t{0}, "{}", 0), "exceeds the limit"},
      {"zero_length", RawFile(0, "", 16), "header is not valid JSON"},
      {"invalid_json", RawFile(R"({"w": {"dtype": )", 0), "header is not valid JSON"},
      {"invalid_utf8", RawFile("{\"\xff\": 1}", 0), "header is not valid JSON"},
      {"trailing_garbage", RawFile("{} x", 0), "header is not valid JSON"},
      {"array_json", RawFile("[1,2]", 0), "header is a JSON array, expected an object"},
      {"string_json", RawFile("\"hi\"", 0), "header is a JSON string, expected an object"},
      {"entry_not_object", RawFile(R"({"w": 3})", 0), "tensor 'w' is a JSON number (3), expected an object"},
      // Found by the fuzzer: read, then refused by the writer when re-serialised.
      {"empty_name", RawFile(R"({"":{"dtype":"F16","shape":[1,0],"data_offsets":[0,0]}})", 0), "a tensor in the header has an empty name"},
      {"missing_dtype", RawFile(entry(R"("shape":[2],"data_offsets":[0,8])"), 8), "tensor 'w' is missing field 'dtype'"},
      {"missing_shape", RawFile(entry(R"("dtype":"F32","data_offsets":[0,8])"), 8), "tensor 'w' is missing field 'shape'"},
      {"missing_offsets", RawFile(entry(R"("dtype":"F32","shape":[2])"), 8), "tensor 'w' is missing field 'data_offsets'"},
      {"extra_field", RawFile(entry(ok_entry + R"(,"extra":1)"), 8), "tensor 'w' has unknown field 'extra'"},
      {"dtype_not_string", RawFile(entry(R"("dtype":4,"shape":[2],"data_offsets":[0,8])"), 8), "tensor 'w' field 'dtype' is a JSON number (4), expected a string"},
      {"unknown_dtype", RawFile(entry(R"("dtype":"F33","shape":[2],"data_offsets":[0,8])"), 8), "tensor 'w' has unknown dtype \"F33\""},
      {"lowercase_dtype", RawFile(entry(R"("dtype":"f32","shape":[2],"data_offsets":[0,8])"), 8), "unknown dtype \"f32\""},
      {"shape_not_array", RawFile(entry(R"("dtype":"F32","shape":"2","data_offsets":[0,8])"), 8), "field 'shape' is a JSON string (\"2\"), expected an array"},
      {"shape_float", RawFile(entry(R"("dtype":"F32","shape":[2.0],"data_offsets":[0,8])"), 8), "shape [2.0] has number (2.0), expected non-negative integers"},
      {"shape_null", RawFile(entry(R"("dtype":"F32","shape":[null],"data_offsets":[0,8])"), 8), "expected non-negative integers"},
      {"shape_negative", RawFile(entry(R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])"), 8), "shape [-2] has negative dimension -2"},
      {"shape_beyond_int64", RawFile(entry(R"("dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8])"), 8), "has dimension 18446744073709551615, too large"},
      {"shape_beyond_uint64", RawFile(entry(R"("dtype":"F32","shape":[1e30],"data_offsets":[0,8])"), 8), "expected non-negative integers"},
      {"shape_overflow", RawFile(entry(R"("dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8])"), 8), "shape [4294967296,4294967296] of F32 overflows a 64-bit byte count"},
      {"offsets_not_array", RawFile(entry(R"("dtype":"F32","shape":[2],"data_offsets":8)"), 8), "field 'data_offsets' is 8, expected [begin, end]"},
      {"offsets_one_value", RawFile(entry(R"("dtype":"F32","shape":[2],"data_offsets":[8])"), 8), "field 'data_offsets' is [8], expected [begin, end]"},
      {"offsets_three_values", RawFile(entry(R"("dtype":"F32","shape":[2],"data_offsets":[0,8,8])"), 8), "expected [begin, end]"},
      {"offsets_negative", RawFile(entry(R"("dtype":"F32","shape":[2],"data_offsets":[-8,0])"), 8), "field 'data_offsets' is [-8,0]"},
      {"offsets_reversed", RawFile(entry(R"("dtype":"F32","shape":[0],"data_offsets":[8,0])"), 8), "data_offsets [8,0] end before they begin"},
      {"offsets_past_end", RawFile(entry(R"("dtype":"F32","shape":[2],"data_offsets":[4,12])"), 8), "data_offsets [4,12] run past the data buffer of 8 bytes"},
      {"offsets_vs_shape", RawFile(R"({"w13":{"dtype":"F32","shape":[5,6],"data_offsets":[0,100]}})", 120), "tensor 'w13' data_offsets [0,100] hold 100 bytes, shape [5,6] of F32 needs 120"},
      {"offsets_vs_dtype", RawFile(entry(R"("dtype":"F64","shape":[2],"data_offsets":[0,8])"), 16), "hold 8 bytes, shape [2] of F64 needs 16"},
      {"overlap", RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "tensors 'a' [0,8] and 'b' [4,12] overlap"},
      {"overlap_contained", RawFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"U8","shape":[1],"data_offsets":[12,13]},"c":{"dtype":"U8","shape":[1],"data_offsets":[14,15]}})", 16), "tensors 'a' [0,16] and 'b' [12,13] overlap"},
      {"overlap_same", RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", 8), "overlap"},
      {"duplicate_name", RawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16), "name 'w' appears twice"},
      {"metadata_not_object", RawFile(R"({"__metadata__":["a"]})", 0), "__metadata__ is a JSON array, expected an object of strings"},
      {"metadata_number", RawFile(R"({"__metadata__":{"a":"b","n":1}})", 0), "__metadata__ value of 'n' is a JSON number (1), expected a string"},
      {"metadata_nested", RawFile(R"({"__metadata__":{"o":{"x":"y"}}})", 0), "__metadata__ value of 'o' is a JSON object"},
  };
}

TEST_F(SafetensorsTest, CorruptFilesGiveClearErrors) {
  for (const CorruptCase& c : CorruptCases()) {
    SCOPED_TRACE(c.name);
    const std::string p = WriteRaw(std::string(c.name) + ".safetensors", c.bytes);
    const std::string err = ErrorOf([&] { SafetensorsFile::Open(p); });
    EXPECT_EQ(err.rfind("[safetensors] " + p + ": ", 0), 0u) << err;
    EXPECT_NE(err.find(c.expect), std::string::npos) << "message: " << err;
    // The in-memory entry point reports the same problem.
    const std::string err2 = ErrorOf([&] { SafetensorsFile::FromBytes("mem", c.bytes.data(), c.bytes.size()); });
    EXPECT_NE(err2.find(c.expect), std::string::npos) << "message: " << err2;
  }
}

TEST_F(SafetensorsTest, AcceptsWhatTheFormatAllows) {
  // Empty header object, whitespace padding, a hole and trailing bytes in the data buffer,
  // offsets out of name order, and empty tensors sharing an offset.
  const std::string h =
      R"(  {"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("a":{"shape":[1],"data_offsets":[4,8],"dtype":"I32"},)"
      R"("e1":{"dtype":"F32","shape":[0,3],"data_offsets":[2,2]},)"
      R"("e2":{"dtype":"F32","shape":[3,0],"data_offsets":[2,2]},)"
      R"("__metadata__":{}}    )";
  auto bytes = RawFile(h, 12);
  const auto f = SafetensorsFile::FromBytes("ok", bytes.data(), bytes.size());
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.tensors()[0].name, "a");
  EXPECT_EQ(f.Get("a").offset, 4u);
  EXPECT_EQ(f.LoadIntegers("b"), (std::vector<int64_t>{0x5a, 0x5a}));
  const auto empty = RawFile("{}", 0);
  EXPECT_TRUE(SafetensorsFile::FromBytes("e", empty.data(), empty.size()).tensors().empty());
}

}  // namespace
}  // namespace moe::io
