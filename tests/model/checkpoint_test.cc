// Model config (Hugging Face JSON) and checkpoint folders: round trips, the Mixtral tensor names,
// atomic replacement, and clear errors for bad folders.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/io/safetensors.h"
#include "moe/model/checkpoint.h"
#include "moe/testing/compare.h"

namespace moe::model {
namespace {

using ::testing::HasSubstr;

std::string TempDir(const std::string& name) {
  const std::string dir = (std::filesystem::temp_directory_path() / ("moe_ckpt_test_" + name)).string();
  io::RemoveAll(dir);
  io::RemoveAll(dir + ".tmp");
  return dir;
}

ModelConfig Small(bool tie = false) {
  ModelConfig c = ModelPreset("tiny");
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 0;
  c.max_seq = 8;
  c.moe.d_ff = 12;
  c.moe.n_experts = 4;
  c.tie_embeddings = tie;
  c.Finalize();
  return c;
}

using moe::testing::ErrorOf;

TEST(ModelConfig, HfJsonRoundTripsEveryOption) {
  ModelConfig c = Small();
  c.moe_every = 2;
  c.dense_d_ff = 20;
  c.moe.score = mixture::ScoreFn::kSigmoid;
  c.moe.renormalize = false;
  c.moe.route_scale = 2.5;
  c.moe.n_groups = 2;
  c.moe.topk_groups = 1;
  c.moe.shared_d_ff = 8;
  c.moe.shared_gate = true;
  c.moe.selection_bias = true;
  c.moe.bias_update_rate = 0.001;
  c.moe.capacity_factor = 1.25;
  c.Finalize();
  const nlohmann::json j = ToHfJson(c);
  EXPECT_EQ(j["architectures"][0], "MixtralForCausalLM");
  EXPECT_EQ(j["num_local_experts"], 4);
  EXPECT_EQ(j["num_experts_per_tok"], 2);
  const ModelConfig back = FromHfJson(nlohmann::json::parse(j.dump()), "config.json");
  EXPECT_EQ(ToHfJson(back), j);
  EXPECT_EQ(back.moe.ToString(), c.moe.ToString());
  EXPECT_EQ(back.NumMoeLayers(), 1);
}

TEST(ModelConfig, HfJsonRoundTripsTrainableRopeAndLayerOptions) {
  ModelConfig c = Small();
  c.dense_d_ff = 20;
  c.moe_layers = {0, 1};
  c.rotary_dim = 4;
  c.rope_pairing = kernels::RopePairing::kInterleaved;
  c.rope_scaling = {.kind = kernels::RopeScalingKind::kYarn,
                    .factor = 4.0,
                    .original_max_position_embeddings = 4,
                    .mscale = 1.0,
                    .mscale_all_dim = 0.5};
  c.attn_scale = 0.3;
  c.Finalize();
  const nlohmann::json j = ToHfJson(c);
  const ModelConfig back = FromHfJson(nlohmann::json::parse(j.dump()), "config.json");
  EXPECT_EQ(ToHfJson(back), j);
  EXPECT_EQ(back.moe_layers, c.moe_layers);
  EXPECT_EQ(back.rope_scaling.kind, kernels::RopeScalingKind::kYarn);
  EXPECT_EQ(back.rope_scaling.mscale_all_dim, 0.5);
  EXPECT_EQ(back.rope_pairing, kernels::RopePairing::kInterleaved);
  EXPECT_EQ(back.NumMoeLayers(), 1);
  EXPECT_FALSE(back.IsMoeLayer(0));
  // Options training cannot run are not written in this layout.
  c.qkv_bias = true;
  Rng rng(1);
  ModelWeights w;
  w.InitRandom(c, DType::kF32, rng);
  EXPECT_THAT(ErrorOf([&] { SaveModel(TempDir("qkv_bias"), c, w); }),
              HasSubstr("cannot hold: qkv_bias"));
}

TEST(ModelConfig, BadValuesNameTheKey) {
  nlohmann::json j = ToHfJson(Small());
  auto with = [&](const char* key, nlohmann::json v) {
    nlohmann::json k = j;
    k[key] = v;
    return ErrorOf([&] { FromHfJson(k, "cfg.json"); });
  };
  EXPECT_THAT(with("hidden_size", -4), HasSubstr("d_model = -4"));
  EXPECT_THAT(with("hidden_size", "big"), HasSubstr("'hidden_size' has the wrong type"));
  EXPECT_THAT(with("num_experts_per_tok", 9), HasSubstr("top_k = 9"));
  EXPECT_THAT(with("num_key_value_heads", 3), HasSubstr("n_kv_heads = 3"));
  EXPECT_THAT(with("vocab_size", int64_t{1} << 40), HasSubstr("vocab_size"));
  EXPECT_THAT(with("scoring_func", "relu"), HasSubstr("'relu'"));
  EXPECT_THAT(with("hidden_act", "gelu"), HasSubstr("hidden_act 'gelu'"));
  nlohmann::json k = j;
  k.erase("num_local_experts");
  EXPECT_THAT(ErrorOf([&] { FromHfJson(k, "cfg.json"); }), HasSubstr("cfg.json: missing key 'num_local_experts'"));
}

TEST(Checkpoint, MixtralTensorNames) {
  const ModelConfig c = Small();
  ModelWeights w;
  w.Allocate(c, DType::kF32);
  std::set<std::string> names;
  w.ForEachTensor([&](const std::string& n, Tensor&) {
    for (const auto& p : HfNames(c, n)) EXPECT_TRUE(names.insert(p.name).second) << p.name;
  });
  for (const char* want : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                           "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
                           "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                           "model.layers.1.block_sparse_moe.gate.weight",
                           "model.layers.1.block_sparse_moe.experts.3.w1.weight",
                           "model.layers.1.block_sparse_moe.experts.3.w2.weight",
                           "model.layers.1.block_sparse_moe.experts.3.w3.weight"}) {
    EXPECT_TRUE(names.count(want)) << want;
  }
  // 1 embed + 1 norm + 1 head + per layer (2 norms + 4 attn + router + 3 x 4 experts)
  EXPECT_EQ(names.size(), 3u + 2u * (2 + 4 + 1 + 12));
}

TEST(Checkpoint, SaveLoadRoundTripIsExact) {
  for (bool tie : {false, true}) {
    ModelConfig c = Small(tie);
    Rng rng(3);
    ModelWeights w;
    w.InitRandom(c, DType::kF32, rng);
    const std::string dir = TempDir(tie ? "rt_tied" : "rt");
    SaveModel(dir, c, w, {{"note.txt", "hello"}});
    EXPECT_EQ(io::ReadFile(dir + "/note.txt"), "hello");
    // The expert split: w1 of expert 2 is rows [0, F) of w13[2].
    const auto file = io::SafetensorsFile::Open(dir + "/model.safetensors");
    const Tensor w1 = file.Load("model.layers.0.block_sparse_moe.experts.2.w1.weight", DType::kF32);
    const Tensor w3 = file.Load("model.layers.0.block_sparse_moe.experts.2.w3.weight", DType::kF32);
    const auto& w13 = w.layers[0].moe.w13;
    const float* base = w13.view<const float>().data + 2 * 2 * c.moe.d_ff * c.d_model;
    EXPECT_EQ(std::memcmp(w1.raw(), base, w1.nbytes()), 0);
    EXPECT_EQ(std::memcmp(w3.raw(), base + c.moe.d_ff * c.d_model, w3.nbytes()), 0);
    EXPECT_EQ(file.Has("lm_head.weight"), !tie);

    LoadedModel back = LoadModel(dir);
    EXPECT_EQ(ToHfJson(back.config), ToHfJson(c));
    std::vector<std::pair<std::string, const Tensor*>> a, b;
    w.ForEachTensor([&](const std::string& n, Tensor& t) { a.push_back({n, &t}); });
    back.weights.ForEachTensor([&](const std::string& n, Tensor& t) { b.push_back({n, &t}); });
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      ASSERT_EQ(a[i].second->nbytes(), b[i].second->nbytes());
      EXPECT_EQ(std::memcmp(a[i].second->raw(), b[i].second->raw(), a[i].second->nbytes()), 0) << a[i].first;
    }
    io::RemoveAll(dir);
  }
}

TEST(Checkpoint, ReplacingKeepsEitherOldOrNewAndIgnoresLeftoverTmp) {
  const ModelConfig c = Small();
  Rng rng(4);
  ModelWeights w;
  w.InitRandom(c, DType::kF32, rng);
  const std::string dir = TempDir("replace");
  SaveModel(dir, c, w);
  // A crash while writing the next one leaves a partial dir.tmp behind: the old folder still loads.
  io::MakeDirs(dir + ".tmp");
  io::WriteFileAtomic(dir + ".tmp/model.safetensors", "garbage");
  EXPECT_NO_THROW(LoadModel(dir));
  // Saving again replaces the folder and clears the leftover.
  w.layers[0].wq.view<float>()[0] = 42.0f;
  SaveModel(dir, c, w);
  EXPECT_FALSE(io::PathExists(dir + ".tmp"));
  EXPECT_EQ(LoadModel(dir).weights.layers[0].wq.view<float>()[0], 42.0f);
  io::RemoveAll(dir);
}

TEST(Checkpoint, BadFoldersGiveClearErrors) {
  const ModelConfig c = Small();
  Rng rng(5);
  ModelWeights w;
  w.InitRandom(c, DType::kF32, rng);
  const std::string dir = TempDir("bad");
  EXPECT_THAT(ErrorOf([&] { LoadModel(dir); }), HasSubstr("not a model folder"));
  SaveModel(dir, c, w);
  const std::string good_cfg = io::ReadFile(dir + "/config.json");
  io::WriteFileAtomic(dir + "/config.json", "{\"vocab_size\": ");
  EXPECT_THAT(ErrorOf([&] { LoadModel(dir); }), HasSubstr("config.json: malformed JSON"));
  // A config that disagrees with the tensors.
  nlohmann::json j = nlohmann::json::parse(good_cfg);
  j["intermediate_size"] = 13;
  io::WriteFileAtomic(dir + "/config.json", j.dump());
  EXPECT_THAT(ErrorOf([&] { LoadModel(dir); }), HasSubstr("has shape [12,16], expected [13,16]"));
  j["intermediate_size"] = 12;
  j["num_local_experts"] = 2;
  io::WriteFileAtomic(dir + "/config.json", j.dump());
  EXPECT_THAT(ErrorOf([&] { LoadModel(dir); }), HasSubstr("gate.weight' has shape [4,16], expected [2,16]"));
  j["num_local_experts"] = 4;
  j["tie_word_embeddings"] = true;  // the file has an lm_head the config does not expect
  io::WriteFileAtomic(dir + "/config.json", j.dump());
  EXPECT_THAT(ErrorOf([&] { LoadModel(dir); }), HasSubstr("first unexpected: lm_head.weight"));
  j["tie_word_embeddings"] = false;
  j["num_hidden_layers"] = 3;  // a tensor the file lacks
  io::WriteFileAtomic(dir + "/config.json", j.dump());
  EXPECT_THAT(ErrorOf([&] { LoadModel(dir); }), HasSubstr("model.layers.2"));
  // Truncated weights.
  io::WriteFileAtomic(dir + "/config.json", good_cfg);
  const std::string st = io::ReadFile(dir + "/model.safetensors");
  io::WriteFileAtomic(dir + "/model.safetensors", st.substr(0, st.size() / 2));
  EXPECT_THAT(ErrorOf([&] { LoadModel(dir); }), HasSubstr("model.safetensors"));
  io::RemoveAll(dir);
}

}  // namespace
}  // namespace moe::model
