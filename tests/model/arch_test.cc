// Published architectures (moe/model/arch/) against float64 PyTorch references written from each
// family's modeling code (scripts/gen_arch_goldens.py): tiny checkpoints in each family's own
// config keys, tensor names and storage dtype (one sharded with an index, one F16, one BF16).
// Checks the logits of a prompt + greedy continuation, the greedy tokens themselves, KV-cache
// decode against full recompute, chunked prefill against token by token, the parameter count,
// and clear errors for broken folders.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>

#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/io/safetensors.h"
#include "moe/model/checkpoint.h"
#include "moe/model/hf_model.h"
#include "moe/model/inspect.h"
#include "moe/model/transformer.h"
#include "moe/testing/compare.h"

namespace moe::model {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return std::string(MOE_TEST_DATA_DIR) + "/arch/" + name;
}

using moe::testing::ErrorOf;

struct Golden {
  std::vector<int32_t> tokens;  // prompt + greedy continuation
  int64_t prompt = 0;
  Tensor logits;  // [T, V]
};

Golden ReadGolden(const std::string& dir) {
  const io::SafetensorsFile f = io::SafetensorsFile::Open(dir + "/golden.safetensors");
  Golden g;
  for (const int64_t t : f.LoadIntegers("tokens")) g.tokens.push_back(static_cast<int32_t>(t));
  g.prompt = f.LoadIntegers("prompt_len")[0];
  g.logits = f.Load("logits", DType::kF32);
  return g;
}

// max |a - e| over max |e| (the logits' scale).
double RelMaxErr(const float* a, const float* e, int64_t n) {
  double err = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    err = std::max(err, std::abs(static_cast<double>(a[i]) - e[i]));
    scale = std::max(scale, std::abs(static_cast<double>(e[i])));
  }
  return err / std::max(scale, 1e-30);
}

int32_t Argmax(const float* row, int64_t v) {
  return static_cast<int32_t>(std::max_element(row, row + v) - row);
}

struct Case {
  const char* dir;
  const char* architecture;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.dir; }

class ArchGolden : public ::testing::TestWithParam<Case> {};

TEST_P(ArchGolden, MatchesPyTorchReference) {
  const Case& cs = GetParam();
  const std::string dir = Fixture(cs.dir);
  HfModel m = LoadHfModel(dir);
  const ModelConfig& cfg = m.config;
  EXPECT_EQ(m.architecture, cs.architecture);
  EXPECT_EQ(cfg.architecture, cs.architecture);
  const Golden g = ReadGolden(dir);
  const auto nt = static_cast<int64_t>(g.tokens.size());
  const int64_t v = cfg.vocab_size;
  ASSERT_EQ(g.logits.shape(), (Shape{nt, v}));

  // The parameter count from the config alone equals the loaded tensors.
  int64_t numel = 0;
  m.weights.ForEachTensor([&](const std::string&, Tensor& t) { numel += t.numel(); });
  EXPECT_EQ(static_cast<double>(numel), CountParams(cfg).total());

  Context ctx({.threads = 2});
  const Transformer tf(cfg);
  KvCache cache;
  cache.Allocate(cfg, nt);
  if (cfg.mla.enabled()) {  // MLA caches the latent: [c | k_pe] and c, one head
    EXPECT_EQ(cache.k[0].shape(), Shape({nt, 1, cfg.mla.kv_lora_rank + cfg.mla.qk_rope_head_dim}));
    EXPECT_EQ(cache.v[0].shape(), Shape({nt, 1, cfg.mla.kv_lora_rank}));
  }
  InferState st;

  // 1. One prefill of the whole sequence: every row of logits.
  tf.Infer(m.weights, g.tokens.data(), nt, cache, st, ctx, /*all_logits=*/true);
  const Tensor full = st.logits.Clone();
  const float* ref = g.logits.view<float>().data;
  const double err = RelMaxErr(full.view<float>().data, ref, nt * v);
  EXPECT_LE(err, 1e-4) << cs.dir << ": max |logit error| / max |logit|";
  if (cfg.mla.enabled()) {
    // The loader derived W_uk^T for latent attention; without it Infer multiplies by wkv_b's
    // column blocks instead: the same logits.
    for (LayerWeights& L : m.weights.layers) {
      ASSERT_TRUE(L.wkv_b_kt.defined());
      L.wkv_b_kt = Tensor();
    }
    cache.Clear();
    tf.Infer(m.weights, g.tokens.data(), nt, cache, st, ctx, /*all_logits=*/true);
    EXPECT_LE(RelMaxErr(st.logits.view<float>().data, full.view<float>().data, nt * v), 1e-5)
        << cs.dir << ": latent attention without the derived W_uk^T";
    DeriveInferenceWeights(cfg, m.weights);
  }

  // 2. Greedy decoding from the prompt with the KV cache reproduces the reference continuation,
  //    and each decode step's logits equal the full recompute's row.
  cache.Clear();
  tf.Infer(m.weights, g.tokens.data(), g.prompt, cache, st, ctx);
  std::vector<int32_t> got;
  double decode_err = 0;
  for (int64_t i = g.prompt; i < nt; ++i) {
    const float* row = st.logits.view<float>().data;
    decode_err = std::max(decode_err, RelMaxErr(row, full.view<float>().data + (i - 1) * v, v));
    got.push_back(Argmax(row, v));
    tf.Infer(m.weights, &g.tokens[static_cast<size_t>(i)], 1, cache, st, ctx);
  }
  EXPECT_EQ(got, std::vector<int32_t>(g.tokens.begin() + g.prompt, g.tokens.end())) << cs.dir;
  EXPECT_LE(decode_err, 1e-5) << cs.dir << ": KV-cache decode vs full recompute";

  // 3. Prefill in chunks of 3 equals the single prefill (rows of every chunk).
  cache.Clear();
  double chunk_err = 0;
  for (int64_t i = 0; i < nt; i += 3) {
    const int64_t n = std::min<int64_t>(3, nt - i);
    tf.Infer(m.weights, &g.tokens[static_cast<size_t>(i)], n, cache, st, ctx, true);
    chunk_err = std::max(
        chunk_err, RelMaxErr(st.logits.view<float>().data, full.view<float>().data + i * v, n * v));
  }
  EXPECT_LE(chunk_err, 1e-5) << cs.dir << ": chunked prefill vs one prefill";
  std::printf("  %-12s logits %.1e, decode %.1e, chunked %.1e (relative to max |logit|)\n", cs.dir,
              err, decode_err, chunk_err);
}

INSTANTIATE_TEST_SUITE_P(
    Families, ArchGolden,
    ::testing::Values(Case{"mixtral", "MixtralForCausalLM"}, Case{"llama", "LlamaForCausalLM"},
                      Case{"mistral", "MistralForCausalLM"}, Case{"qwen2", "Qwen2ForCausalLM"},
                      Case{"qwen2_moe", "Qwen2MoeForCausalLM"},
                      Case{"qwen3_moe", "Qwen3MoeForCausalLM"}, Case{"olmoe", "OlmoeForCausalLM"},
                      Case{"deepseek_v2", "DeepseekV2ForCausalLM"},
                      Case{"deepseek_v3", "DeepseekV3ForCausalLM"}),
    [](const auto& info) { return std::string(info.param.dir); });

TEST(ArchConfig, FamiliesMapOntoGenericOptions) {
  const ModelConfig q2 = ReadHfConfig(Fixture("qwen2_moe"));
  EXPECT_TRUE(q2.qkv_bias);
  EXPECT_FALSE(q2.o_bias);
  EXPECT_TRUE(q2.moe.shared_gate);
  EXPECT_FALSE(q2.moe.renormalize);
  EXPECT_EQ(q2.moe_layers, (std::vector<uint8_t>{1, 0, 1}));  // mlp_only_layers = [1]
  const ModelConfig q3 = ReadHfConfig(Fixture("qwen3_moe"));
  EXPECT_EQ(q3.qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(q3.head_dim, 16);
  const ModelConfig ol = ReadHfConfig(Fixture("olmoe"));
  EXPECT_EQ(ol.qk_norm, QkNorm::kFull);
  EXPECT_EQ(ol.clip_qkv, 2.0);
  const ModelConfig v2 = ReadHfConfig(Fixture("deepseek_v2"));
  EXPECT_EQ(v2.moe.group_score, mixture::GroupScore::kMax);
  EXPECT_EQ(v2.moe.route_scale, 2.0);
  EXPECT_EQ(v2.moe_layers, (std::vector<uint8_t>{0, 1, 1}));  // first_k_dense_replace = 1
  EXPECT_EQ(v2.head_dim, 12);
  EXPECT_EQ(v2.v_head_dim(), 8);
  const ModelConfig v3 = ReadHfConfig(Fixture("deepseek_v3"));
  EXPECT_TRUE(v3.moe.selection_bias);
  EXPECT_EQ(v3.moe.score, mixture::ScoreFn::kSigmoid);
  EXPECT_EQ(v3.moe.group_score, mixture::GroupScore::kTop2Sum);
  EXPECT_EQ(v3.rope_pairing, kernels::RopePairing::kInterleaved);
  // YaRN: (Dn + Dr)^-1/2 * mscale(8, 0.8)^2.
  const double m = 0.1 * 0.8 * std::log(8.0) + 1.0;
  EXPECT_NEAR(v3.softmax_scale(), m * m / std::sqrt(12.0), 1e-12);
}

TEST(ArchConfig, TrainingRefusesInferenceOnlyOptions) {
  HfModel m = LoadHfModel(Fixture("qwen2"));
  const Transformer tf(m.config);
  Batch b{.batch = 1, .seq = 2, .tokens = {3, 4}, .targets = {4, 5}};
  ForwardState<float> st;
  Context ctx({.threads = 1});
  EXPECT_THAT(ErrorOf([&] { tf.Forward(m.weights, b, st, ctx); }),
              HasSubstr("does not support: qkv_bias"));
  EXPECT_THAT(
      ErrorOf([&] { SaveModel(::testing::TempDir() + "/moe_arch_save", m.config, m.weights); }),
      HasSubstr("qkv_bias"));
}

// A writable copy of a fixture.
std::string CopyFixture(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/moe_arch_test_" + name;
  io::RemoveAll(dir);
  fs::copy(Fixture(name), dir, fs::copy_options::recursive);
  for (const auto& e : fs::directory_iterator(dir))
    fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write,
                    fs::perm_options::add);
  return dir;
}

nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(io::ReadFile(path));
}
void WriteJson(const std::string& path, const nlohmann::json& j) {
  io::WriteFileAtomic(path, j.dump(2));
}

TEST(ArchErrors, ShardProblemsNameTheFileAndTensor) {
  const std::string dir = CopyFixture("qwen2_moe");
  const std::string index = dir + "/model.safetensors.index.json";
  const std::string shard2 = dir + "/model-00002-of-00002.safetensors";
  const std::string good_index = io::ReadFile(index), good_shard2 = io::ReadFile(shard2);
  // Truncated shard.
  io::WriteFileAtomic(shard2, good_shard2.substr(0, good_shard2.size() - 100));
  EXPECT_THAT(ErrorOf([&] { LoadHfModel(dir); }), HasSubstr("model-00002-of-00002.safetensors"));
  // Missing shard.
  io::RemoveAll(shard2);
  const std::string missing = ErrorOf([&] { LoadHfModel(dir); });
  EXPECT_THAT(missing, HasSubstr("shard 'model-00002-of-00002.safetensors'"));
  EXPECT_THAT(missing, HasSubstr("is missing"));
  io::WriteFileAtomic(shard2, good_shard2);
  // The index names a tensor its shard does not hold.
  nlohmann::json j = nlohmann::json::parse(good_index);
  j["weight_map"]["model.layers.0.mlp.extra.weight"] = "model-00001-of-00002.safetensors";
  WriteJson(index, j);
  EXPECT_THAT(ErrorOf([&] { LoadHfModel(dir); }),
              HasSubstr("lists tensor 'model.layers.0.mlp.extra.weight' in shard "
                        "'model-00001-of-00002.safetensors'"));
  // The index points outside the folder.
  j = nlohmann::json::parse(good_index);
  j["weight_map"]["model.norm.weight"] = "../x.safetensors";
  WriteJson(index, j);
  EXPECT_THAT(ErrorOf([&] { LoadHfModel(dir); }),
              HasSubstr("is not a file name inside the folder"));
  // A tensor the model needs is in no file.
  j = nlohmann::json::parse(good_index);
  WriteJson(index, j);
  EXPECT_NO_THROW(LoadHfModel(dir));
  io::RemoveAll(dir);
}

TEST(ArchErrors, ConfigProblemsNameTheField) {
  const std::string dir = CopyFixture("deepseek_v2");
  const std::string cfg_path = dir + "/config.json";
  const nlohmann::json good = ReadJson(cfg_path);
  auto with = [&](const char* key, const nlohmann::json& value) {
    nlohmann::json j = good;
    j[key] = value;
    WriteJson(cfg_path, j);
    return ErrorOf([&] { LoadHfModel(dir); });
  };
  const std::string arch = with("architectures", nlohmann::json::array({"GPT2LMHeadModel"}));
  EXPECT_THAT(arch, HasSubstr("architecture 'GPT2LMHeadModel' is not supported"));
  EXPECT_THAT(arch, HasSubstr("DeepseekV3ForCausalLM"));
  EXPECT_THAT(arch, HasSubstr("config.json"));
  EXPECT_THAT(with("architectures", nullptr), HasSubstr("needs an 'architectures' list"));
  const std::string topk = with("topk_method", "noaux_tc");
  EXPECT_THAT(topk, HasSubstr("topk_method = \"noaux_tc\" is not supported"));
  EXPECT_THAT(topk, HasSubstr("group_limited_greedy"));
  EXPECT_THAT(with("scoring_func", "sigmoid"), HasSubstr("scoring_func"));
  EXPECT_THAT(with("hidden_act", "gelu"), HasSubstr("hidden_act"));
  EXPECT_THAT(with("quantization_config", {{"quant_method", "fp8"}}),
              HasSubstr("quantization_config = {\"quant_method\":\"fp8\"} is not supported"));
  EXPECT_THAT(with("n_group", 3), HasSubstr("n_groups = 3"));
  // Absurd sizes: refused from the file sizes before anything is allocated.
  const std::string big = with("hidden_size", 1 << 19);
  EXPECT_THAT(big, HasSubstr("config.json describes"));
  EXPECT_THAT(big, HasSubstr("hidden_size 524288"));
  EXPECT_THAT(with("vocab_size", int64_t{1} << 40), HasSubstr("vocab_size"));
  EXPECT_THAT(with("num_hidden_layers", 100000), HasSubstr("num_hidden_layers = 100000"));
  io::RemoveAll(dir);
}

// Logits of every position from one prefill, and of the last position from one-token decode.
std::pair<std::vector<float>, std::vector<float>> PrefillAndDecode(const ModelConfig& cfg,
                                                                   const ModelWeights& w,
                                                                   const std::vector<int32_t>& toks) {
  Context ctx({.threads = 2});
  const Transformer tf(cfg);
  const auto n = static_cast<int64_t>(toks.size());
  KvCache cache;
  cache.Allocate(cfg, n);
  InferState st;
  tf.Infer(w, toks.data(), n, cache, st, ctx, true);
  const View<const float> all = st.logits.view<float>();
  std::vector<float> prefill(all.data, all.data + all.numel());
  cache.Allocate(cfg, n);
  for (const int32_t t : toks) tf.Infer(w, &t, 1, cache, st, ctx, false);
  const View<const float> last = st.logits.view<float>();
  return {prefill, std::vector<float>(last.data, last.data + last.numel())};
}

TEST(ArchConfig, SlidingWindowLimitsAttention) {
  HfModel m = LoadHfModel(Fixture("mistral"));
  EXPECT_EQ(m.config.sliding_window, 4096);
  std::vector<int32_t> toks;
  for (int i = 0; i < 12; ++i) toks.push_back(static_cast<int32_t>((5 + 11 * i) % m.config.vocab_size));
  const int64_t v = m.config.vocab_size;
  ModelConfig none = m.config;
  none.sliding_window = 0;
  const auto [wide, wide_dec] = PrefillAndDecode(m.config, m.weights, toks);
  const auto [full, full_dec] = PrefillAndDecode(none, m.weights, toks);
  EXPECT_EQ(wide, full);  // a window wider than the context changes nothing
  ModelConfig narrow = m.config;
  narrow.sliding_window = 3;
  const auto [win, win_dec] = PrefillAndDecode(narrow, m.weights, toks);
  // The first 3 positions see the same keys; later ones do not.
  EXPECT_LE(RelMaxErr(win.data(), full.data(), 3 * v), 1e-6);
  EXPECT_GT(RelMaxErr(win.data() + 11 * v, full.data() + 11 * v, v), 1e-3);
  EXPECT_LE(RelMaxErr(win_dec.data(), win.data() + 11 * v, v), 1e-5);  // decode = prefill

  // Qwen2-style per-layer windows: all layers (max_window_layers 0) or none are supported.
  const std::string dir = CopyFixture("qwen2");
  nlohmann::json j = ReadJson(dir + "/config.json");
  j["use_sliding_window"] = true;
  j["sliding_window"] = 4;
  j["max_window_layers"] = j["num_hidden_layers"];
  WriteJson(dir + "/config.json", j);
  EXPECT_EQ(LoadHfModel(dir).config.sliding_window, 0);
  j["max_window_layers"] = 0;
  WriteJson(dir + "/config.json", j);
  EXPECT_EQ(LoadHfModel(dir).config.sliding_window, 4);
  j["max_window_layers"] = 1;
  WriteJson(dir + "/config.json", j);
  EXPECT_THAT(ErrorOf([&] { LoadHfModel(dir); }), HasSubstr("max_window_layers"));
  io::RemoveAll(dir);
}

TEST(ArchErrors, MissingAndUnexpectedTensors) {
  const std::string dir = CopyFixture("mixtral");
  const std::string cfg_path = dir + "/config.json";
  nlohmann::json j = ReadJson(cfg_path);
  j["num_hidden_layers"] = 3;
  WriteJson(cfg_path, j);
  const std::string missing = ErrorOf([&] { LoadHfModel(dir); });
  EXPECT_THAT(missing, HasSubstr("tensor 'model.layers.2."));
  EXPECT_THAT(missing, HasSubstr("is missing"));
  j["num_hidden_layers"] = 1;
  WriteJson(cfg_path, j);
  EXPECT_THAT(ErrorOf([&] { LoadHfModel(dir); }), HasSubstr("first unexpected: model.layers.1."));
  io::RemoveAll(dir);
}

TEST(ArchInspect, ReportsLayersParamsAndMemory) {
  const std::string r = InspectModel(Fixture("deepseek_v3"));
  EXPECT_THAT(r, HasSubstr("DeepseekV3ForCausalLM"));
  EXPECT_THAT(r, HasSubstr("MLA H=4 q_lora=24 kv_lora=16"));
  EXPECT_THAT(r, HasSubstr("layers 0: dense SwiGLU F=48"));
  EXPECT_THAT(r, HasSubstr("layers 1-2: MoE E=8 K=3 F=16 sigmoid groups 2/4 (top2_sum)"));
  EXPECT_THAT(r, HasSubstr("active per token"));
  EXPECT_THAT(r, HasSubstr("experts"));
}

// Total and active parameters of published configs (config.json values as released) against the
// figures their model cards state.
TEST(ArchInspect, PublishedConfigsGiveTheirParameterCounts) {
  struct Published {
    const char* name;
    nlohmann::json config;
    double total, active;  // billions, as published
  };
  const std::vector<Published> cases = {
      {"mixtral_8x7b",
       {{"architectures", {"MixtralForCausalLM"}},
        {"vocab_size", 32000},
        {"hidden_size", 4096},
        {"intermediate_size", 14336},
        {"num_hidden_layers", 32},
        {"num_attention_heads", 32},
        {"num_key_value_heads", 8},
        {"num_local_experts", 8},
        {"num_experts_per_tok", 2},
        {"max_position_embeddings", 32768},
        {"rope_theta", 1e6}},
       46.7,
       12.9},
      {"qwen3_30b_a3b",
       {{"architectures", {"Qwen3MoeForCausalLM"}},
        {"vocab_size", 151936},
        {"hidden_size", 2048},
        {"intermediate_size", 6144},
        {"moe_intermediate_size", 768},
        {"num_hidden_layers", 48},
        {"num_attention_heads", 32},
        {"num_key_value_heads", 4},
        {"head_dim", 128},
        {"num_experts", 128},
        {"num_experts_per_tok", 8},
        {"norm_topk_prob", true},
        {"max_position_embeddings", 40960}},
       30.5,
       3.3},
      {"deepseek_v3",
       {{"architectures", {"DeepseekV3ForCausalLM"}},
        {"vocab_size", 129280},
        {"hidden_size", 7168},
        {"intermediate_size", 18432},
        {"moe_intermediate_size", 2048},
        {"num_hidden_layers", 61},
        {"num_attention_heads", 128},
        {"num_key_value_heads", 128},
        {"n_routed_experts", 256},
        {"n_shared_experts", 1},
        {"num_experts_per_tok", 8},
        {"n_group", 8},
        {"topk_group", 4},
        {"topk_method", "noaux_tc"},
        {"scoring_func", "sigmoid"},
        {"norm_topk_prob", true},
        {"routed_scaling_factor", 2.5},
        {"first_k_dense_replace", 3},
        {"moe_layer_freq", 1},
        {"q_lora_rank", 1536},
        {"kv_lora_rank", 512},
        {"qk_nope_head_dim", 128},
        {"qk_rope_head_dim", 64},
        {"v_head_dim", 128},
        {"max_position_embeddings", 163840},
        {"rope_scaling",
         {{"type", "yarn"},
          {"factor", 40},
          {"original_max_position_embeddings", 4096},
          {"beta_fast", 32},
          {"beta_slow", 1},
          {"mscale", 1.0},
          {"mscale_all_dim", 1.0}}}},
       671,
       37},
  };
  for (const Published& p : cases) {
    const ModelConfig c = ParseHfConfig(p.config, p.name);
    const ParamCounts n = CountParams(c);
    EXPECT_NEAR(n.total() / 1e9, p.total, 0.01 * p.total + 0.1) << p.name;
    EXPECT_NEAR(n.active() / 1e9, p.active, 0.03 * p.active + 0.1) << p.name;
    // Only config.json: inspect still describes the model.
    const std::string dir = ::testing::TempDir() + "/moe_inspect_" + p.name;
    io::RemoveAll(dir);
    io::MakeDirs(dir);
    WriteJson(dir + "/config.json", p.config);
    EXPECT_THAT(InspectModel(dir), HasSubstr("files      not readable"));
    io::RemoveAll(dir);
  }
}

TEST(ArchErrors, NotAFolder) {
  EXPECT_THAT(ErrorOf([&] { LoadHfModel(Fixture("nope")); }), HasSubstr("not a model folder"));
}

}  // namespace
}  // namespace moe::model
