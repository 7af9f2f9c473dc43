// `moe train`, `moe eval`, `moe generate` and `moe demo`: train a small MoE language model on the
// built-in multi-domain corpus or the user's text files, evaluate it with a routing report, and
// sample from it.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/core/context.h"
#include "moe/core/cpu.h"
#include "moe/core/error.h"
#include "moe/generate/sampler.h"
#include "moe/io/file.h"
#include "moe/kernels/roofline.h"
#include "moe/model/checkpoint.h"
#include "moe/train/corpus.h"
#include "moe/train/dataset.h"
#include "moe/train/run_report.h"
#include "moe/train/trainer.h"
#include "tools/commands.h"

namespace moe::cli {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnSigint(int) {
  g_stop.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}

struct DataOptions {
  std::vector<std::string> files;  // empty = built-in corpus
  uint64_t corpus_seed = 1;
  int64_t corpus_samples = 20000;
  double val_fraction = 0.1;

  nlohmann::json ToJson() const {
    return {{"files", files}, {"corpus_seed", corpus_seed}, {"corpus_samples", corpus_samples},
            {"val_fraction", val_fraction}};
  }
  static DataOptions FromJson(const nlohmann::json& j) {
    DataOptions d;
    d.files = j.at("files").get<std::vector<std::string>>();
    d.corpus_seed = j.at("corpus_seed");
    d.corpus_samples = j.at("corpus_samples");
    d.val_fraction = j.at("val_fraction");
    return d;
  }
};

std::shared_ptr<const train::Dataset> MakeDataset(const DataOptions& d) {
  if (!d.files.empty()) {
    train::TextDataOptions o;
    o.val_fraction = d.val_fraction;
    return std::make_shared<train::Dataset>(train::LoadTextFiles(d.files, o));
  }
  train::CorpusOptions o;
  o.seed = d.corpus_seed;
  o.train_samples = d.corpus_samples;
  o.val_samples = std::max<int64_t>(200, d.corpus_samples / 20);
  return std::make_shared<train::Dataset>(train::BuiltinDataset(o));
}

void AddDataOptions(CLI::App* cmd, DataOptions& d) {
  cmd->add_option("--data", d.files, "Text files to train on (each file is one domain); default: the built-in corpus");
  cmd->add_option("--corpus-seed", d.corpus_seed, "Seed of the built-in corpus")->capture_default_str();
  cmd->add_option("--corpus-samples", d.corpus_samples, "Training samples of the built-in corpus")
      ->capture_default_str()->check(CLI::Range(int64_t{100}, int64_t{10000000}));
  cmd->add_option("--val-fraction", d.val_fraction, "Held-out share of each --data file")
      ->capture_default_str()->check(CLI::Range(0.01, 0.5));
}

std::string Duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  return t >= 60 ? fmt::format("{}m{:02d}s", t / 60, t % 60) : fmt::format("{}s", t);
}

struct TrainCli {
  std::string preset = "tiny";
  std::string config_path;  // config.json overrides the preset
  std::string out = "runs/tiny";
  bool resume = false;
  int threads = 0;
  DataOptions data;
  train::TrainOptions opt;
  // Router overrides.
  std::string router, score;
  int64_t experts = 0, expert_ff = 0, top_k = 0, shared_ff = 0, groups = 0, topk_groups = 0, moe_every = -1;
  double capacity = -1, aux = -1, z = -1, jitter = -1, bias_rate = -1, route_scale = -1;
  int renorm = -1;
  bool quiet = false;
};

model::ModelConfig BuildConfig(const TrainCli& c) {
  model::ModelConfig cfg;
  if (!c.config_path.empty()) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(io::ReadFile(c.config_path, 16 << 20));
    } catch (const nlohmann::json::exception& e) {
      Fail("train", "{}: malformed JSON: {}", c.config_path, e.what());
    }
    cfg = model::FromHfJson(j, c.config_path);
  } else {
    cfg = model::ModelPreset(c.preset);
  }
  auto& m = cfg.moe;
  if (!c.router.empty()) m.router = mixture::ParseRouterKind(c.router);
  if (!c.score.empty()) m.score = mixture::ParseScoreFn(c.score);
  if (c.experts > 0) m.n_experts = c.experts;
  if (c.expert_ff > 0) m.d_ff = c.expert_ff;
  if (c.top_k > 0) m.top_k = c.top_k;
  if (c.shared_ff >= 0 && c.shared_ff != 0) m.shared_d_ff = c.shared_ff;
  if (c.groups > 0) m.n_groups = c.groups;
  if (c.topk_groups > 0) m.topk_groups = c.topk_groups;
  if (c.moe_every >= 0) cfg.moe_every = c.moe_every;
  if (c.capacity >= 0) m.capacity_factor = c.capacity;
  if (c.aux >= 0) m.aux_loss_coef = c.aux;
  if (c.z >= 0) m.z_loss_coef = c.z;
  if (c.jitter >= 0) m.jitter = c.jitter;
  if (c.route_scale > 0) m.route_scale = c.route_scale;
  if (c.bias_rate >= 0) {
    m.bias_update_rate = c.bias_rate;
    m.selection_bias = c.bias_rate > 0 || m.selection_bias;
  }
  if (c.renorm >= 0) m.renormalize = c.renorm != 0;
  if (m.router == mixture::RouterKind::kExpertChoice) {
    m.renormalize = false;
    if (m.capacity_factor <= 0) m.capacity_factor = 1.0;
  }
  cfg.Finalize();
  return cfg;
}

void PrintStep(const train::Trainer& t, const train::StepRecord& r, double start, bool tty) {
  const int64_t done = r.step + 1, total = t.options().steps;
  const double el = kernels::NowSeconds() - start;
  double eta = done > 0 ? el / static_cast<double>(done - (t.history().empty() ? 0 : 0)) * static_cast<double>(total - done) : 0;
  if (t.options().time_limit_s > 0) eta = std::min(eta, std::max(0.0, t.options().time_limit_s - el));
  const std::string line = fmt::format("step {:>5}/{} | loss {:.4f} | aux {:.4f} | lr {:.2e} | |g| {:.2f} | {:.1f}k tok/s | "
                                       "load max/mean {:.2f} | ETA {}",
                                       done, total, r.loss, r.aux, r.lr, r.grad_norm, r.tokens_per_s / 1e3, r.imbalance,
                                       Duration(eta));
  if (tty) {
    std::printf("\r%-118s", line.c_str());
  } else if (done % std::max<int64_t>(1, t.options().log_every) == 0 || done == total) {
    std::printf("%s\n", line.c_str());
  }
  std::fflush(stdout);
}

// Runs training with progress, Ctrl-C handling and pictures. Returns the trainer.
std::unique_ptr<train::Trainer> RunTraining(const TrainCli& c, bool demo) {
  if (c.opt.bf16) CheckBf16Matmul("train");  // before building the data
  Context ctx({.threads = c.threads});
  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  std::shared_ptr<const train::Dataset> data;
  std::unique_ptr<train::Trainer> t;
  const std::string run_json = c.out + "/run.json";
  if (c.resume) {
    MOE_CHECK(io::PathExists(run_json), "train", "--resume: {} not found (is {} a run folder?)", run_json, c.out);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(io::ReadFile(run_json));
    } catch (const nlohmann::json::exception& e) {
      Fail("train", "{}: malformed JSON: {}", run_json, e.what());
    }
    data = MakeDataset(DataOptions::FromJson(j.at("data")));
    t = train::Trainer::Resume(c.out, data, &c.opt, ctx);
    std::printf("resuming %s at step %lld of %lld\n", c.out.c_str(), static_cast<long long>(t->step()),
                static_cast<long long>(t->options().steps));
  } else {
    const model::ModelConfig cfg = BuildConfig(c);
    std::printf("building the data ...\n");
    std::fflush(stdout);
    data = MakeDataset(c.data);
    io::MakeDirs(c.out);
    io::WriteFileAtomic(run_json, nlohmann::json{{"data", c.data.ToJson()}}.dump(2) + "\n");
    t = std::make_unique<train::Trainer>(cfg, c.opt, data, c.out, ctx);
  }
  const auto& cfg = t->config();
  std::printf("model: %s\n", cfg.Summary().c_str());
  if (cfg.NumMoeLayers() > 0) std::printf("router: %s\n", cfg.moe.ToString().c_str());
  std::printf("data: %s: %lld training / %lld validation tokens, domains:", c.data.files.empty() ? "built-in corpus" : "files",
              static_cast<long long>(data->train.size()), static_cast<long long>(data->val.size()));
  for (const auto& d : data->domain_names) std::printf(" %s", d.c_str());
  std::printf("\ntraining: %lld steps x %lld x %lld tokens%s, lr %.2g, %d threads%s -> %s\n",
              static_cast<long long>(t->options().steps), static_cast<long long>(t->options().batch),
              static_cast<long long>(t->options().seq_len),
              t->options().grad_accum > 1 ? fmt::format(" x {} accum", t->options().grad_accum).c_str() : "",
              t->options().lr, ctx.threads(), t->options().bf16 ? ", bf16 matmuls" : "", c.out.c_str());
  if (t->options().time_limit_s > 0) std::printf("time limit: %s\n", Duration(t->options().time_limit_s).c_str());
  std::fflush(stdout);
  const double start = kernels::NowSeconds();
  t->on_step = [&](const train::StepRecord& r) {
    if (!c.quiet) PrintStep(*t, r, start, tty);
  };
  t->on_eval = [&](const train::EvalResult& e) {
    if (c.quiet) return;
    if (tty) std::printf("\n");
    std::printf("  eval @ %lld: val loss %.4f (ppl %.3f)\n", static_cast<long long>(e.step), e.loss, e.perplexity);
    std::fflush(stdout);
  };
  t->on_plan = [&](int64_t steps, double per_step) {
    if (tty) std::printf("\n");
    std::printf("  %.2f s/step here: %lld steps fit the time limit\n", per_step, static_cast<long long>(steps));
  };
  g_stop.store(false);
  auto old = std::signal(SIGINT, OnSigint);
  try {
    t->Run(&g_stop);
  } catch (...) {
    std::signal(SIGINT, old);
    if (tty) std::printf("\n");
    throw;
  }
  std::signal(SIGINT, old);
  if (tty) std::printf("\n");
  const double el = kernels::NowSeconds() - start;
  if (g_stop.load()) std::printf("interrupted at step %lld: checkpoint saved\n", static_cast<long long>(t->step()));
  std::printf("trained %lld steps in %s; checkpoint: %s\n", static_cast<long long>(t->step()), Duration(el).c_str(),
              train::LatestCheckpoint(c.out).c_str());
  const auto pics = train::WriteRunPictures(c.out, t->config(), t->history(), t->evals());
  if (!demo) {
    std::printf("\n%s", train::RenderEval(t->evals().back(), false).c_str());
    if (!t->evals().back().routing.empty()) std::printf("%s", train::RenderRoutingSummary(t->evals().back()).c_str());
    std::printf("pictures:");
    for (const auto& p : pics) std::printf(" %s", p.c_str());
    std::printf("\n");
  }
  return t;
}

void AddTrainOptions(CLI::App* cmd, TrainCli& c) {
  auto& o = c.opt;
  cmd->add_option("--preset", c.preset, "Model shape: " + model::ModelPresetNames())->capture_default_str();
  cmd->add_option("--config", c.config_path, "A config.json (Mixtral layout + moe keys) instead of --preset");
  cmd->add_option("--out,-o", c.out, "Run folder (checkpoints, pictures)")->capture_default_str();
  cmd->add_option("--steps", o.steps, "Optimiser steps")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{100000000}));
  cmd->add_option("--batch", o.batch, "Sequences per micro-batch")->capture_default_str();
  cmd->add_option("--seq", o.seq_len, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--accum", o.grad_accum, "Gradient accumulation micro-batches")->capture_default_str();
  cmd->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o.min_lr_ratio, "Final lr as a share of the peak")->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "Linear warmup steps")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_flag("--decay-all", o.decay_norms_and_embeddings, "Also decay norms and embeddings");
  cmd->add_option("--clip", o.clip, "Max global gradient norm (0 = off)")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed (weights, data order, jitter)")->capture_default_str();
  cmd->add_option("--eval-every", o.eval_every, "Evaluate every N steps (0 = at the end)")->capture_default_str();
  cmd->add_option("--eval-rows", o.eval_rows, "Validation rows per evaluation")->capture_default_str();
  cmd->add_option("--ckpt-every", o.ckpt_every, "Checkpoint every N steps (0 = at the end)")->capture_default_str();
  cmd->add_option("--time-limit", o.time_limit_s, "Stop, evaluate and save after this many seconds (0 = none)");
  cmd->add_option("--threads", c.threads, "Threads (0 = all cores or MOE_THREADS)");
  cmd->add_flag("--bf16", o.bf16,
                "Mixed precision: bf16 matrix products with f32 accumulation, f32 weights (needs AVX512-BF16; "
                "a resumed run keeps its own setting)");
  cmd->add_flag("--quiet", c.quiet, "No progress line");
  // Router and MoE options (override the preset / config).
  cmd->add_option("--router", c.router, "token_choice | expert_choice");
  cmd->add_option("--score", c.score, "softmax | sigmoid");
  cmd->add_option("--experts", c.experts, "Routed experts E");
  cmd->add_option("--expert-ff", c.expert_ff, "Hidden size F of each routed expert");
  cmd->add_option("--top-k", c.top_k, "Experts per token K (and expert-choice capacity)");
  cmd->add_option("--renorm", c.renorm, "Renormalise the top-K gates (1/0)");
  cmd->add_option("--route-scale", c.route_scale, "Multiply routed gates");
  cmd->add_option("--shared-ff", c.shared_ff, "Hidden size of a shared expert (0 = none)");
  cmd->add_option("--groups", c.groups, "Expert groups G (group-limited selection)");
  cmd->add_option("--topk-groups", c.topk_groups, "Groups a token may use");
  cmd->add_option("--capacity-factor", c.capacity, "Capacity factor (0 = dropless)");
  cmd->add_option("--aux-loss", c.aux, "Load-balancing loss coefficient");
  cmd->add_option("--z-loss", c.z, "Router z-loss coefficient");
  cmd->add_option("--jitter", c.jitter, "Router input jitter in training");
  cmd->add_option("--bias-update-rate", c.bias_rate, "Aux-loss-free balancing rate gamma (enables the selection bias)");
  cmd->add_option("--moe-every", c.moe_every, "MoE FFN every N-th layer, dense between (0 = dense model)");
  AddDataOptions(cmd, c.data);
}

// Byte-level prompts: the separator starts a sample; generation stops at the next separator.
std::vector<int32_t> PromptTokens(const std::string& prompt) {
  std::vector<int32_t> t{train::kSepToken};
  for (unsigned char ch : prompt) t.push_back(ch);
  return t;
}

std::string Generate(const model::Transformer& tf, const model::ModelWeights& w, const std::string& prompt,
                     int64_t max_tokens, const generate::SamplerOptions& so, Context& ctx, bool stream,
                     double* tok_per_s = nullptr) {
  std::vector<int32_t> toks = PromptTokens(prompt);
  const int64_t cap = std::min<int64_t>(tf.config().max_seq, static_cast<int64_t>(toks.size()) + max_tokens);
  MOE_CHECK(static_cast<int64_t>(toks.size()) < tf.config().max_seq, "generate",
            "the prompt has {} tokens; the model's context is {}", toks.size(), tf.config().max_seq);
  model::KvCache cache;
  cache.Allocate(tf.config(), cap);
  model::InferState st;
  generate::Sampler sampler(so);
  tf.Infer(w, toks.data(), static_cast<int64_t>(toks.size()), cache, st, ctx);
  std::string out;
  const double t0 = kernels::NowSeconds();
  int64_t n = 0;
  while (true) {
    const auto lv = st.logits.view<const float>();
    const int32_t next = sampler.Sample({lv.data, static_cast<size_t>(lv.numel())}, toks);
    if (next == train::kSepToken || next == train::kPadToken || next >= 256) break;
    toks.push_back(next);
    out.push_back(static_cast<char>(next));
    ++n;
    if (stream) {
      std::fputc(next, stdout);
      std::fflush(stdout);
    }
    if (cache.length >= cap || n >= max_tokens) break;
    tf.Infer(w, &toks.back(), 1, cache, st, ctx);
  }
  if (tok_per_s != nullptr) *tok_per_s = n > 0 ? static_cast<double>(n) / (kernels::NowSeconds() - t0) : 0.0;
  return out;
}

// Prompt of a demo sample: the text up to its answer ("=", "->", "is", ...), or its first third.
std::string PromptOf(const std::string& text) {
  for (const char* cut : {" -> ", " = ", "=", " is "}) {
    const size_t p = text.find(cut);
    if (p != std::string::npos && p > 0) return text.substr(0, p + std::strlen(cut));
  }
  return text.substr(0, std::max<size_t>(8, text.size() / 3));
}

void PrintGenerations(const model::Transformer& tf, const model::ModelWeights& w, Context& ctx, uint64_t seed,
                      int per_domain) {
  Rng rng(seed);
  generate::SamplerOptions so;  // greedy
  const auto names = train::DomainNames();
  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  const char* bold = tty ? "\033[1m" : "[";
  const char* plain = tty ? "\033[0m" : "]";
  int exact = 0, total = 0;
  for (int d = 0; d < train::NumDomains(); ++d) {
    for (int i = 0; i < per_domain; ++i) {
      train::Sample s = train::GenerateSample(d, rng);
      // Held-out lines only (never in the training split).
      for (int tries = 0; tries < 1000 && !train::IsHeldOut(s.text, 0.1); ++tries) s = train::GenerateSample(d, rng);
      const std::string prompt = PromptOf(s.text);
      const std::string want = s.text.substr(prompt.size());
      const std::string got = Generate(tf, w, prompt, static_cast<int64_t>(want.size()) + 16, so, ctx, false);
      exact += got == want ? 1 : 0;
      ++total;
      std::printf("  %-8s %s%s%s%s%s\n", std::string(names[static_cast<size_t>(d)]).c_str(), prompt.c_str(), bold,
                  got.c_str(), plain, got == want ? "   ✓" : "");
    }
  }
  std::printf("  exactly right: %d of %d\n", exact, total);
}

}  // namespace

void AddTrainCommands(CLI::App& root) {
  // moe train
  {
    auto c = std::make_shared<TrainCli>();
    auto* cmd = root.add_subcommand("train", "Train an MoE (or dense) language model on text");
    AddTrainOptions(cmd, *c);
    cmd->add_flag("--resume", c->resume, "Continue the run in --out from its newest checkpoint (bit-identical)");
    cmd->callback([c] { RunTraining(*c, false); });
  }
  // moe demo
  {
    auto c = std::make_shared<TrainCli>();
    c->out = "runs/demo";
    c->opt.time_limit_s = 210;
    c->opt.fit_steps_to_time = true;
    c->opt.steps = 3000;
    c->opt.eval_every = 200;
    c->opt.ckpt_every = 0;
    auto* cmd = root.add_subcommand("demo", "Train a tiny MoE on the built-in corpus (a few minutes), then show what the experts learned");
    cmd->add_option("--out,-o", c->out, "Run folder")->capture_default_str();
    cmd->add_option("--time-limit", c->opt.time_limit_s, "Training time budget in seconds")->capture_default_str();
    cmd->add_option("--steps", c->opt.steps, "Maximum steps")->capture_default_str();
    cmd->add_option("--threads", c->threads, "Threads (0 = all cores)");
    cmd->callback([c] {
      std::printf("moe demo: a tiny Mixture-of-Experts language model learns %d kinds of text.\n"
                  "Each token is routed to 2 of 8 experts per layer; watch the experts specialise.\n\n",
                  train::NumDomains());
      auto t = RunTraining(*c, true);
      Context ctx({.threads = c->threads});
      const train::EvalResult& e = t->evals().back();
      std::printf("\n== evaluation ==\n%s", train::RenderEval(e, true).c_str());
      std::printf("\n== specialisation per layer ==\n%s", train::RenderRoutingSummary(e).c_str());
      std::printf("(NMI 0 = experts ignore the domain, 1 = each domain has its own experts)\n");
      std::printf("\n== generations (greedy; each prompt starts a held-out line never seen in training, the model's continuation is in bold or [brackets]; ✓ = exactly right) ==\n");
      model::Transformer tf(t->config());
      PrintGenerations(tf, t->weights(), ctx, 4242, 2);
      const auto pics = train::WriteRunPictures(c->out, t->config(), t->history(), t->evals());
      std::printf("\npictures (open in a browser):\n");
      for (const auto& p : pics) std::printf("  %s\n", p.c_str());
      std::printf("model: %s (Hugging Face Mixtral layout)\n", train::LatestCheckpoint(c->out).c_str());
      std::printf("try: moe generate --model %s --prompt \"sort 5 2 9 -> \"\n", c->out.c_str());
    });
  }
  // moe eval
  {
    auto model_dir = std::make_shared<std::string>();
    auto data = std::make_shared<DataOptions>();
    auto rows = std::make_shared<int64_t>(128);
    auto threads = std::make_shared<int>(0);
    auto token_choice = std::make_shared<bool>(false);
    auto* cmd = root.add_subcommand("eval", "Validation loss, perplexity per domain and the routing report of a model");
    cmd->add_option("--model,-m", *model_dir, "Run folder or checkpoint folder")->required();
    cmd->add_option("--rows", *rows, "Validation rows")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{100000}));
    cmd->add_option("--threads", *threads, "Threads (0 = all cores)");
    cmd->add_flag("--causal-routing", *token_choice, "Route expert-choice layers as token choice (as generation does)");
    AddDataOptions(cmd, *data);
    cmd->callback([=] {
      Context ctx({.threads = *threads});
      const std::string dir = train::LatestCheckpoint(*model_dir);
      model::LoadedModel lm = model::LoadModel(dir);
      DataOptions d = *data;
      const std::string run_json = *model_dir + "/run.json";
      if (d.files.empty() && io::PathExists(run_json)) d = DataOptions::FromJson(nlohmann::json::parse(io::ReadFile(run_json)).at("data"));
      const auto ds = MakeDataset(d);
      model::Transformer tf(lm.config);
      const int64_t seq = lm.config.max_seq;
      std::printf("model: %s\n%s\n", dir.c_str(), lm.config.Summary().c_str());
      train::EvalResult e = train::Evaluate(tf, lm.weights, *ds, seq, *rows, *token_choice, ctx);
      std::printf("%s", train::RenderEval(e, true).c_str());
      if (!e.routing.empty()) std::printf("\n%s", train::RenderRoutingSummary(e).c_str());
      if (lm.config.NumMoeLayers() > 0 && lm.config.moe.router == mixture::RouterKind::kExpertChoice && !*token_choice) {
        const train::EvalResult c2 = train::Evaluate(tf, lm.weights, *ds, seq, *rows, true, ctx);
        std::printf("\nexpert choice is not causal; routed causally (token choice, as generation does): "
                    "loss %.4f vs %.4f (+%.1f%%)\n", c2.loss, e.loss, 100.0 * (c2.loss / e.loss - 1.0));
      }
    });
  }
  // moe report
  {
    auto runs = std::make_shared<std::vector<std::string>>();
    auto names = std::make_shared<std::vector<std::string>>();
    auto svg = std::make_shared<std::string>("comparison.svg");
    auto title = std::make_shared<std::string>("Validation loss");
    auto* cmd = root.add_subcommand("report", "Compare training runs: validation-loss curves (SVG) and a Markdown table");
    cmd->add_option("runs", *runs, "Run folders")->required();
    cmd->add_option("--names", *names, "Labels of the runs (default: folder names)");
    cmd->add_option("--svg", *svg, "Where to write the chart")->capture_default_str();
    cmd->add_option("--title", *title, "Chart title")->capture_default_str();
    cmd->callback([=] {
      MOE_CHECK(names->empty() || names->size() == runs->size(), "report", "{} names for {} runs", names->size(),
                runs->size());
      std::vector<train::RunSummary> rs;
      for (size_t i = 0; i < runs->size(); ++i)
        rs.push_back(train::ReadRunSummary((*runs)[i], names->empty() ? "" : (*names)[i]));
      train::WriteRunComparison(rs, *svg, *title);
      std::printf("%s\nchart: %s\n", train::RunComparisonTable(rs).c_str(), svg->c_str());
    });
  }
  // moe generate
  {
    auto model_dir = std::make_shared<std::string>();
    auto prompt = std::make_shared<std::string>();
    auto max_tokens = std::make_shared<int64_t>(100);
    auto threads = std::make_shared<int>(0);
    auto so = std::make_shared<generate::SamplerOptions>();
    auto* cmd = root.add_subcommand("generate", "Continue a prompt with a model trained by moe train (byte level)");
    cmd->add_option("--model,-m", *model_dir, "Run folder or checkpoint folder")->required();
    cmd->add_option("--prompt,-p", *prompt, "Prompt text")->required();
    cmd->add_option("--max-tokens,-n", *max_tokens, "Tokens to generate at most")->capture_default_str();
    cmd->add_option("--temperature", so->temperature, "0 = greedy")->capture_default_str();
    cmd->add_option("--top-k", so->top_k, "Keep the K most likely tokens (0 = off)")->capture_default_str();
    cmd->add_option("--top-p", so->top_p, "Nucleus sampling (1 = off)")->capture_default_str();
    cmd->add_option("--min-p", so->min_p, "Drop tokens below min_p x the best (0 = off)")->capture_default_str();
    cmd->add_option("--repetition-penalty", so->repetition_penalty, "1 = off")->capture_default_str();
    cmd->add_option("--seed", so->seed, "Sampling seed")->capture_default_str();
    cmd->add_option("--threads", *threads, "Threads (0 = all cores)");
    cmd->callback([=] {
      so->Validate();
      Context ctx({.threads = *threads});
      model::LoadedModel lm = model::LoadModel(train::LatestCheckpoint(*model_dir));
      model::Transformer tf(lm.config);
      std::printf("%s", prompt->c_str());
      double tps = 0;
      Generate(tf, lm.weights, *prompt, *max_tokens, *so, ctx, true, &tps);
      std::printf("\n[%.1f tokens/s]\n", tps);
    });
  }
}

}  // namespace moe::cli
