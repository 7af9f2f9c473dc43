// `moe inspect` of .gguf files: the config, parameter counts and per-part / per-type bytes come
// from the header alone and agree with the Hugging Face inspection of the same model, with
// CountParams and with the tensors' own sizes; broken files are Errors naming the file.
#include "moe/model/inspect.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>

#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/io/file.h"
#include "moe/io/gguf.h"
#include "moe/model/gguf_model.h"
#include "moe/model/hf_model.h"
#include "moe/tokenizer/hf_json.h"
#include "moe/testing/compare.h"
#include "moe/testing/models.h"

namespace moe::model {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Data(const std::string& rel) { return std::string(MOE_TEST_DATA_DIR) + "/" + rel; }

std::string TmpPath(const std::string& name) {
  return (fs::temp_directory_path() /
          ("moe_inspect_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

using moe::testing::ErrorOf;

// The report lines starting with `key` (the "ffn" line and its continuation lines count as ffn).
std::vector<std::string> LinesOf(const std::string& report, const std::string& key) {
  std::vector<std::string> out;
  std::istringstream in(report);
  std::string l;
  bool in_key = false;
  while (std::getline(in, l)) {
    if (l.starts_with(key + " "))
      in_key = true;
    else if (!l.starts_with("           "))
      in_key = false;
    if (in_key) out.push_back(l);
  }
  return out;
}

const GgufReport::Part& PartNamed(const GgufReport& r, const std::string& name) {
  for (const GgufReport::Part& p : r.parts)
    if (p.name == name) return p;
  ADD_FAILURE() << "no part " << name;
  static GgufReport::Part none;
  return none;
}

// Every part's element count is CountParams' count of that part; bytes add up three ways.
void ExpectConsistent(const GgufReport& r, const std::string& path, const std::string& what) {
  const ParamCounts p = CountParams(r.config);
  EXPECT_EQ(PartNamed(r, "embeddings").params, p.embed) << what;
  EXPECT_EQ(PartNamed(r, "attention").params, p.attention) << what;
  EXPECT_EQ(PartNamed(r, "router").params, p.router) << what;
  EXPECT_EQ(PartNamed(r, "routed experts").params, p.experts) << what;
  EXPECT_EQ(PartNamed(r, "shared experts").params, p.shared) << what;
  EXPECT_EQ(PartNamed(r, "dense ffn").params, p.dense_ffn) << what;
  EXPECT_EQ(PartNamed(r, "norms").params, p.norms) << what;
  EXPECT_EQ(PartNamed(r, "head").params, p.head) << what;
  const io::GgufFile f = io::GgufFile::Open(path);
  // "other" holds only Llama 3's RoPE divisors (part of the config, not a parameter).
  const io::GgufTensorInfo* rf = f.FindTensor("rope_freqs.weight");
  EXPECT_EQ(PartNamed(r, "other").tensors, rf != nullptr ? 1 : 0) << what;
  EXPECT_EQ(PartNamed(r, "other").params, rf != nullptr ? static_cast<double>(rf->numel) : 0.0)
      << what;

  uint64_t tensor_bytes = 0;
  std::map<std::string, std::pair<int64_t, uint64_t>> by_type;  // name -> tensors, bytes
  for (const io::GgufTensorInfo& t : f.tensors()) {
    tensor_bytes += t.nbytes;
    auto& [n, b] = by_type[std::string(io::GgmlTypeName(t.type))];
    ++n;
    b += t.nbytes;
  }
  EXPECT_EQ(r.tensor_bytes, tensor_bytes) << what;
  EXPECT_EQ(r.tensors, static_cast<int64_t>(f.tensors().size())) << what;
  uint64_t type_sum = 0, part_sum = 0;
  int64_t type_tensors = 0;
  for (const GgufReport::TypeUse& u : r.types) {
    type_sum += u.bytes;
    type_tensors += u.tensors;
    EXPECT_EQ(by_type[u.name], std::make_pair(u.tensors, u.bytes)) << what << " " << u.name;
  }
  EXPECT_EQ(r.types.size(), by_type.size()) << what;
  for (size_t i = 1; i < r.types.size(); ++i) EXPECT_GE(r.types[i - 1].bytes, r.types[i].bytes);
  for (const GgufReport::Part& part : r.parts) part_sum += part.bytes;
  EXPECT_EQ(type_sum, tensor_bytes) << what;
  EXPECT_EQ(part_sum, tensor_bytes) << what;
  EXPECT_EQ(type_tensors, r.tensors) << what;
  EXPECT_EQ(r.file_bytes, fs::file_size(path)) << what;
  EXPECT_LE(r.data_offset + tensor_bytes, r.file_bytes) << what;
  EXPECT_LE(r.active_bytes, static_cast<double>(tensor_bytes)) << what;
  if (r.config.NumMoeLayers() == 0) {
    EXPECT_EQ(r.active_bytes, static_cast<double>(tensor_bytes)) << what;
  }
}

class InspectGgufFixture : public ::testing::TestWithParam<const char*> {};

// Each family's fixture folder, written as F32 and Q4_K_M GGUF: the description of the model is
// the Hugging Face one (shape, per-layer FFN kinds and experts, parameters total and active).
TEST_P(InspectGgufFixture, DescribesTheSameModelAsTheHuggingFaceFolder) {
  const std::string dir = Data(std::string("arch/") + GetParam());
  HfModel hf = LoadHfModel(dir);
  const std::string hf_report = InspectModel(dir);
  for (GgufScheme scheme : {GgufScheme::kF32, GgufScheme::kQ4_K_M}) {
    const std::string what = std::string(GetParam()) + " " + std::string(Name(scheme));
    const std::string path = TmpPath(std::string(GetParam()) + ".gguf");
    GgufSaveOptions o;
    o.scheme = scheme;
    SaveGgufModel(hf.config, hf.weights, path, o);
    const GgufReport r = ReadGgufReport(path);
    EXPECT_EQ(CountParams(r.config).total(), CountParams(hf.config).total()) << what;
    EXPECT_EQ(CountParams(r.config).active(), CountParams(hf.config).active()) << what;
    ExpectConsistent(r, path, what);
    // Llama 3 RoPE scaling travels as the rope_freqs tensor.
    EXPECT_EQ(PartNamed(r, "other").tensors, std::string(GetParam()) == "llama" ? 1 : 0) << what;
    const std::string report = InspectModel(path);
    for (const char* key : {"shape", "ffn", "params"}) {
      EXPECT_EQ(LinesOf(report, key), LinesOf(hf_report, key)) << what << "\n" << report;
      EXPECT_FALSE(LinesOf(report, key).empty()) << what;
    }
    EXPECT_THAT(report, HasSubstr("memory in the file, by part"));
    EXPECT_THAT(report,
                HasSubstr(scheme == GgufScheme::kF32 ? "file type F32" : "file type Q4_K_M"));
    if (scheme == GgufScheme::kF32) {
      ASSERT_EQ(r.types.size(), 1u) << what;
      EXPECT_EQ(r.types[0].name, "F32");
      EXPECT_EQ(r.types[0].bytes, static_cast<uint64_t>(r.types[0].params) * 4);
    }
    if (hf.config.mla.enabled()) {
      // kv_b split into attn_k_b + attn_v_b (newer llama.cpp converters): the same description.
      o.split_mla_kv_b = true;
      SaveGgufModel(hf.config, hf.weights, path, o);
      ExpectConsistent(ReadGgufReport(path), path, what + " split kv_b");
      const std::string split_report = InspectModel(path);
      for (const char* key : {"shape", "ffn", "params"})
        EXPECT_EQ(LinesOf(split_report, key), LinesOf(hf_report, key)) << what << " split kv_b";
    }
    fs::remove(path);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, InspectGgufFixture,
                         ::testing::Values("mixtral", "llama", "mistral", "qwen2", "qwen2_moe",
                                           "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"),
                         [](const auto& info) { return std::string(info.param); });

// Mixtral-like and Qwen2-MoE-like models wide enough for K-quants (rows of 256).
using Random = moe::testing::RandomModel;
using moe::testing::RandomMoeModel;

TEST(InspectGguf, Q4KMTypesBytesAndTokenizer) {
  const std::string tj = Data("tokenizers/qwen2/tokenizer.json");
  const tokenizer::TokenizerSpec spec =
      tokenizer::ParseHfTokenizerJson(io::ReadFile(tj, 64 << 20), tj);
  for (bool qwen : {false, true}) {
    Random m = RandomMoeModel(qwen, 410);
    const std::string path = TmpPath(qwen ? "qwen2moe.gguf" : "mixtral.gguf");
    GgufSaveOptions o;
    o.scheme = GgufScheme::kQ4_K_M;
    o.name = "tiny";
    if (qwen) {
      o.tokenizer = &spec;
      o.chat_template = "{{ messages }}";
    }
    SaveGgufModel(m.cfg, m.w, path, o);
    const GgufReport r = ReadGgufReport(path);
    const std::string what = qwen ? "qwen2moe" : "llama";
    EXPECT_EQ(r.architecture, what);
    EXPECT_EQ(r.name, "tiny");
    EXPECT_EQ(r.file_type, 15);
    EXPECT_EQ(CountParams(r.config).total(), CountParams(m.cfg).total());
    EXPECT_EQ(CountParams(r.config).active(), CountParams(m.cfg).active());
    ExpectConsistent(r, path, what);
    std::map<std::string, GgufReport::TypeUse> types;
    for (const GgufReport::TypeUse& u : r.types) types[u.name] = u;
    ASSERT_EQ(types.size(), 3u) << what;
    // Q6_K: output, and attn_v + ffn_down(_exps, _shexp) of layer 1 (the last eighth).
    EXPECT_EQ(types["Q6_K"].tensors, qwen ? 4 : 3);
    // F32: 2 norms per layer + the final norm, routers; Qwen2-MoE adds q/k/v biases and the
    // shared-expert gate.
    EXPECT_EQ(types["F32"].tensors, qwen ? 5 + 2 * (1 + 3 + 1) : 5 + 2);
    for (const auto& [name, bytes_per_256] :
         {std::pair{"Q4_K", 144.0}, std::pair{"Q6_K", 210.0}, std::pair{"F32", 1024.0}}) {
      EXPECT_TRUE(types[name].supported);
      EXPECT_EQ(static_cast<double>(types[name].bytes), types[name].params / 256 * bytes_per_256)
          << what << " " << name;
    }
    // One token reads all but 2 of the 4 experts' bytes.
    const double experts = static_cast<double>(PartNamed(r, "routed experts").bytes);
    EXPECT_EQ(r.active_bytes, static_cast<double>(r.tensor_bytes) - experts / 2);
    EXPECT_EQ(PartNamed(r, "shared experts").bytes > 0, qwen);

    const std::string report = InspectModel(path);
    EXPECT_THAT(report, HasSubstr("GGUF " + what + ", \"tiny\", file type Q4_K_M"));
    EXPECT_THAT(report, HasSubstr("layers 0-1: MoE E=4 K=2 F=256"));
    EXPECT_THAT(report, HasSubstr("routed experts"));
    EXPECT_THAT(report, HasSubstr("active/token"));
    EXPECT_THAT(report, HasSubstr("Q4_K"));
    EXPECT_THAT(report, HasSubstr("Q6_K"));
    if (qwen) {
      EXPECT_EQ(r.tokenizer_model, "gpt2");
      EXPECT_EQ(r.tokenizer_pre, "qwen2");
      const int64_t n_tokens =
          static_cast<int64_t>(io::GgufFile::Open(path).GetStrings("tokenizer.ggml.tokens").size());
      EXPECT_GT(n_tokens, 100);
      EXPECT_EQ(r.tokenizer_tokens, n_tokens);
      EXPECT_TRUE(r.tokenizer_problem.empty()) << r.tokenizer_problem;
      EXPECT_EQ(r.chat_template_bytes, 14);
      EXPECT_THAT(report, HasSubstr(fmt::format("gpt2 (pre qwen2), {} tokens", n_tokens)));
      EXPECT_THAT(report, HasSubstr("template present (14 bytes)"));
      EXPECT_THAT(report, HasSubstr("+ shared F=256 (gated)"));
    } else {
      EXPECT_TRUE(r.tokenizer_model.empty());
      EXPECT_EQ(r.chat_template_bytes, -1);
      EXPECT_THAT(report, HasSubstr("none embedded"));
      EXPECT_THAT(report, HasSubstr("no template"));
      EXPECT_THAT(report, Not(HasSubstr("shared experts")));
    }
    std::printf("%s", report.c_str());
    fs::remove(path);
  }
}

// Only the header is read: a tensor type moe cannot dequantise is reported, not refused.
TEST(InspectGguf, UnsupportedTensorTypesAreReportedNotRefused) {
  Random m = RandomMoeModel(false, 300);
  const std::string path = TmpPath("q3.gguf"), out = TmpPath("q3_out.gguf");
  SaveGgufModel(m.cfg, m.w, path);
  {
    const io::GgufFile f = io::GgufFile::Open(path);
    io::GgufWriter w;
    for (const auto& [k, v] : f.metadata()) w.AddMetadata(k, v);
    for (const io::GgufTensorInfo& t : f.tensors()) {
      if (t.name != "blk.0.attn_q.weight") {
        w.AddTensor(t.name, t.type, t.dims, t.data, t.nbytes);
        continue;
      }
      const uint64_t n = *io::GgmlTensorBytes(io::GgmlType::kQ3_K, t.dims);
      const std::vector<uint8_t> zeros(n);
      w.AddTensor(t.name, io::GgmlType::kQ3_K, t.dims, zeros.data(), zeros.size());
    }
    w.Write(out);
  }
  EXPECT_THAT(ErrorOf([&] { LoadGgufModel(out); }), HasSubstr("Q3_K"));
  const GgufReport r = ReadGgufReport(out);
  ExpectConsistent(r, out, "q3");
  const std::string report = InspectModel(out);
  EXPECT_THAT(report, HasSubstr("Q3_K"));
  EXPECT_THAT(report, HasSubstr("no moe kernels"));
  fs::remove(path);
  fs::remove(out);
}

TEST(InspectGguf, BrokenFilesAreErrorsNamingTheFile) {
  Random m = RandomMoeModel(false, 300);
  const std::string path = TmpPath("good.gguf"), bad = TmpPath("bad.gguf");
  GgufSaveOptions o;
  o.scheme = GgufScheme::kQ4_K_M;
  SaveGgufModel(m.cfg, m.w, path, o);
  const std::string bytes = io::ReadFile(path);
  const io::GgufFile f = io::GgufFile::Open(path);
  // Cut inside the magic, the metadata, the tensor infos, and the last tensor's bytes (the writer
  // pads after it, so the file's last byte is padding).
  uint64_t data_end = 0;
  for (const io::GgufTensorInfo& t : f.tensors())
    data_end = std::max(data_end, f.data_offset() + t.offset + t.nbytes);
  for (const uint64_t cut :
       {uint64_t{3}, uint64_t{64}, f.data_offset() - 40, f.data_offset() + 1, data_end - 1}) {
    io::WriteFileAtomic(bad, std::string_view(bytes).substr(0, static_cast<size_t>(cut)));
    const std::string e = ErrorOf([&] { InspectModel(bad); });
    EXPECT_THAT(e, HasSubstr(bad)) << "cut at " << cut;
    EXPECT_THAT(e, HasSubstr("[gguf]")) << "cut at " << cut;
  }
  io::WriteFileAtomic(bad, "this is not a GGUF file at all, only some text");
  EXPECT_THAT(ErrorOf([&] { InspectModel(bad); }), HasSubstr(bad));
  // A valid container that describes no supported model.
  {
    io::GgufWriter w;
    w.AddMetadata("general.architecture", io::GgufValue::String("gptx"));
    w.Write(bad);
  }
  EXPECT_THAT(ErrorOf([&] { InspectModel(bad); }),
              AllOf(HasSubstr(bad), HasSubstr("'gptx' is not supported")));
  // A file that is not .gguf, and a .gguf that does not exist.
  const std::string txt = TmpPath("model.bin");
  io::WriteFileAtomic(txt, "x");
  EXPECT_THAT(ErrorOf([&] { InspectModel(txt); }), HasSubstr("not a .gguf model"));
  fs::remove(txt);
  fs::remove(bad);
  EXPECT_THAT(ErrorOf([&] { InspectModel(bad); }), HasSubstr(bad));
  fs::remove(path);
}

}  // namespace
}  // namespace moe::model
