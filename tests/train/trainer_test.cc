// The trainer: learning-rate schedule, determinism, bit-identical resume, crash-safe checkpoints,
// and a clear stop on non-finite values.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "moe/core/cpu.h"
#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/train/corpus.h"
#include "moe/train/trainer.h"

namespace moe::train {
namespace {

using ::testing::HasSubstr;

model::ModelConfig TinyModel() {
  model::ModelConfig c = model::ModelPreset("tiny");
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 0;
  c.max_seq = 16;
  c.moe.d_ff = 12;
  c.moe.n_experts = 4;
  c.moe.selection_bias = true;
  c.moe.bias_update_rate = 0.01;
  c.Finalize();
  return c;
}

std::shared_ptr<const Dataset> TinyData() {
  CorpusOptions o;
  o.train_samples = 200;
  o.val_samples = 40;
  return std::make_shared<Dataset>(BuiltinDataset(o));
}

TrainOptions TinyOptions() {
  TrainOptions o;
  o.steps = 6;
  o.batch = 3;
  o.seq_len = 16;
  o.grad_accum = 2;
  o.warmup = 2;
  o.eval_rows = 4;
  o.eval_every = 0;
  o.ckpt_every = 0;
  return o;
}

std::string TempDir(const std::string& name) {
  const std::string d = (std::filesystem::temp_directory_path() / ("moe_trainer_test_" + name)).string();
  io::RemoveAll(d);
  return d;
}

// Every tensor of the weights and optimiser state, bitwise.
void ExpectSameWeights(model::ModelWeights& a, model::ModelWeights& b) {
  std::vector<Tensor*> ta, tb;
  a.ForEachTensor([&](const std::string&, Tensor& t) { ta.push_back(&t); });
  b.ForEachTensor([&](const std::string&, Tensor& t) { tb.push_back(&t); });
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    ASSERT_EQ(ta[i]->nbytes(), tb[i]->nbytes());
    EXPECT_EQ(std::memcmp(ta[i]->raw(), tb[i]->raw(), ta[i]->nbytes()), 0) << "tensor " << i;
  }
}

TEST(LearningRate, WarmupThenCosine) {
  TrainOptions o;
  o.lr = 1.0;
  o.steps = 110;
  o.warmup = 10;
  o.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(LearningRate(o, 0), 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(o, 9), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate(o, 10), 1.0);
  EXPECT_NEAR(LearningRate(o, 60), 0.55, 1e-12);  // halfway: min + (1 - min) / 2
  EXPECT_NEAR(LearningRate(o, 110), 0.1, 1e-12);
}

TEST(Trainer, LossGoesDownAndRunsAreBitwiseReproducible) {
  Context ctx({.threads = 2});
  const auto data = TinyData();
  TrainOptions o = TinyOptions();
  o.steps = 12;
  o.lr = 1e-2;
  Trainer a(TinyModel(), o, data, TempDir("repro_a"), ctx);
  Trainer b(TinyModel(), o, data, TempDir("repro_b"), ctx);
  double first = 0, last = 0;
  for (int s = 0; s < 12; ++s) {
    const StepRecord ra = a.Step();
    const StepRecord rb = b.Step();
    EXPECT_EQ(ra.loss, rb.loss);
    EXPECT_EQ(ra.grad_norm, rb.grad_norm);
    if (s == 0) first = ra.loss;
    last = ra.loss;
  }
  EXPECT_LT(last, first - 0.5) << "12 steps at lr 1e-2 should lower the byte-level loss";
  ExpectSameWeights(a.weights(), b.weights());
}

TEST(Trainer, ResumeIsBitIdentical) {
  Context ctx({.threads = 2});
  const auto data = TinyData();
  const TrainOptions o = TinyOptions();  // 6 steps
  Trainer full(TinyModel(), o, data, TempDir("full"), ctx);
  for (int s = 0; s < 6; ++s) full.Step();

  const std::string dir = TempDir("half");
  {
    Trainer half(TinyModel(), o, data, dir, ctx);
    for (int s = 0; s < 3; ++s) half.Step();
    half.SaveCheckpoint();
  }
  auto resumed = Trainer::Resume(dir, data, nullptr, ctx);
  EXPECT_EQ(resumed->step(), 3);
  for (int s = 0; s < 3; ++s) resumed->Step();
  ExpectSameWeights(full.weights(), resumed->weights());
  // The selection bias moved (aux-loss-free balancing) and was carried across the resume.
  const auto bias = full.weights().layers[0].moe.bias.view<const float>();
  double mx = 0;
  for (int64_t i = 0; i < bias.numel(); ++i) mx = std::max(mx, std::abs(static_cast<double>(bias[i])));
  EXPECT_GT(mx, 0.0);
}

TEST(Trainer, RunSavesCheckpointsAndAPartialWriteLeavesThePreviousOneLoadable) {
  Context ctx({.threads = 2});
  const auto data = TinyData();
  TrainOptions o = TinyOptions();
  o.ckpt_every = 2;
  o.keep_checkpoints = 2;
  const std::string dir = TempDir("run");
  Trainer t(TinyModel(), o, data, dir, ctx);
  t.Run();
  EXPECT_EQ(t.step(), 6);
  EXPECT_EQ(LatestCheckpoint(dir), dir + "/ckpt-000006");
  EXPECT_TRUE(io::PathExists(dir + "/ckpt-000004"));
  EXPECT_FALSE(io::PathExists(dir + "/ckpt-000002"));  // only the newest 2 are kept
  // A crash while writing the next checkpoint leaves a .tmp folder: LATEST still names step 6.
  io::MakeDirs(dir + "/ckpt-000008.tmp");
  io::WriteFileAtomic(dir + "/ckpt-000008.tmp/model.safetensors", "partial");
  auto r = Trainer::Resume(dir, data, nullptr, ctx);
  EXPECT_EQ(r->step(), 6);
  ExpectSameWeights(t.weights(), r->weights());
  EXPECT_FALSE(t.evals().empty());
  EXPECT_TRUE(std::isfinite(t.evals().back().loss));
}

TEST(Trainer, NonFiniteValuesStopWithTheStepAndTensor) {
  Context ctx({.threads = 1});
  const auto data = TinyData();
  Trainer t(TinyModel(), TinyOptions(), data, TempDir("nan"), ctx);
  t.Step();
  t.weights().layers[1].wo.view<float>()[0] = std::nanf("");
  try {
    t.Step();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("step 1"));
    EXPECT_THAT(e.what(), HasSubstr("not finite"));
  }
}

TEST(Trainer, ResumeRefusesDifferentData) {
  Context ctx({.threads = 1});
  const std::string dir = TempDir("otherdata");
  {
    Trainer t(TinyModel(), TinyOptions(), TinyData(), dir, ctx);
    t.Step();
    t.SaveCheckpoint();
  }
  CorpusOptions o;
  o.seed = 2;
  o.train_samples = 200;
  o.val_samples = 40;
  EXPECT_THAT([&] { Trainer::Resume(dir, std::make_shared<Dataset>(BuiltinDataset(o)), nullptr, ctx); },
              ::testing::ThrowsMessage<Error>(HasSubstr("data differs")));
  EXPECT_THAT([&] { Trainer::Resume(TempDir("nothing"), TinyData(), nullptr, ctx); },
              ::testing::ThrowsMessage<Error>(HasSubstr("no checkpoint here")));
}

// Mixed precision: wide enough that the Linear layers and experts take the bf16 kernel.
model::ModelConfig Bf16Model() {
  model::ModelConfig c = TinyModel();
  c.d_model = 64;
  c.max_seq = 32;
  c.moe.d_ff = 64;
  c.Finalize();
  return c;
}

TEST(Trainer, Bf16LowersTheLossLikeF32) {
  if (!HasBf16Matmul()) GTEST_SKIP() << "this CPU has no AVX512-BF16 (or MOE_ISA caps it)";
  Context ctx({.threads = 2});
  const auto data = TinyData();
  TrainOptions o = TinyOptions();
  o.steps = 12;
  o.lr = 1e-2;
  o.batch = 4;
  o.seq_len = 32;
  o.grad_accum = 1;
  TrainOptions o16 = o;
  o16.bf16 = true;
  Trainer a(Bf16Model(), o, data, TempDir("f32"), ctx);
  Trainer b(Bf16Model(), o16, data, TempDir("bf16"), ctx);
  std::vector<double> l32, l16;
  for (int s = 0; s < 12; ++s) {
    l32.push_back(a.Step().loss);
    l16.push_back(b.Step().loss);
    EXPECT_EQ(ctx.matmul_precision(), MatmulPrecision::kF32) << "a step must restore the context";
  }
  EXPECT_NE(l16[0], l32[0]) << "the bf16 path did not run";
  EXPECT_NEAR(l16[0], l32[0], 1e-2 * l32[0]);
  EXPECT_LT(l32.back(), l32[0] - 0.5);
  EXPECT_LT(l16.back(), l16[0] - 0.5) << "bf16 training should lower the loss like f32 does";
  EXPECT_NEAR(l16.back(), l32.back(), 0.05 * l32.back());
  EXPECT_NEAR(b.Eval().loss, a.Eval().loss, 0.05 * a.Eval().loss);
}

TEST(Trainer, Bf16OptionIsSavedAndOldStatesLoadAsF32) {
  Context ctx({.threads = 1});
  const auto data = TinyData();
  TrainOptions o = TinyOptions();
  if (!HasBf16Matmul()) {
    o.bf16 = true;
    EXPECT_THAT([&] { Trainer(TinyModel(), o, data, TempDir("nobf16"), ctx); },
                ::testing::ThrowsMessage<Error>(HasSubstr("AVX512-BF16")));
    o.bf16 = false;
  }
  o.bf16 = HasBf16Matmul();
  const std::string dir = TempDir("bf16_state");
  {
    Trainer t(TinyModel(), o, data, dir, ctx);
    t.Step();
    t.SaveCheckpoint();
  }
  const std::string state = LatestCheckpoint(dir) + "/trainer_state.json";
  nlohmann::json j = nlohmann::json::parse(io::ReadFile(state));
  EXPECT_EQ(j.at("options").at("bf16").get<bool>(), o.bf16);
  EXPECT_EQ(Trainer::Resume(dir, data, nullptr, ctx)->options().bf16, o.bf16);
  // A state written before the option existed resumes in f32.
  j["options"].erase("bf16");
  io::WriteFileAtomic(state, j.dump(1));
  EXPECT_FALSE(Trainer::Resume(dir, data, nullptr, ctx)->options().bf16);
}

}  // namespace
}  // namespace moe::train
