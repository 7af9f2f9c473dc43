// The MoE transformer LM against PyTorch (scripts/gen_model_goldens.py): logits, loss, every
// gradient, and the loss along 5 AdamW steps.
#include <gtest/gtest.h>

#include <cstring>

#include <nlohmann/json.hpp>

#include "moe/io/safetensors.h"
#include "moe/kernels/adamw.h"
#include "moe/model/transformer.h"
#include "moe/testing/compare.h"

namespace moe::model {
namespace {

using testing::ExpectClose;
using testing::Tolerance;

ModelConfig ConfigOf(const nlohmann::json& j) {
  ModelConfig c;
  c.vocab_size = j.at("vocab_size");
  c.d_model = j.at("d_model");
  c.n_layers = j.at("n_layers");
  c.n_heads = j.at("n_heads");
  c.n_kv_heads = j.at("n_kv_heads");
  c.max_seq = j.at("max_seq");
  c.rope_theta = j.at("rope_theta");
  c.norm_eps = j.at("norm_eps");
  c.tie_embeddings = j.at("tie_embeddings");
  c.dense_d_ff = j.at("dense_d_ff");
  c.moe_every = j.at("moe_every");
  const auto& m = j.at("moe");
  c.moe.d_ff = m.at("d_ff");
  c.moe.n_experts = m.at("n_experts");
  c.moe.top_k = m.at("top_k");
  c.moe.renormalize = m.value("renormalize", true);
  c.moe.score = mixture::ParseScoreFn(m.value("score", std::string("softmax")));
  c.moe.route_scale = m.value("route_scale", 1.0);
  c.moe.shared_d_ff = m.value("shared_d_ff", 0);
  c.moe.aux_loss_coef = m.value("aux_loss_coef", 0.0);
  c.moe.z_loss_coef = m.value("z_loss_coef", 0.0);
  c.Finalize();
  return c;
}

class ModelGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGolden, MatchesPyTorch) {
  const auto f = io::SafetensorsFile::Open(std::string(MOE_TEST_DATA_DIR) + "/model_" + GetParam() + ".safetensors");
  const nlohmann::json cj = nlohmann::json::parse(f.Metadata("config"));
  const nlohmann::json aj = nlohmann::json::parse(f.Metadata("adamw"));
  const ModelConfig cfg = ConfigOf(cj);
  ModelWeights w, g, m, v;
  w.Allocate(cfg, DType::kF32);
  g.Allocate(cfg, DType::kF32);
  m.Allocate(cfg, DType::kF32);
  v.Allocate(cfg, DType::kF32);
  w.ForEachTensor([&](const std::string& n, Tensor& t) {
    const Tensor src = f.Load("w." + n, DType::kF32);
    ASSERT_EQ(src.shape(), t.shape()) << n;
    std::memcpy(t.raw(), src.raw(), t.nbytes());
  });
  Batch b;
  b.batch = cj.at("batch");
  b.seq = cj.at("seq");
  for (int64_t x : f.LoadIntegers("tokens")) b.tokens.push_back(static_cast<int32_t>(x));
  for (int64_t x : f.LoadIntegers("targets")) b.targets.push_back(static_cast<int32_t>(x));
  const Transformer tf(cfg);
  Context ctx({.threads = 2});
  ForwardState<float> st;
  const double loss = tf.Forward<float>(w, b, st, ctx);
  const Tensor want_logits = f.Load("logits", DType::kF32);
  EXPECT_TRUE(ExpectClose(st.logits.view<float>().data, want_logits.view<float>().data, want_logits.numel(),
                          Tolerance{2e-5, 1e-4, 1e-9}, "logits"));
  const float want_loss = f.Load("loss", DType::kF32).view<float>()[0];
  EXPECT_NEAR(loss, want_loss, 2e-5 * std::abs(want_loss));
  tf.Backward<float>(w, b, st, g, ctx);
  g.ForEachParameter([&](const std::string& n, Tensor& t) {
    const Tensor want = f.Load("g." + n, DType::kF32);
    EXPECT_TRUE(ExpectClose(t.view<float>().data, want.view<float>().data, want.numel(), Tolerance{2e-6, 2e-4, 1e-8},
                            "grad " + n));
  });
  // AdamW on the same batch, no decay on norms and the embedding (as the trainer does).
  const Tensor want_losses = f.Load("loss_after_steps", DType::kF32);
  const int64_t steps = std::stoll(f.Metadata("steps"));
  std::vector<std::pair<std::string, Tensor*>> pw, pg, pm, pv;
  w.ForEachParameter([&](const std::string& n, Tensor& t) { pw.push_back({n, &t}); });
  g.ForEachParameter([&](const std::string& n, Tensor& t) { pg.push_back({n, &t}); });
  m.ForEachParameter([&](const std::string& n, Tensor& t) { pm.push_back({n, &t}); });
  v.ForEachParameter([&](const std::string& n, Tensor& t) { pv.push_back({n, &t}); });
  for (int64_t s = 0; s <= steps; ++s) {
    const double l = tf.Forward<float>(w, b, st, ctx);
    EXPECT_NEAR(l, want_losses.view<float>()[s], 5e-5 * std::abs(l) + 1e-5) << "loss after " << s << " AdamW steps";
    if (s == steps) break;
    for (auto& [n, t] : pg) t->SetZero();
    tf.Backward<float>(w, b, st, g, ctx);
    for (size_t i = 0; i < pw.size(); ++i) {
      const bool decay = !(pw[i].first.ends_with("norm") || pw[i].first == "embed");
      const kernels::AdamWOptions o{.lr = aj.at("lr"), .beta1 = aj.at("betas")[0], .beta2 = aj.at("betas")[1],
                                    .eps = aj.at("eps"), .weight_decay = decay ? aj.at("weight_decay").get<double>() : 0.0};
      kernels::AdamWStep<float>(pg[i].second->view<const float>(), o, s + 1, pw[i].second->view<float>(),
                                pm[i].second->view<float>(), pv[i].second->view<float>(), ctx);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ModelGolden, ::testing::Values("mixtral_lm", "interleaved_lm"));

}  // namespace
}  // namespace moe::model
