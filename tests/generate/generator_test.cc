// Generator: greedy generation equals a full-recompute argmax loop, cached prefixes are reused
// without changing results, stop strings/ids cut the output (also when streamed), the routing
// trace has one line per processed token and MoE layer, and Score equals the full forward.
#include "moe/generate/generator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/generate/model_dir.h"

namespace moe::generate {
namespace {

model::ModelConfig Config() {
  model::ModelConfig c;
  c.vocab_size = 258;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq = 96;
  c.dense_d_ff = 48;
  c.moe_every = 1;
  c.moe.n_experts = 4;
  c.moe.top_k = 2;
  c.moe.d_ff = 24;
  c.Finalize();
  return c;
}

class GeneratorTest : public ::testing::Test {
 protected:
  GeneratorTest()
      : cfg_(Config()), tf_(cfg_), tok_(tokenizer::Tokenizer::Bytes()), ctx_({.threads = 2}) {
    Rng rng(3);
    w_.InitRandom(cfg_, DType::kF32, rng);
    // Larger logits make greedy choices well separated from ties.
    auto head = w_.lm_head.view<float>();
    for (int64_t i = 0; i < head.numel(); ++i) head.data[i] *= 4.0f;
  }
  std::vector<int32_t> Ids(const std::string& s) { return tok_.Encode(s, false); }

  // Greedy continuation by recomputing the whole sequence each step (no cache reuse).
  std::vector<int32_t> ReferenceGreedy(std::vector<int32_t> toks, int64_t n) {
    std::vector<int32_t> out;
    for (int64_t i = 0; i < n; ++i) {
      model::KvCache cache;
      cache.Allocate(cfg_, static_cast<int64_t>(toks.size()));
      model::InferState st;
      tf_.Infer(w_, toks.data(), static_cast<int64_t>(toks.size()), cache, st, ctx_);
      const auto lv = st.logits.view<const float>();
      int32_t best = 0;
      for (int64_t v = 1; v < lv.numel(); ++v)
        if (lv.data[v] > lv.data[best]) best = static_cast<int32_t>(v);
      out.push_back(best);
      toks.push_back(best);
    }
    return out;
  }

  model::ModelConfig cfg_;
  model::Transformer tf_;
  model::ModelWeights w_;
  tokenizer::Tokenizer tok_;
  Context ctx_;
};

TEST_F(GeneratorTest, GreedyEqualsFullRecompute) {
  Generator g(tf_, w_, tok_, ctx_);
  GenerateOptions o;
  o.max_tokens = 12;
  o.prefill_chunk = 3;  // prompt in several chunks
  const auto prompt = Ids("the cat sat");
  const GenerateResult r = g.Generate(prompt, o);
  EXPECT_EQ(r.tokens, ReferenceGreedy(prompt, 12));
  EXPECT_EQ(r.finish, FinishReason::kLength);
  EXPECT_EQ(r.prompt_tokens, 11);
  EXPECT_EQ(r.prefill_tokens, 11);
  EXPECT_EQ(r.decode_tokens, 12);
  EXPECT_EQ(r.text, tok_.Decode(r.tokens, true));
}

TEST_F(GeneratorTest, NextTurnReusesTheCachedPrefix) {
  GenerateOptions o;
  o.max_tokens = 6;
  Generator g(tf_, w_, tok_, ctx_);
  auto p1 = Ids("hello there");
  const GenerateResult r1 = g.Generate(p1, o);
  auto p2 = p1;
  p2.insert(p2.end(), r1.tokens.begin(), r1.tokens.end());
  for (int32_t t : Ids(" and more")) p2.push_back(t);
  const GenerateResult r2 = g.Generate(p2, o);
  EXPECT_EQ(r2.prefill_tokens, 9);  // only " and more" ran
  Generator fresh(tf_, w_, tok_, ctx_);
  const GenerateResult r3 = fresh.Generate(p2, o);
  EXPECT_EQ(r3.prefill_tokens, static_cast<int64_t>(p2.size()));
  EXPECT_EQ(r2.tokens, r3.tokens);
  // A prompt that diverges early drops the cache after the common part.
  const GenerateResult r4 = g.Generate(Ids("help"), o);
  EXPECT_EQ(r4.prefill_tokens, 1);  // "hel" reused, "p" ran
  Generator fresh2(tf_, w_, tok_, ctx_);
  EXPECT_EQ(r4.tokens, fresh2.Generate(Ids("help"), o).tokens);
}

TEST_F(GeneratorTest, StopStringsCutTheOutputAlsoWhenStreamed) {
  GenerateOptions o;
  o.max_tokens = 24;
  const auto prompt = Ids("abc");
  Generator g(tf_, w_, tok_, ctx_);
  const std::string full = g.Generate(prompt, o).text;
  ASSERT_GE(full.size(), 12u);
  // A stop string taken from the middle of the unconstrained output.
  const std::string stop = full.substr(6, 3);
  o.stop = {"\x01\x02 never", stop};
  std::string streamed;
  g.Reset();
  const GenerateResult r = g.Generate(prompt, o, [&](std::string_view s) { streamed += s; });
  EXPECT_EQ(r.finish, FinishReason::kStopString);
  EXPECT_EQ(r.text, full.substr(0, full.find(stop)));
  EXPECT_EQ(streamed, r.text);
}

TEST_F(GeneratorTest, StopIdsEndGenerationWithoutThem) {
  GenerateOptions o;
  o.max_tokens = 16;
  const auto prompt = Ids("xyz");
  Generator g(tf_, w_, tok_, ctx_);
  const auto full = g.Generate(prompt, o).tokens;
  o.stop_ids = {full[4]};
  g.Reset();
  const GenerateResult r = g.Generate(prompt, o);
  EXPECT_EQ(r.finish, FinishReason::kStopId);
  const auto first = std::find(full.begin(), full.end(), full[4]);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(full.begin(), first));
}

TEST_F(GeneratorTest, ContextLimitEndsGeneration) {
  Generator g(tf_, w_, tok_, ctx_, 16);
  GenerateOptions o;
  o.max_tokens = 100;
  const GenerateResult r = g.Generate(Ids("0123456789"), o);
  EXPECT_EQ(r.finish, FinishReason::kContext);
  EXPECT_EQ(g.cached(), 16);
  EXPECT_EQ(r.tokens.size(), 7u);  // 6 fed back, the 7th sampled from the last logits
  EXPECT_THAT([&] { g.Generate(Ids("0123456789abcdefgh"), o); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("the context holds 16")));
}

TEST_F(GeneratorTest, RoutingTraceHasEveryTokenAndLayer) {
  std::string text;
  RoutingTrace trace([&](std::string_view s) { text += s; }, &tok_);
  Generator g(tf_, w_, tok_, ctx_);
  GenerateOptions o;
  o.max_tokens = 5;
  const GenerateResult r = g.Generate(Ids("route"), o, {}, &trace);
  EXPECT_EQ(trace.lines(), (5 + 5) * 2);
  int64_t lines = 0, generated = 0;
  size_t at = 0;
  while (at < text.size()) {
    const size_t nl = text.find('\n', at);
    ASSERT_NE(nl, std::string::npos);
    const auto j = nlohmann::json::parse(text.substr(at, nl - at));
    at = nl + 1;
    ++lines;
    ASSERT_EQ(j["experts"].size(), 2u);
    const double gsum = j["gates"][0].get<double>() + j["gates"][1].get<double>();
    EXPECT_NEAR(gsum, 1.0, 1e-5);  // renormalised top-2
    EXPECT_NE(j["experts"][0], j["experts"][1]);
    EXPECT_LT(j["layer"].get<int>(), 2);
    if (j["phase"] == "generated") {
      const int64_t pos = j["pos"];
      EXPECT_EQ(j["token"].get<int32_t>(), r.tokens[static_cast<size_t>(pos - 5)]);
      ++generated;
    }
  }
  EXPECT_EQ(lines, 20);
  EXPECT_EQ(generated, 10);
}

TEST_F(GeneratorTest, ScoreEqualsTheFullForward) {
  const auto toks = Ids("a longer piece of text to score");
  Generator g(tf_, w_, tok_, ctx_);
  std::vector<float> chunked;
  g.Score(toks, 7, [&](int64_t first, int64_t n, const float* logits) {
    EXPECT_EQ(first, static_cast<int64_t>(chunked.size()) / cfg_.vocab_size);
    chunked.insert(chunked.end(), logits, logits + n * cfg_.vocab_size);
  });
  model::KvCache cache;
  cache.Allocate(cfg_, static_cast<int64_t>(toks.size()));
  model::InferState st;
  tf_.Infer(w_, toks.data(), static_cast<int64_t>(toks.size()), cache, st, ctx_, true);
  const auto lv = st.logits.view<const float>();
  ASSERT_EQ(static_cast<int64_t>(chunked.size()), lv.numel());
  for (int64_t i = 0; i < lv.numel(); ++i)
    EXPECT_NEAR(chunked[static_cast<size_t>(i)], lv.data[i], 1e-4) << i;
}

// -log p(tokens[j] | tokens[from..j)) by a fresh full forward.
double Nll(const model::Transformer& tf, const model::ModelWeights& w,
           const std::vector<int32_t>& toks, size_t from, size_t j, Context& ctx) {
  std::vector<int32_t> ctx_toks(toks.begin() + static_cast<std::ptrdiff_t>(from),
                                toks.begin() + static_cast<std::ptrdiff_t>(j));
  model::KvCache cache;
  cache.Allocate(tf.config(), static_cast<int64_t>(ctx_toks.size()));
  model::InferState st;
  tf.Infer(w, ctx_toks.data(), static_cast<int64_t>(ctx_toks.size()), cache, st, ctx);
  const auto lv = st.logits.view<const float>();
  double mx = -1e30, sum = 0;
  for (int64_t v = 0; v < lv.numel(); ++v) mx = std::max(mx, static_cast<double>(lv.data[v]));
  for (int64_t v = 0; v < lv.numel(); ++v) sum += std::exp(lv.data[v] - mx);
  return mx + std::log(sum) - lv.data[toks[j]];
}

TEST_F(GeneratorTest, StridedPerplexityScoresEveryTokenOnceWithItsWindow) {
  const auto toks = Ids("perplexity of a short text, strided");
  const size_t n = toks.size();
  Generator g(tf_, w_, tok_, ctx_);
  // One window over everything: every token with its full prefix.
  double full = 0;
  for (size_t j = 1; j < n; ++j) full += Nll(tf_, w_, toks, 0, j, ctx_);
  const PerplexityResult a = StridedPerplexity(g, toks, 64, 64);
  EXPECT_EQ(a.predicted, static_cast<int64_t>(n) - 1);
  EXPECT_EQ(a.windows, 1);
  EXPECT_NEAR(a.nll, full, 1e-3);
  EXPECT_NEAR(a.Perplexity(), std::exp(full / static_cast<double>(n - 1)), 1e-3);
  // Stride 1, window 6: token j >= 6 is predicted from exactly the 5 tokens before it.
  double sliding = 0;
  for (size_t j = 1; j < n; ++j) sliding += Nll(tf_, w_, toks, j >= 6 ? j - 5 : 0, j, ctx_);
  const PerplexityResult b = StridedPerplexity(g, toks, 6, 1);
  EXPECT_EQ(b.predicted, static_cast<int64_t>(n) - 1);
  EXPECT_EQ(b.windows, static_cast<int64_t>(n) - 5);
  EXPECT_NEAR(b.nll, sliding, 1e-3);
  // Disjoint windows of 8: the first token of each later window gets no context.
  const PerplexityResult c = StridedPerplexity(g, toks, 8, 8);
  EXPECT_EQ(c.predicted, static_cast<int64_t>(n - 1 - (n - 1) / 8));
  double expect_c = 0;
  for (size_t j = 1; j < n; ++j)
    if (j % 8 != 0) expect_c += Nll(tf_, w_, toks, j / 8 * 8, j, ctx_);
  EXPECT_NEAR(c.nll, expect_c, 1e-3);
  EXPECT_THAT([&] { StridedPerplexity(g, toks, 6, 7); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("stride")));
  EXPECT_THAT([&] { StridedPerplexity(g, toks, 1000, 10); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("context")));
}

TEST_F(GeneratorTest, BadOptionsAndPromptsAreErrors) {
  Generator g(tf_, w_, tok_, ctx_);
  GenerateOptions o;
  EXPECT_THAT([&] { g.Generate({}, o); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("prompt is empty")));
  const std::vector<int32_t> bad = {1, 300};
  EXPECT_THAT([&] { g.Generate(bad, o); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("outside the vocabulary")));
  o.max_tokens = -1;
  EXPECT_THAT([&] { g.Generate(Ids("a"), o); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("max_tokens")));
  o.max_tokens = 1;
  o.stop = {""};
  EXPECT_THAT([&] { g.Generate(Ids("a"), o); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("stop string")));
  EXPECT_THAT([&] { Generator(tf_, w_, tok_, ctx_, 1000); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("max_position_embeddings")));
}

}  // namespace
}  // namespace moe::generate

namespace moe::generate {
namespace {

TEST(GenerationConfig, ReadsEosListsAndSamplingDefaults) {
  SamplerOptions so;
  std::vector<int32_t> eos;
  ReadGenerationConfig(
      R"({"eos_token_id":[151645,151643],"do_sample":true,"temperature":0.7,"top_p":0.8,
                          "top_k":20,"repetition_penalty":1.05})",
      "g.json", so, eos);
  EXPECT_EQ(eos, (std::vector<int32_t>{151645, 151643}));
  EXPECT_DOUBLE_EQ(so.temperature, 0.7);
  EXPECT_DOUBLE_EQ(so.top_p, 0.8);
  EXPECT_EQ(so.top_k, 20);
  EXPECT_DOUBLE_EQ(so.repetition_penalty, 1.05);
  SamplerOptions greedy;
  std::vector<int32_t> eos2{2};
  ReadGenerationConfig(R"({"eos_token_id":2,"temperature":0.6})", "g.json", greedy, eos2);
  EXPECT_EQ(greedy.temperature, 0.0);  // do_sample absent: greedy, as Hugging Face does
  EXPECT_EQ(eos2, std::vector<int32_t>{2});
  using ::testing::HasSubstr;
  using ::testing::ThrowsMessage;
  EXPECT_THAT([&] { ReadGenerationConfig("{", "g.json", so, eos); },
              ThrowsMessage<Error>(HasSubstr("g.json: not valid JSON")));
  EXPECT_THAT([&] { ReadGenerationConfig(R"({"eos_token_id":"x"})", "g.json", so, eos); },
              ThrowsMessage<Error>(HasSubstr("eos_token_id")));
  EXPECT_THAT(
      [&] { ReadGenerationConfig(R"({"do_sample":true,"temperature":"hot"})", "g.json", so, eos); },
      ThrowsMessage<Error>(HasSubstr("'temperature' must be a number")));
  EXPECT_THAT([&] { ReadGenerationConfig(R"({"do_sample":true,"top_p":7})", "g.json", so, eos); },
              ThrowsMessage<Error>(HasSubstr("g.json")));
}

TEST(ModelDirTest, MissingFoldersAndConfigsAreClearErrors) {
  using ::testing::HasSubstr;
  using ::testing::ThrowsMessage;
  EXPECT_THAT([] { OpenModelDir("/nonexistent/model"); },
              ThrowsMessage<Error>(HasSubstr("does not exist")));
  EXPECT_THAT([] { OpenModelDir(MOE_TEST_DATA_DIR); },
              ThrowsMessage<Error>(HasSubstr("no config.json")));
}

TEST(ModelDirTest, FolderLargerThanMemoryPointsToQuantize) {
  using ::testing::HasSubstr;
  using ::testing::ThrowsMessage;
  const std::string dir = std::string(MOE_TEST_DATA_DIR) + "/arch/mixtral";
  EXPECT_NO_THROW(CheckFolderFitsInMemory(dir, 1e12));
  EXPECT_THAT([&] { CheckFolderFitsInMemory(dir, 1000.0); },
              ThrowsMessage<Error>(HasSubstr("moe quantize " + dir)));
}

}  // namespace
}  // namespace moe::generate
