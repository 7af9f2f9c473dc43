// GGUF models: Hugging Face fixtures (tests/data/arch) written by SaveGgufModel and read back by
// LoadGgufModel give the same logits (F32: the llama-arch Q/K permutation round trip; the permuted
// weights with interleaved RoPE give the same logits too, which ties the permutation to ggml's
// RoPE); quantised files stay close; legacy per-expert tensors load; embedded tokenizers encode as
// their tokenizer.json; broken files are clear errors.
#include "moe/model/gguf_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/generate/model_dir.h"
#include "moe/io/file.h"
#include "moe/io/gguf.h"
#include "moe/kernels/quant_repack.h"
#include "moe/model/hf_model.h"
#include "moe/model/transformer.h"
#include "moe/tokenizer/gguf_vocab.h"
#include "moe/tokenizer/hf_json.h"
#include "moe/tokenizer/tokenizer.h"
#include "moe/testing/compare.h"
#include "moe/testing/models.h"

namespace moe::model {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Data(const std::string& rel) { return std::string(MOE_TEST_DATA_DIR) + "/" + rel; }

std::string TmpPath(const std::string& name) {
  // The pid keeps concurrent runs (ctest -j, several build trees) apart.
  return (fs::temp_directory_path() /
          ("moe_gguf_model_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

using moe::testing::ErrorOf;

// Logits of every position from one Infer call, or (one_at_a_time: the KV-cache decode path) of
// the last position after feeding the tokens one by one.
std::vector<float> Logits(const ModelConfig& cfg, const ModelWeights& w,
                          const std::vector<int32_t>& tokens, bool one_at_a_time = false) {
  Context ctx({.threads = 2});
  const Transformer tf(cfg);
  KvCache cache;
  cache.Allocate(cfg, static_cast<int64_t>(tokens.size()));
  InferState st;
  if (one_at_a_time) {
    for (const int32_t t : tokens) tf.Infer(w, &t, 1, cache, st, ctx, false);
  } else {
    tf.Infer(w, tokens.data(), static_cast<int64_t>(tokens.size()), cache, st, ctx, true);
  }
  const View<const float> v = st.logits.view<float>();
  return std::vector<float>(v.data, v.data + v.numel());
}

double RelMaxErr(const std::vector<float>& a, const std::vector<float>& e) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(a[i]) - e[i]));
    scale = std::max(scale, std::abs(static_cast<double>(e[i])));
  }
  return err / std::max(scale, 1e-30);
}

double Nmse(const std::vector<float>& a, const std::vector<float>& e) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - e[i]) * (static_cast<double>(a[i]) - e[i]);
    den += static_cast<double>(e[i]) * e[i];
  }
  return num / std::max(den, 1e-30);
}

std::vector<int32_t> Tokens(int64_t vocab, int n) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((7 + 13 * i) % vocab));
  return t;
}

// Rewrites a GGUF file through `edit` (which may change metadata and tensors).
struct Rewrite {
  std::vector<std::pair<std::string, io::GgufValue>> kv;
  struct T {
    std::string name;
    io::GgmlType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> bytes;
  };
  std::vector<T> tensors;

  explicit Rewrite(const std::string& path) {
    const io::GgufFile f = io::GgufFile::Open(path);
    kv = f.metadata();
    for (const io::GgufTensorInfo& t : f.tensors())
      tensors.push_back({t.name, t.type, t.dims, std::vector<uint8_t>(t.data, t.data + t.nbytes)});
  }
  void Write(const std::string& path) const {
    io::GgufWriter w;
    for (const auto& [k, v] : kv) w.AddMetadata(k, v);
    for (const T& t : tensors) w.AddTensor(t.name, t.type, t.dims, t.bytes.data(), t.bytes.size());
    w.Write(path);
  }
};

struct Case {
  const char* dir;
  const char* gguf_arch;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.dir; }

class GgufFixture : public ::testing::TestWithParam<Case> {};

TEST_P(GgufFixture, F32RoundTripMatchesHuggingFace) {
  const Case cs = GetParam();
  HfModel hf = LoadHfModel(Data(std::string("arch/") + cs.dir));
  const std::string path = TmpPath(std::string(cs.dir) + ".gguf");
  SaveGgufModel(hf.config, hf.weights, path);
  GgufModel g = LoadGgufModel(path);
  EXPECT_EQ(g.architecture, cs.gguf_arch);
  const std::vector<int32_t> toks = Tokens(hf.config.vocab_size, 11);
  const std::vector<float> want = Logits(hf.config, hf.weights, toks);
  const std::vector<float> got = Logits(g.config, g.weights, toks);
  ASSERT_EQ(got.size(), want.size());
  const double err = RelMaxErr(got, want);
  EXPECT_LE(err, 1e-5) << cs.dir;
  std::printf("  %-10s F32 GGUF vs HF: max rel logit error %.2e\n", cs.dir, err);

  if (std::string(cs.gguf_arch) == "llama") {
    // The file's attn_q/attn_k rows as stored (permuted) with interleaved RoPE pairing give the
    // same logits: the permutation is exactly HF rotate-half <-> ggml interleaved pairs.
    const io::GgufFile f = io::GgufFile::Open(path);
    ModelConfig ic = g.config;
    ic.rope_pairing = kernels::RopePairing::kInterleaved;
    for (int64_t l = 0; l < ic.n_layers; ++l) {
      LayerWeights& L = g.weights.layers[static_cast<size_t>(l)];
      for (auto [name, t] : {std::pair{"attn_q", &L.wq}, std::pair{"attn_k", &L.wk}}) {
        const io::GgufTensorInfo& ti =
            f.GetTensor("blk." + std::to_string(l) + "." + name + ".weight");
        ASSERT_EQ(ti.type, io::GgmlType::kF32);
        std::memcpy(t->raw(), ti.data, ti.nbytes);
      }
    }
    const double ierr = RelMaxErr(Logits(ic, g.weights, toks), want);
    EXPECT_LE(ierr, 1e-5) << cs.dir << ": stored Q/K with interleaved RoPE";
  }
  fs::remove(path);
}

TEST(GgufModel, LinearAndYarnRopeScalingRoundTrip) {
  for (kernels::RopeScalingKind kind :
       {kernels::RopeScalingKind::kLinear, kernels::RopeScalingKind::kYarn}) {
    HfModel hf = LoadHfModel(Data("arch/mistral"));
    hf.config.rope_scaling.kind = kind;
    hf.config.rope_scaling.factor = 4.0;
    hf.config.rope_scaling.original_max_position_embeddings = 8;
    const std::string path = TmpPath("rope.gguf");
    SaveGgufModel(hf.config, hf.weights, path);
    GgufModel g = LoadGgufModel(path);
    EXPECT_EQ(g.config.rope_scaling.kind, kind);
    const std::vector<int32_t> toks = Tokens(hf.config.vocab_size, 20);
    EXPECT_LE(RelMaxErr(Logits(g.config, g.weights, toks), Logits(hf.config, hf.weights, toks)),
              1e-5);
    fs::remove(path);
  }
}

TEST_P(GgufFixture, StreamedSaveWritesTheSameFile) {
  // `moe quantize` of a folder: shape-only weights, each tensor loaded when the writer needs it
  // and released after its last use. The file is byte-identical to saving the loaded model, each
  // tensor is loaded once, and only a couple are in memory at any time.
  const Case cs = GetParam();
  const std::string dir = Data(std::string("arch/") + cs.dir);
  const HfModel hf = LoadHfModel(dir);
  for (const GgufScheme scheme : {GgufScheme::kF32, GgufScheme::kQ8_0}) {
    for (const bool split : {false, true}) {
      if (split && !hf.config.mla.enabled()) continue;
      SCOPED_TRACE(::testing::Message() << cs.dir << " " << Name(scheme) << " split " << split);
      GgufSaveOptions opts;
      opts.scheme = scheme;
      opts.split_mla_kv_b = split;
      HfModel whole = LoadHfModel(dir);
      const std::string a = TmpPath(std::string(cs.dir) + "_whole.gguf");
      const std::string b = TmpPath(std::string(cs.dir) + "_streamed.gguf");
      SaveGgufModel(whole.config, whole.weights, a, opts);

      const HfWeightReader reader = HfWeightReader::Open(dir);
      ModelWeights lazy;
      lazy.Allocate(reader.config(), DType::kF32, /*storage=*/false);
      std::set<std::string> loaded;
      size_t max_resident = 0;
      opts.load = [&](const std::string& name, Tensor& t) {
        EXPECT_TRUE(loaded.insert(name).second) << name << " loaded twice";
        size_t resident = 0;
        lazy.ForEachTensor([&](const std::string&, Tensor& u) {
          resident += u.defined() && !u.shape_only();
        });
        max_resident = std::max(max_resident, resident);
        reader.Fill(name, t);
      };
      SaveGgufModel(reader.config(), lazy, b, opts);
      EXPECT_EQ(io::ReadFile(a, 1 << 30), io::ReadFile(b, 1 << 30));
      EXPECT_LE(max_resident, 2u);
      size_t still = 0, total = 0;
      lazy.ForEachTensor([&](const std::string&, Tensor& u) {
        total += u.defined();
        still += u.defined() && !u.shape_only();
      });
      EXPECT_EQ(still, 0u) << "every streamed tensor is released";
      EXPECT_EQ(loaded.size(), total);
      fs::remove(a);
      fs::remove(b);
    }
  }
  // From a GGUF file (requantising): GgufWeightReader streams what LoadGgufModel loads whole.
  {
    const std::string src = TmpPath(std::string(cs.dir) + "_src.gguf");
    const std::string a = TmpPath(std::string(cs.dir) + "_whole.gguf");
    const std::string b = TmpPath(std::string(cs.dir) + "_streamed.gguf");
    HfModel m = LoadHfModel(dir);
    GgufSaveOptions f16;
    f16.scheme = GgufScheme::kF16;
    SaveGgufModel(m.config, m.weights, src, f16);
    GgufModel whole = LoadGgufModel(src);
    GgufSaveOptions opts;
    opts.scheme = GgufScheme::kQ8_0;
    SaveGgufModel(whole.config, whole.weights, a, opts);
    const GgufWeightReader reader = GgufWeightReader::Open(src);
    ModelWeights lazy;
    lazy.Allocate(reader.config(), DType::kF32, /*storage=*/false);
    int loads = 0;
    opts.load = [&](const std::string& name, Tensor& t) {
      ++loads;
      reader.Fill(name, t);
    };
    SaveGgufModel(reader.config(), lazy, b, opts);
    EXPECT_GT(loads, 0);
    EXPECT_EQ(io::ReadFile(a, 1 << 30), io::ReadFile(b, 1 << 30)) << "from GGUF";
    for (const std::string& f : {src, a, b}) fs::remove(f);
  }
  // A shape-only model without a loader is an Error, not a crash.
  ModelWeights lazy;
  lazy.Allocate(hf.config, DType::kF32, /*storage=*/false);
  const std::string c = TmpPath(std::string(cs.dir) + "_noloader.gguf");
  EXPECT_THAT(ErrorOf([&] { SaveGgufModel(hf.config, lazy, c); }), HasSubstr("no loader"));
  EXPECT_FALSE(fs::exists(c));
}

INSTANTIATE_TEST_SUITE_P(Families, GgufFixture,
                         ::testing::Values(Case{"mixtral", "llama"}, Case{"mistral", "llama"},
                                           Case{"qwen2", "qwen2"}, Case{"qwen2_moe", "qwen2moe"},
                                           Case{"qwen3_moe", "qwen3moe"}, Case{"olmoe", "olmoe"},
                                           Case{"deepseek_v2", "deepseek2"},
                                           Case{"deepseek_v3", "deepseek2"}),
                         [](const auto& info) { return std::string(info.param.dir); });

// Random Mixtral-style / Qwen2-MoE models wide enough for K-quants (rows of 256).
using Random = moe::testing::RandomModel;
using moe::testing::RandomMoeModel;

TEST(GgufModel, QuantisedFilesStayClose) {
  for (bool shared : {false, true}) {
    Random r = RandomMoeModel(shared);
    const std::vector<int32_t> toks = Tokens(r.cfg.vocab_size, 9);
    const std::vector<float> want = Logits(r.cfg, r.w, toks);
    struct Q {
      GgufScheme s;
      double bound;
    };
    for (const Q q :
         {Q{GgufScheme::kF16, 1e-5}, Q{GgufScheme::kQ8_0, 1e-3}, Q{GgufScheme::kQ5_K_M, 1e-2},
          Q{GgufScheme::kQ4_K_M, 3e-2}, Q{GgufScheme::kQ4_0, 5e-2}}) {
      const std::string path = TmpPath("q.gguf");
      GgufSaveOptions o;
      o.scheme = q.s;
      SaveGgufModel(r.cfg, r.w, path, o);
      GgufModel g = LoadGgufModel(path);
      const double nmse = Nmse(Logits(g.config, g.weights, toks), want);
      EXPECT_LE(nmse, q.bound) << Name(q.s);
      std::printf("  %s %-6s logits NMSE %.2e\n", shared ? "qwen2moe" : "llama-moe",
                  std::string(Name(q.s)).c_str(), nmse);
      if (q.s == GgufScheme::kQ4_K_M) {
        const io::GgufFile f = io::GgufFile::Open(path);
        EXPECT_EQ(f.GetTensor("output.weight").type, io::GgmlType::kQ6_K);
        // use_more_bits with 2 layers: layer 1 (the last eighth) gets Q6_K, layer 0 the base type.
        EXPECT_EQ(f.GetTensor("blk.1.ffn_down_exps.weight").type, io::GgmlType::kQ6_K);
        EXPECT_EQ(f.GetTensor("blk.0.ffn_down_exps.weight").type, io::GgmlType::kQ4_K);
        EXPECT_EQ(f.GetTensor("blk.0.ffn_gate_exps.weight").type, io::GgmlType::kQ4_K);
        EXPECT_EQ(f.GetTensor("blk.0.ffn_gate_inp.weight").type, io::GgmlType::kF32);
        EXPECT_EQ(f.GetTensor("output_norm.weight").type, io::GgmlType::kF32);
        EXPECT_EQ(f.GetU32("general.file_type"), 15u);
      }
      fs::remove(path);
    }
  }
}

// Rewrites `path` to `split` with the older per-expert tensors instead of the merged `_exps` ones.
void WriteWithPerExpertTensors(const std::string& path, const std::string& split) {
  Rewrite rw(path);
  std::vector<Rewrite::T> out;
  for (Rewrite::T& t : rw.tensors) {
    if (!t.name.ends_with("_exps.weight")) {
      out.push_back(std::move(t));
      continue;
    }
    const std::string base = t.name.substr(0, t.name.size() - 12);  // "blk.0.ffn_gate"
    const size_t per = t.bytes.size() / static_cast<size_t>(t.dims[2]);
    for (int64_t e = 0; e < t.dims[2]; ++e)
      out.push_back(
          {base + "." + std::to_string(e) + ".weight",
           t.type,
           {t.dims[0], t.dims[1]},
           std::vector<uint8_t>(t.bytes.begin() + static_cast<ptrdiff_t>(per * e),
                                t.bytes.begin() + static_cast<ptrdiff_t>(per * (e + 1)))});
  }
  rw.tensors = std::move(out);
  rw.Write(split);
}

TEST(GgufModel, PerExpertTensorsLoad) {
  Random r = RandomMoeModel(false);
  const std::string path = TmpPath("merged.gguf"), split = TmpPath("split.gguf");
  SaveGgufModel(r.cfg, r.w, path);
  WriteWithPerExpertTensors(path, split);
  GgufModel g = LoadGgufModel(split);
  const std::vector<int32_t> toks = Tokens(r.cfg.vocab_size, 5);
  EXPECT_LE(RelMaxErr(Logits(g.config, g.weights, toks), Logits(r.cfg, r.w, toks)), 1e-6);
  fs::remove(path);
  fs::remove(split);
}

TEST(GgufModel, BadFilesAreClearErrors) {
  Random r = RandomMoeModel(false);
  const std::string path = TmpPath("bad_src.gguf"), bad = TmpPath("bad.gguf");
  SaveGgufModel(r.cfg, r.w, path);
  auto with = [&](const std::function<void(Rewrite&)>& edit) {
    Rewrite rw(path);
    edit(rw);
    rw.Write(bad);
    return ErrorOf([&] { LoadGgufModel(bad); });
  };
  EXPECT_THAT(with([](Rewrite& rw) {
                for (auto& [k, v] : rw.kv)
                  if (k == "general.architecture") v = io::GgufValue::String("gptx");
              }),
              AllOf(HasSubstr("'gptx' is not supported"), HasSubstr("qwen3moe")));
  EXPECT_THAT(with([](Rewrite& rw) {
                for (auto& [k, v] : rw.kv)
                  if (k == "llama.expert_count") v = io::GgufValue::U32(4000);
              }),
              AllOf(HasSubstr("metadata describes"), HasSubstr("expert_count 4000")));
  EXPECT_THAT(with([](Rewrite& rw) {
                std::erase_if(rw.tensors,
                              [](const Rewrite::T& t) { return t.name == "blk.1.attn_v.weight"; });
              }),
              HasSubstr("tensor 'blk.1.attn_v.weight' is missing"));
  EXPECT_THAT(with([](Rewrite& rw) {
                for (Rewrite::T& t : rw.tensors)
                  if (t.name == "blk.0.attn_norm.weight") {
                    t.dims = {128};
                    t.bytes.resize(128 * 4);
                  }
              }),
              AllOf(HasSubstr("'blk.0.attn_norm.weight' has shape [128]"), HasSubstr("[256]")));
  EXPECT_THAT(with([](Rewrite& rw) {
                for (Rewrite::T& t : rw.tensors)
                  if (t.name == "blk.0.attn_q.weight") {
                    t.type = io::GgmlType::kQ3_K;
                    t.bytes.assign(*io::GgmlTensorBytes(io::GgmlType::kQ3_K, t.dims), 0);
                  }
              }),
              AllOf(HasSubstr("blk.0.attn_q.weight"), HasSubstr("Q3_K"), HasSubstr("Q4_K")));
  EXPECT_THAT(with([](Rewrite& rw) {
                rw.tensors.push_back(
                    {"blk.0.extra.weight", io::GgmlType::kF32, {4}, std::vector<uint8_t>(16)});
              }),
              HasSubstr("does not use (first: 'blk.0.extra.weight')"));
  // Unknown tokenizer pre-tokenizer.
  EXPECT_THAT(with([](Rewrite& rw) {
                rw.kv.emplace_back("tokenizer.ggml.model", io::GgufValue::String("gpt2"));
                rw.kv.emplace_back("tokenizer.ggml.pre", io::GgufValue::String("chatglm-bpe"));
                rw.kv.emplace_back("tokenizer.ggml.tokens", io::GgufValue::Strings({"a", "b"}));
                rw.kv.emplace_back("tokenizer.ggml.merges", io::GgufValue::Strings({"a b"}));
              }),
              AllOf(HasSubstr("'chatglm-bpe' is not supported"), HasSubstr("llama-bpe")));
  EXPECT_THAT(ErrorOf([] { ParseGgufScheme("Q3_K_S"); }), HasSubstr("Q4_K_M"));
  // A rope_freqs tensor of the wrong length, or next to rope.scaling.type.
  EXPECT_THAT(with([](Rewrite& rw) {
                rw.tensors.push_back(
                    {"rope_freqs.weight", io::GgmlType::kF32, {5}, std::vector<uint8_t>(20)});
              }),
              HasSubstr("'rope_freqs.weight' has 5 values"));
  fs::remove(path);
  fs::remove(bad);
}

TEST(GgufModel, Llama3RopeScalingTravelsAsRopeFreqs) {
  // llama.cpp stores Llama 3 scaling as the per-frequency divisors in rope_freqs.weight.
  HfModel llama = LoadHfModel(Data("arch/llama"));
  ASSERT_EQ(llama.config.rope_scaling.kind, kernels::RopeScalingKind::kLlama3);
  const std::string path = TmpPath("llama3.gguf");
  SaveGgufModel(llama.config, llama.weights, path);
  const io::GgufFile f = io::GgufFile::Open(path);
  const io::GgufTensorInfo& rf = f.GetTensor("rope_freqs.weight");
  EXPECT_EQ(rf.numel, llama.config.rope_dim() / 2);
  EXPECT_FALSE(f.Has("llama.rope.scaling.type"));
  const std::vector<int32_t> toks = Tokens(llama.config.vocab_size, 40);
  const std::vector<float> want = Logits(llama.config, llama.weights, toks);
  for (const bool mapped : {false, true}) {
    GgufModel g = LoadGgufModel(path, {.mapped = mapped});
    EXPECT_EQ(g.config.rope_scaling.kind, kernels::RopeScalingKind::kFreqFactors);
    EXPECT_LE(RelMaxErr(Logits(g.config, g.weights, toks), want), 1e-5) << "mapped " << mapped;
    if (!mapped) {
      // And again: freq_factors write the same tensor.
      const std::string again = TmpPath("llama3_again.gguf");
      SaveGgufModel(g.config, g.weights, again);
      const io::GgufFile f2 = io::GgufFile::Open(again);
      const io::GgufTensorInfo& rf2 = f2.GetTensor("rope_freqs.weight");
      EXPECT_EQ(std::memcmp(rf.data, rf2.data, rf.nbytes), 0);
      fs::remove(again);
    }
  }
  // Without the tensor the model would silently run unscaled RoPE: the factors matter.
  ModelConfig plain = llama.config;
  plain.rope_scaling = {};
  EXPECT_GT(RelMaxErr(Logits(plain, llama.weights, toks), want), 1e-6);
  fs::remove(path);
}

TEST(GgufModel, TrainedPresetsRoundTripAndUnexpressibleOptionsAreErrors) {
  const std::string path = TmpPath("preset.gguf");
  for (const char* preset : {"tiny", "tiny-dense"}) {
    ModelConfig cfg = ModelPreset(preset);
    ModelWeights w;
    Rng rng(3);
    w.InitRandom(cfg, DType::kF32, rng);
    SaveGgufModel(cfg, w, path);
    const generate::ModelDir m = generate::OpenModelDir(path);
    EXPECT_TRUE(m.byte_level) << preset;
    const std::vector<int32_t> toks = Tokens(cfg.vocab_size, 7);
    EXPECT_LE(RelMaxErr(Logits(m.config, m.weights, toks), Logits(cfg, w, toks)), 1e-5) << preset;
  }
  ModelConfig cfg = ModelPreset("tiny");
  cfg.moe.score = mixture::ScoreFn::kSigmoid;
  ModelWeights w;
  Rng rng(3);
  w.InitRandom(cfg, DType::kF32, rng);
  EXPECT_THAT(ErrorOf([&] { SaveGgufModel(cfg, w, path); }),
              AllOf(HasSubstr("cannot express"), HasSubstr("sigmoid")));
  fs::remove(path);
}

TEST(GgufModel, OpenModelDirReadsGgufFiles) {
  Random r = RandomMoeModel(false, 410);
  const std::string tj = Data("tokenizers/qwen2/tokenizer.json");
  const tokenizer::TokenizerSpec spec =
      tokenizer::ParseHfTokenizerJson(io::ReadFile(tj, 64 << 20), tj);
  const std::string path = TmpPath("dir.gguf");
  GgufSaveOptions o;
  o.tokenizer = &spec;
  o.chat_template = "{{ messages }}";
  SaveGgufModel(r.cfg, r.w, path, o);
  const generate::ModelDir m = generate::OpenModelDir(path);
  EXPECT_FALSE(m.byte_level);
  EXPECT_EQ(m.chat_template, "{{ messages }}");
  const tokenizer::Tokenizer ref = tokenizer::Tokenizer::FromFile(tj);
  EXPECT_EQ(m.EncodePrompt("Hello world, 12345!"), ref.Encode("Hello world, 12345!", true));
  const std::vector<int32_t> toks = Tokens(r.cfg.vocab_size, 5);
  EXPECT_LE(RelMaxErr(Logits(m.config, m.weights, toks), Logits(r.cfg, r.w, toks)), 1e-6);
  // Without a tokenizer: the byte tokenizer of moe-trained models.
  SaveGgufModel(r.cfg, r.w, path);
  EXPECT_TRUE(generate::OpenModelDir(path).byte_level);
  EXPECT_THAT(ErrorOf([&] { generate::OpenModelDir(tj); }), HasSubstr("not a .gguf model"));
  fs::remove(path);
}

// ---- mapped loading (what `moe run` / OpenModelDir use): weights stay in the file as stored.

std::vector<float> LastRow(const std::vector<float>& all, int64_t vocab) {
  return std::vector<float>(all.end() - vocab, all.end());
}

TEST_P(GgufFixture, MappedF32MatchesHuggingFaceWithoutCopies) {
  const Case cs = GetParam();
  HfModel hf = LoadHfModel(Data(std::string("arch/") + cs.dir));
  const std::string path = TmpPath(std::string(cs.dir) + "_mapped.gguf");
  SaveGgufModel(hf.config, hf.weights, path);
  GgufModel g = LoadGgufModel(path, {.mapped = true});
  const std::vector<int32_t> toks = Tokens(hf.config.vocab_size, 11);
  const std::vector<float> want = Logits(hf.config, hf.weights, toks);
  const double err = RelMaxErr(Logits(g.config, g.weights, toks), want);
  EXPECT_LE(err, 1e-5) << cs.dir;
  EXPECT_LE(RelMaxErr(Logits(g.config, g.weights, toks, true),
                      LastRow(want, hf.config.vocab_size)),
            1e-5)
      << cs.dir << ": token-by-token decode";
  // Every tensor is the file's own bytes (F32 throughout), experts in the inference layout.
  size_t owned = 0, total = 0;
  g.weights.ForEachTensor([&](const std::string&, Tensor& t) {
    ++total;
    if (!t.borrowed()) ++owned;
  });
  EXPECT_EQ(owned, 0u) << cs.dir << ": " << owned << " of " << total << " tensors copied";
  for (const LayerWeights& L : g.weights.layers) {
    if (L.is_moe) {
      EXPECT_TRUE(L.moe.inference_layout());
    } else {
      EXPECT_TRUE(L.ffn.defined());
    }
  }
  // Inference only: training on mapped weights is a clear error, not a crash.
  if (g.config.TrainingUnsupported().empty()) {
    const Transformer tf(g.config);
    Batch b;
    b.batch = 1;
    b.seq = 4;
    b.tokens.assign(toks.begin(), toks.begin() + 4);
    b.targets.assign(toks.begin() + 1, toks.begin() + 5);
    ForwardState<float> st;
    Context ctx({.threads = 1});
    tf.Forward<float>(g.weights, b, st, ctx, {});
    ModelWeights grad;
    grad.Allocate(g.config, DType::kF32);
    EXPECT_THAT(ErrorOf([&] { tf.Backward<float>(g.weights, b, st, grad, ctx, {}, 1.0); }),
                HasSubstr("loaded for inference"))
        << cs.dir;
  }
  fs::remove(path);
}

TEST(GgufModel, MappedQuantisedFilesMatchTheirDequantisedWeights) {
  // The mapped model runs the integer kernels on the stored blocks; the f32 load dequantises the
  // same blocks, so only the 8-bit activation rounding separates the two.
  for (bool shared : {false, true}) {
    Random r = RandomMoeModel(shared);
    const std::vector<int32_t> toks = Tokens(r.cfg.vocab_size, 9);
    struct Q {
      GgufScheme s;
      DType expert;  // the type of layer 0's gate experts
      double bound;
    };
    for (const Q q : {Q{GgufScheme::kF16, DType::kF32, 1e-10}, Q{GgufScheme::kQ8_0, DType::kQ8_0, 1e-4},
                      Q{GgufScheme::kQ4_0, DType::kQ4_0, 1e-3}, Q{GgufScheme::kQ4_K_M, DType::kQ4_K, 2e-3},
                      Q{GgufScheme::kQ5_K_M, DType::kQ5_K, 2e-3}}) {
      const std::string name = std::string(shared ? "qwen2moe " : "llama-moe ") + std::string(Name(q.s));
      const std::string path = TmpPath("mq.gguf");
      GgufSaveOptions o;
      o.scheme = q.s;
      SaveGgufModel(r.cfg, r.w, path, o);
      GgufModel f32 = LoadGgufModel(path);
      GgufModel mapped = LoadGgufModel(path, {.mapped = true});
      const LayerWeights& L0 = mapped.weights.layers[0];
      EXPECT_EQ(L0.moe.experts[0].gate.dtype(), q.expert) << name;
      EXPECT_EQ(L0.moe.router.dtype(), DType::kF32) << name;
      EXPECT_EQ(L0.attn_norm.dtype(), DType::kF32) << name;
      // F16 matrices are converted (owned); everything else is borrowed from the mapping.
      EXPECT_EQ(L0.moe.experts[0].gate.borrowed(), q.s != GgufScheme::kF16) << name;
      const std::vector<float> want = Logits(f32.config, f32.weights, toks);
      const std::vector<float> got = Logits(mapped.config, mapped.weights, toks);
      const double nmse = Nmse(got, want);
      EXPECT_LE(nmse, q.bound) << name;
      std::printf("  %-16s mapped vs dequantised logits NMSE %.2e\n", name.c_str(), nmse);
      // Decode one token at a time = prefill (each row's activations are quantised alone).
      EXPECT_LE(RelMaxErr(Logits(mapped.config, mapped.weights, toks, true),
                          LastRow(got, r.cfg.vocab_size)),
                1e-5)
          << name;
      fs::remove(path);
    }
  }
}

TEST(GgufModel, Q4_0RegroupedForDecodeMatchesTheMappedFile) {
  // RepackForDecode turns the mapped Q4_0 matrices into owned Q4_0x16 ones: the same integer sums
  // and scales, summed in another f32 order, so the logits stay within rounding of the mapped
  // model's; the embedding and matrices whose rows are not whole tiles (lm_head: 300 rows) stay.
  if (!kernels::HasTiledKernels()) GTEST_SKIP() << "no AVX-512 VNNI: nothing is regrouped here";
  for (bool shared : {false, true}) {
    Random r = RandomMoeModel(shared);
    const std::vector<int32_t> toks = Tokens(r.cfg.vocab_size, 9);
    const std::string name = shared ? "qwen2moe" : "llama-moe";
    const std::string path = TmpPath("q4x16.gguf");
    GgufSaveOptions o;
    o.scheme = GgufScheme::kQ4_0;
    SaveGgufModel(r.cfg, r.w, path, o);
    for (const GgufScheme scheme : {GgufScheme::kQ4_K_M, GgufScheme::kQ5_K_M, GgufScheme::kQ8_0}) {
      // Q4_K_M / Q5_K_M: their Q4_K or Q5_K and Q6_K matrices become tiled (the mapped kernels'
      // bits); Q8_0: Q8_0x16 (Q4_0x16's f32 order, so within rounding of the mapped logits).
      const bool q5 = scheme == GgufScheme::kQ5_K_M, q8 = scheme == GgufScheme::kQ8_0;
      const DType expert_type = q8 ? DType::kQ8_0x16 : q5 ? DType::kQ5_Kx16 : DType::kQ4_Kx16;
      const std::string what = name + " " + std::string(DTypeName(expert_type));
      const std::string km = TmpPath("kx16.gguf");
      GgufSaveOptions ok;
      ok.scheme = scheme;
      SaveGgufModel(r.cfg, r.w, km, ok);
      GgufModel a = LoadGgufModel(km, {.mapped = true});
      GgufModel b = LoadGgufModel(km, {.mapped = true});
      Context ctx({.threads = 2});
      const int64_t repackable = RepackableBytes(b.weights);
      EXPECT_EQ(RepackForDecode(b.weights, ctx), repackable) << what;
      int tiled = 0;
      b.weights.ForEachTensor([&](const std::string& tn, Tensor& t) {
        tiled += t.defined() && kernels::IsTiled(t.dtype());
        // The embedding (looked up by row) and lm_head (300 rows: not whole tiles) stay.
        if (t.defined() && tn != "embed" && t.shape()[0] % 16 == 0) {
          for (const DType base : {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kQ8_0})
            EXPECT_NE(t.dtype(), base) << what << " " << tn << ": a matrix of whole tiles stayed";
        }
      });
      int main_type = 0;  // experts in Q4_Kx16 (Q5_Kx16, Q8_0x16)
      for (const LayerWeights& L : b.weights.layers)
        for (const auto& e : L.moe.experts)
          for (const Tensor* t : {&e.gate, &e.up, &e.down}) {
            tiled += kernels::IsTiled(t->dtype());
            main_type += t->dtype() == expert_type;
          }
      EXPECT_GT(main_type, 0) << what;
      EXPECT_GT(tiled, 0) << what;
      EXPECT_GT(repackable, 0) << what;
      if (q8) {
        EXPECT_LE(RelMaxErr(Logits(b.config, b.weights, toks), Logits(a.config, a.weights, toks)),
                  1e-5)
            << what;
      } else {
        EXPECT_EQ(Logits(b.config, b.weights, toks), Logits(a.config, a.weights, toks)) << what;
      }
      fs::remove(km);
    }
    GgufModel mapped = LoadGgufModel(path, {.mapped = true});
    GgufModel packed = LoadGgufModel(path, {.mapped = true});
    const int64_t bytes = RepackableBytes(packed.weights);
    EXPECT_GT(bytes, 0) << name;
    Context ctx({.threads = 2});
    EXPECT_EQ(RepackForDecode(packed.weights, ctx), bytes) << name;
    EXPECT_EQ(RepackableBytes(packed.weights), 0) << name;
    const LayerWeights& L0 = packed.weights.layers[0];
    for (const Tensor* t : {&L0.wq, &L0.wk, &L0.wv, &L0.wo, &L0.moe.experts[0].gate,
                            &L0.moe.experts[3].down}) {
      EXPECT_EQ(t->dtype(), DType::kQ4_0x16) << name;
    }
    // The copies lie in one block of about their bytes (each start 64-byte aligned).
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (const LayerWeights& L : packed.weights.layers)
      for (const auto& e : L.moe.experts)
        for (const Tensor* t : {&e.gate, &e.up, &e.down, &L.wq, &L.wo}) {
          ASSERT_EQ(t->dtype(), DType::kQ4_0x16) << name;
          const auto p = reinterpret_cast<uintptr_t>(std::as_const(*t).raw());
          EXPECT_EQ(p % 64, 0u) << name;
          lo = std::min(lo, p);
          hi = std::max(hi, p + t->nbytes());
        }
    EXPECT_LE(hi - lo, static_cast<uintptr_t>(bytes) + 64 * 1000) << name;
    if (shared) {
      EXPECT_EQ(L0.moe.shared.up.dtype(), DType::kQ4_0x16);
    }
    EXPECT_NE(packed.weights.embed.dtype(), DType::kQ4_0x16) << name;
    EXPECT_EQ(packed.weights.lm_head.dtype(), mapped.weights.lm_head.dtype()) << name;
    const std::vector<float> want = Logits(mapped.config, mapped.weights, toks);
    const std::vector<float> got = Logits(packed.config, packed.weights, toks);
    EXPECT_LE(RelMaxErr(got, want), 1e-5) << name;
    EXPECT_LE(RelMaxErr(Logits(packed.config, packed.weights, toks, true),
                        LastRow(got, r.cfg.vocab_size)),
              1e-5)
        << name;
    // OpenModelDir regroups by default; MOE_REPACK=0 keeps the mapped layout.
    EXPECT_EQ(generate::OpenModelDir(path).repacked_bytes, bytes) << name;
    ::setenv("MOE_REPACK", "0", 1);
    EXPECT_EQ(generate::OpenModelDir(path).repacked_bytes, 0) << name;
    ::setenv("MOE_REPACK", "yes", 1);
    EXPECT_THAT(ErrorOf([&] { generate::OpenModelDir(path); }), HasSubstr("MOE_REPACK='yes'"));
    ::unsetenv("MOE_REPACK");
    fs::remove(path);
  }
  // Only when the copies take at most half of the available memory.
  EXPECT_TRUE(generate::ShouldRepack(500, 1000.0));
  EXPECT_FALSE(generate::ShouldRepack(501, 1000.0));
}

TEST(GgufModel, MappedPerExpertTensorsAndBadFiles) {
  Random r = RandomMoeModel(false);
  const std::string path = TmpPath("mapped_src.gguf"), split = TmpPath("mapped_split.gguf");
  GgufSaveOptions o;
  o.scheme = GgufScheme::kQ8_0;
  SaveGgufModel(r.cfg, r.w, path, o);
  WriteWithPerExpertTensors(path, split);
  GgufModel merged = LoadGgufModel(path, {.mapped = true});
  GgufModel per = LoadGgufModel(split, {.mapped = true});
  const std::vector<int32_t> toks = Tokens(r.cfg.vocab_size, 5);
  EXPECT_EQ(Logits(per.config, per.weights, toks), Logits(merged.config, merged.weights, toks));


  // general.alignment 2 can leave F32 data at addresses floats cannot be read from: those tensors
  // are copied (converted), the rest still borrowed, and the logits do not change. A padding
  // tensor in front (a per-layer rope_freqs, which loaders skip) shifts the data; its name length
  // shifts the header, so one of a few names misaligns the F32 tensors.
  bool misaligned = false;
  for (const std::string pad : {"blk.0.rope_freqs.weight", "blk.00.rope_freqs.weight"}) {
    Rewrite rw2(path);
    rw2.kv.emplace_back("general.alignment", io::GgufValue::U32(2));
    const uint16_t one = ToF16(1.0f);
    rw2.tensors.insert(rw2.tensors.begin(),
                       {pad, io::GgmlType::kF16, {1}, std::vector<uint8_t>{
                           static_cast<uint8_t>(one & 0xff), static_cast<uint8_t>(one >> 8)}});
    rw2.Write(split);
    const io::GgufFile f = io::GgufFile::Open(split);
    const io::GgufTensorInfo& norm = f.GetTensor("blk.0.attn_norm.weight");
    if (reinterpret_cast<uintptr_t>(norm.data) % 4 == 0) continue;
    misaligned = true;
    GgufModel odd = LoadGgufModel(split, {.mapped = true});
    EXPECT_FALSE(odd.weights.layers[0].attn_norm.borrowed());
    EXPECT_EQ(Logits(odd.config, odd.weights, toks), Logits(merged.config, merged.weights, toks));
  }
  EXPECT_TRUE(misaligned) << "no padding misaligned the F32 tensors";
  auto with = [&](const std::function<void(Rewrite&)>& edit) {
    Rewrite bad(path);
    edit(bad);
    bad.Write(split);
    return ErrorOf([&] { LoadGgufModel(split, {.mapped = true}); });
  };
  EXPECT_THAT(with([](Rewrite& b) {
                std::erase_if(b.tensors,
                              [](const Rewrite::T& t) { return t.name == "blk.1.ffn_up_exps.weight"; });
              }),
              HasSubstr("tensor 'blk.1.ffn_up_exps.weight' is missing"));
  EXPECT_THAT(with([](Rewrite& b) {
                for (Rewrite::T& t : b.tensors)
                  if (t.name == "blk.0.ffn_down_exps.weight") t.dims = {t.dims[0], t.dims[2], t.dims[1]};
              }),
              HasSubstr("'blk.0.ffn_down_exps.weight' has shape"));
  EXPECT_THAT(with([](Rewrite& b) {
                b.tensors.push_back(
                    {"blk.0.extra.weight", io::GgmlType::kF32, {4}, std::vector<uint8_t>(16)});
              }),
              HasSubstr("does not use (first: 'blk.0.extra.weight')"));
  fs::remove(path);
  fs::remove(split);
}

// ---- deepseek2 kv_b split into attn_k_b + attn_v_b (the form of newer llama.cpp converters)

bool HasTensor(const std::string& path, const std::string& name) {
  return io::GgufFile::Open(path).HasTensor(name);
}

// The same weights in the older form (attn_kv_b) and the split form load to the same config and
// logits, f32 and mapped; the split file carries llama.cpp's metadata for it.
TEST(GgufModel, DeepSeekSplitKvBLoadsLikeKvB) {
  for (const char* dir : {"deepseek_v2", "deepseek_v3"}) {
    HfModel hf = LoadHfModel(Data(std::string("arch/") + dir));
    const ModelConfig& c = hf.config;
    const std::string old_path = TmpPath("kvb.gguf"), split_path = TmpPath("kb_vb.gguf");
    SaveGgufModel(c, hf.weights, old_path);
    GgufSaveOptions o;
    o.split_mla_kv_b = true;
    SaveGgufModel(c, hf.weights, split_path, o);
    {
      const io::GgufFile f = io::GgufFile::Open(split_path);
      EXPECT_FALSE(f.HasTensor("blk.0.attn_kv_b.weight"));
      const io::GgufTensorInfo& k = f.GetTensor("blk.0.attn_k_b.weight");
      const io::GgufTensorInfo& v = f.GetTensor("blk.0.attn_v_b.weight");
      EXPECT_EQ(k.dims,
                (std::vector<int64_t>{c.mla.qk_nope_head_dim, c.mla.kv_lora_rank, c.n_heads}));
      EXPECT_EQ(v.dims, (std::vector<int64_t>{c.mla.kv_lora_rank, c.mla.v_head_dim, c.n_heads}));
      EXPECT_EQ(f.GetU32("deepseek2.attention.head_count_kv"), 1u);
      EXPECT_EQ(f.GetU32("deepseek2.attention.key_length"),
                static_cast<uint32_t>(c.mla.kv_lora_rank + c.mla.qk_rope_head_dim));
      EXPECT_EQ(f.GetU32("deepseek2.attention.value_length"),
                static_cast<uint32_t>(c.mla.kv_lora_rank));
      EXPECT_EQ(f.GetU32("deepseek2.attention.key_length_mla"),
                static_cast<uint32_t>(c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim));
      EXPECT_EQ(f.GetU32("deepseek2.attention.value_length_mla"),
                static_cast<uint32_t>(c.mla.v_head_dim));
    }
    EXPECT_FALSE(HasTensor(old_path, "blk.0.attn_k_b.weight"));
    const std::vector<int32_t> toks = Tokens(c.vocab_size, 11);
    const std::vector<float> want = Logits(c, hf.weights, toks);
    for (bool mapped : {false, true}) {
      const std::string what = std::string(dir) + (mapped ? " mapped" : " f32");
      GgufModel a = LoadGgufModel(old_path, {.mapped = mapped});
      GgufModel b = LoadGgufModel(split_path, {.mapped = mapped});
      EXPECT_EQ(ToHfJson(b.config), ToHfJson(a.config)) << what;
      EXPECT_EQ(b.config.n_kv_heads, c.n_heads) << what;
      const std::vector<float> got = Logits(b.config, b.weights, toks);
      EXPECT_LE(RelMaxErr(got, Logits(a.config, a.weights, toks)), 1e-5) << what;
      EXPECT_LE(RelMaxErr(got, want), 1e-5) << what;
    }
    fs::remove(old_path);
    fs::remove(split_path);
  }
}

// Q8_0 pairs (the widths are whole blocks): each half is dequantised and assembled; the f32 and
// mapped loads hold the same wkv_b and both forms stay as close to the f32 model as quantisation
// allows (the split form quantises k_b along Dn, the older one kv_b along R).
TEST(GgufModel, DeepSeekSplitKvBQuantised) {
  ModelConfig c = LoadHfModel(Data("arch/deepseek_v3")).config;
  c.mla.qk_nope_head_dim = 32;
  c.mla.v_head_dim = 32;
  c.mla.kv_lora_rank = 64;
  // The softmax scale goes with the key width: 1/sqrt(Dn + Dr) times YaRN's mscale².
  c.attn_scale *= std::sqrt(static_cast<double>(c.head_dim) /
                            static_cast<double>(c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim));
  c.head_dim = c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim;
  c.Finalize();
  ModelWeights w;
  Rng rng(11);
  w.InitRandom(c, DType::kF32, rng);
  const std::vector<int32_t> toks = Tokens(c.vocab_size, 9);
  const std::vector<float> want = Logits(c, w, toks);
  const std::string old_path = TmpPath("kvb_q8.gguf"), split_path = TmpPath("kb_vb_q8.gguf");
  GgufSaveOptions o;
  o.scheme = GgufScheme::kQ8_0;
  SaveGgufModel(c, w, old_path, o);
  o.split_mla_kv_b = true;
  SaveGgufModel(c, w, split_path, o);
  EXPECT_EQ(io::GgufFile::Open(split_path).GetTensor("blk.1.attn_k_b.weight").type,
            io::GgmlType::kQ8_0);
  EXPECT_EQ(io::GgufFile::Open(split_path).GetTensor("blk.1.attn_v_b.weight").type,
            io::GgmlType::kQ8_0);
  GgufModel old_f32 = LoadGgufModel(old_path);
  GgufModel f32 = LoadGgufModel(split_path);
  GgufModel mapped = LoadGgufModel(split_path, {.mapped = true});
  for (size_t l = 0; l < f32.weights.layers.size(); ++l) {
    const Tensor& a = f32.weights.layers[l].wkv_b;
    const Tensor& b = mapped.weights.layers[l].wkv_b;
    ASSERT_EQ(b.dtype(), DType::kF32);
    ASSERT_EQ(a.numel(), b.numel());
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), static_cast<size_t>(a.numel()) * 4), 0) << l;
  }
  const std::vector<float> got = Logits(f32.config, f32.weights, toks);
  EXPECT_LE(Nmse(got, want), 1e-3);
  EXPECT_LE(Nmse(Logits(old_f32.config, old_f32.weights, toks), want), 1e-3);
  EXPECT_LE(Nmse(got, Logits(old_f32.config, old_f32.weights, toks)), 1e-3);
  EXPECT_LE(Nmse(Logits(mapped.config, mapped.weights, toks), got), 1e-4);
  std::printf("  deepseek2 Q8_0 split kv_b: logits NMSE %.2e vs f32\n", Nmse(got, want));
  fs::remove(old_path);
  fs::remove(split_path);
}

TEST(GgufModel, DeepSeekSplitKvBBadFilesAreClearErrors) {
  HfModel hf = LoadHfModel(Data("arch/deepseek_v3"));
  const std::string path = TmpPath("kb_vb_src.gguf"), old_path = TmpPath("kb_vb_old.gguf"),
                    bad = TmpPath("kb_vb_bad.gguf");
  GgufSaveOptions o;
  o.split_mla_kv_b = true;
  SaveGgufModel(hf.config, hf.weights, path, o);
  SaveGgufModel(hf.config, hf.weights, old_path);
  // Both load paths give the same message.
  auto with = [&](const std::function<void(Rewrite&)>& edit) {
    Rewrite rw(path);
    edit(rw);
    rw.Write(bad);
    const std::string e = ErrorOf([&] { LoadGgufModel(bad); });
    EXPECT_EQ(ErrorOf([&] { LoadGgufModel(bad, {.mapped = true}); }), e);
    return e;
  };
  auto set = [](Rewrite& rw, const std::string& key, uint32_t v) {
    for (auto& [k, x] : rw.kv)
      if (k == key) x = io::GgufValue::U32(v);
  };
  EXPECT_THAT(with([](Rewrite& rw) {
                std::erase_if(rw.tensors, [](const Rewrite::T& t) {
                  return t.name == "blk.1.attn_v_b.weight";
                });
              }),
              AllOf(HasSubstr("tensor 'blk.1.attn_v_b.weight' is missing"),
                    HasSubstr("'blk.1.attn_k_b.weight' and 'blk.1.attn_v_b.weight' together")));
  // [Dn, R, H] = [8, 16, 4] stored as [16, 8, 4].
  EXPECT_THAT(with([](Rewrite& rw) {
                for (Rewrite::T& t : rw.tensors)
                  if (t.name == "blk.0.attn_k_b.weight") t.dims = {16, 8, 4};
              }),
              AllOf(HasSubstr("tensor 'blk.0.attn_k_b.weight' has shape [16,8,4]"),
                    HasSubstr("expected [8,16,4]")));
  // key_length_mla 16 with 4 rope dims says Dn = 12, which the pair does not hold.
  EXPECT_THAT(with([&](Rewrite& rw) { set(rw, "deepseek2.attention.key_length_mla", 16); }),
              AllOf(HasSubstr("'blk.0.attn_k_b.weight' has shape [8,16,4], expected [12,16,4]"),
                    HasSubstr("'deepseek2.attention.key_length_mla' 16")));
  // key_length must be the latent width R + Dr = 20 next to key_length_mla.
  EXPECT_THAT(with([&](Rewrite& rw) { set(rw, "deepseek2.attention.key_length", 12); }),
              AllOf(HasSubstr("'deepseek2.attention.key_length' = 12"),
                    HasSubstr("'deepseek2.attention.key_length_mla' set"), HasSubstr("= 20")));
  EXPECT_THAT(with([](Rewrite& rw) {
                std::erase_if(rw.kv, [](const auto& kv) {
                  return kv.first == "deepseek2.attention.value_length_mla";
                });
              }),
              HasSubstr("'deepseek2.attention.key_length_mla' is set but "
                        "'deepseek2.attention.value_length_mla' is missing"));
  EXPECT_THAT(with([&](Rewrite& rw) { set(rw, "deepseek2.attention.head_count_kv", 2); }),
              HasSubstr("'deepseek2.attention.head_count_kv' = 2"));
  // attn_kv_b next to the pair (ik_llama.cpp's converter writes all three): attn_kv_b is read.
  {
    Rewrite rw(path);
    const Rewrite old(old_path);
    for (const Rewrite::T& t : old.tensors)
      if (t.name.ends_with("attn_kv_b.weight")) rw.tensors.push_back(t);
    rw.Write(bad);
    const std::vector<int32_t> toks = Tokens(hf.config.vocab_size, 7);
    const std::vector<float> want = Logits(hf.config, hf.weights, toks);
    for (bool mapped : {false, true}) {
      GgufModel g = LoadGgufModel(bad, {.mapped = mapped});
      EXPECT_LE(RelMaxErr(Logits(g.config, g.weights, toks), want), 1e-5) << mapped;
    }
  }
  // The writer's option is for MLA models only.
  Random r = RandomMoeModel(false);
  EXPECT_THAT(ErrorOf([&] { SaveGgufModel(r.cfg, r.w, bad, o); }),
              HasSubstr("split_mla_kv_b needs an MLA model"));
  fs::remove(path);
  fs::remove(old_path);
  fs::remove(bad);
}

// Tokenizer.json -> GGUF metadata -> TokenizerSpec encodes every fixture case as the original.
class GgufTokenizer : public ::testing::TestWithParam<const char*> {};

TEST_P(GgufTokenizer, EncodesLikeTokenizerJson) {
  const std::string dir = Data(std::string("tokenizers/") + GetParam());
  const std::string json_path = dir + "/tokenizer.json";
  const tokenizer::Tokenizer ref = tokenizer::Tokenizer::FromFile(json_path);
  const tokenizer::TokenizerSpec spec =
      tokenizer::ParseHfTokenizerJson(io::ReadFile(json_path, 64 << 20), json_path);
  io::GgufWriter w;
  w.AddMetadata("general.architecture", io::GgufValue::String("llama"));
  std::string why;
  ASSERT_TRUE(tokenizer::AddTokenizerToGguf(spec, -1, -1, w, &why)) << why;
  const std::vector<uint8_t> bytes = w.Serialize();
  const io::GgufFile f = io::GgufFile::FromBytes("tok.gguf", bytes.data(), bytes.size());
  const tokenizer::Tokenizer got =
      tokenizer::Tokenizer::FromSpec(*tokenizer::TokenizerSpecFromGguf(f));
  const nlohmann::json cases = nlohmann::json::parse(io::ReadFile(dir + "/cases.json", 16 << 20));
  // GGUF has no single_word / lstrip / rstrip flags for added tokens: texts that contain such a
  // token are skipped (docs/FORMATS.md).
  std::vector<std::string> flagged;
  for (const tokenizer::AddedToken& a : spec.added_tokens)
    if (a.single_word || a.lstrip || a.rstrip) flagged.push_back(a.content);
  int n = 0;
  for (const auto& c : cases["cases"]) {
    const std::string text = c["text"].get<std::string>();
    if (std::any_of(flagged.begin(), flagged.end(),
                    [&](const std::string& t) { return text.find(t) != std::string::npos; }))
      continue;
    EXPECT_EQ(got.Encode(text, false), ref.Encode(text, false)) << GetParam() << ": " << text;
    EXPECT_EQ(got.Encode(text, true), ref.Encode(text, true)) << GetParam() << ": " << text;
    const std::vector<int32_t> ids = ref.Encode(text, true);
    EXPECT_EQ(got.Decode(ids, true), ref.Decode(ids, true)) << GetParam() << ": " << text;
    ++n;
  }
  EXPECT_GT(n, 3);
}

INSTANTIATE_TEST_SUITE_P(Families, GgufTokenizer,
                         ::testing::Values("gpt2", "llama3", "qwen2", "olmoe", "deepseek_v3",
                                           "mixtral"));

TEST(GgufTokenizer, UnrepresentableSpecIsSkipped) {
  const std::string p = Data("tokenizers/misc_bytelevel/tokenizer.json");
  const tokenizer::TokenizerSpec spec =
      tokenizer::ParseHfTokenizerJson(io::ReadFile(p, 64 << 20), p);
  io::GgufWriter w;
  std::string why;
  EXPECT_FALSE(tokenizer::AddTokenizerToGguf(spec, -1, -1, w, &why));
  EXPECT_THAT(why, HasSubstr("llama-bpe"));
}

}  // namespace
}  // namespace moe::model
