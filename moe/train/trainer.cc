#include "moe/train/trainer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "moe/core/cpu.h"
#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/io/safetensors.h"
#include "moe/kernels/adamw.h"
#include "moe/kernels/roofline.h"
#include "moe/model/checkpoint.h"

namespace moe::train {

namespace {

constexpr std::string_view kTag = "train";

uint64_t Mix(uint64_t a, uint64_t b, uint64_t c = 0) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull ^
               (c + 0x85EBCA77C2B2AE63ull) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return x;
}

// Model rows from data rows [B, S+1]: inputs [:, :S], targets [:, 1:] (padding is not a target).
model::Batch ToModelBatch(const TokenBatch& tb) {
  model::Batch b;
  b.batch = tb.batch;
  b.seq = tb.seq_len;
  b.tokens.resize(static_cast<size_t>(tb.batch * tb.seq_len));
  b.targets.resize(b.tokens.size());
  for (int64_t r = 0; r < tb.batch; ++r) {
    const int32_t* row = tb.row(r);
    for (int64_t t = 0; t < tb.seq_len; ++t) {
      const size_t i = static_cast<size_t>(r * tb.seq_len + t);
      b.tokens[i] = row[t];
      b.targets[i] = row[t + 1] == kPadToken ? -1 : row[t + 1];
    }
  }
  return b;
}

bool Decays(const TrainOptions& o, const std::string& name) {
  if (o.decay_norms_and_embeddings) return true;
  return !(name.ends_with("norm") || name == "embed");
}

std::vector<std::pair<std::string, Tensor*>> Params(model::ModelWeights& w) {
  std::vector<std::pair<std::string, Tensor*>> out;
  w.ForEachParameter([&](const std::string& n, Tensor& t) { out.push_back({n, &t}); });
  return out;
}

nlohmann::json OptionsJson(const TrainOptions& o) {
  return {{"steps", o.steps}, {"batch", o.batch}, {"seq_len", o.seq_len}, {"grad_accum", o.grad_accum},
          {"lr", o.lr}, {"min_lr_ratio", o.min_lr_ratio}, {"warmup", o.warmup},
          {"weight_decay", o.weight_decay}, {"decay_norms_and_embeddings", o.decay_norms_and_embeddings},
          {"beta1", o.beta1}, {"beta2", o.beta2}, {"eps", o.eps}, {"clip", o.clip}, {"seed", o.seed},
          {"eval_every", o.eval_every}, {"eval_rows", o.eval_rows}, {"ckpt_every", o.ckpt_every},
          {"keep_checkpoints", o.keep_checkpoints}, {"time_limit_s", o.time_limit_s}, {"log_every", o.log_every},
          {"bf16", o.bf16}};
}

TrainOptions OptionsFromJson(const nlohmann::json& j) {
  TrainOptions o;
  o.steps = j.at("steps");
  o.batch = j.at("batch");
  o.seq_len = j.at("seq_len");
  o.grad_accum = j.at("grad_accum");
  o.lr = j.at("lr");
  o.min_lr_ratio = j.at("min_lr_ratio");
  o.warmup = j.at("warmup");
  o.weight_decay = j.at("weight_decay");
  o.decay_norms_and_embeddings = j.at("decay_norms_and_embeddings");
  o.beta1 = j.at("beta1");
  o.beta2 = j.at("beta2");
  o.eps = j.at("eps");
  o.clip = j.at("clip");
  o.seed = j.at("seed");
  o.eval_every = j.at("eval_every");
  o.eval_rows = j.at("eval_rows");
  o.ckpt_every = j.at("ckpt_every");
  o.keep_checkpoints = j.at("keep_checkpoints");
  o.time_limit_s = j.at("time_limit_s");
  o.log_every = j.at("log_every");
  o.bf16 = j.value("bf16", false);  // absent in states written before mixed precision existed
  return o;
}

nlohmann::json RecordJson(const StepRecord& r) {
  return {{"step", r.step}, {"loss", r.loss}, {"aux", r.aux}, {"lr", r.lr}, {"grad_norm", r.grad_norm},
          {"tokens_per_s", r.tokens_per_s}, {"imbalance", r.imbalance}, {"load", r.load}};
}

StepRecord RecordFromJson(const nlohmann::json& j) {
  StepRecord r;
  r.step = j.at("step");
  r.loss = j.at("loss");
  r.aux = j.at("aux");
  r.lr = j.at("lr");
  r.grad_norm = j.at("grad_norm");
  r.tokens_per_s = j.at("tokens_per_s");
  r.imbalance = j.at("imbalance");
  r.load = j.at("load").get<std::vector<std::vector<int64_t>>>();
  return r;
}

nlohmann::json EvalJson(const EvalResult& e) {
  nlohmann::json d = nlohmann::json::array();
  for (const auto& x : e.domains) d.push_back({{"name", x.name}, {"loss", x.loss}, {"tokens", x.tokens}});
  nlohmann::json nmi = nlohmann::json::array();
  for (const auto& r : e.routing) nmi.push_back(r.Summarize().info.nmi);
  return {{"step", e.step}, {"loss", e.loss}, {"tokens", e.tokens}, {"domains", d}, {"nmi", nmi}};
}

EvalResult EvalFromJson(const nlohmann::json& j) {
  EvalResult e;
  e.step = j.at("step");
  e.loss = j.at("loss");
  e.perplexity = std::exp(e.loss);
  e.tokens = j.at("tokens");
  for (const auto& d : j.at("domains")) e.domains.push_back({d.at("name"), d.at("loss"), d.at("tokens")});
  return e;
}

// FNV-1a of the training tokens: a resumed run must see the same data.
uint64_t Fingerprint(const Dataset& d) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](int32_t v) {
    h ^= static_cast<uint32_t>(v);
    h *= 1099511628211ull;
  };
  for (int32_t t : d.train.tokens) mix(t);
  mix(-7);
  for (int32_t t : d.val.tokens) mix(t);
  return h;
}

}  // namespace

double LearningRate(const TrainOptions& o, int64_t step) {
  if (o.warmup > 0 && step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup));
  const double p = std::clamp(static_cast<double>(step - o.warmup) / span, 0.0, 1.0);
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * 0.5 * (1.0 + std::cos(M_PI * p)));
}

EvalResult Evaluate(const model::Transformer& tf, const model::ModelWeights& w, const Dataset& data,
                    int64_t seq_len, int64_t rows, bool causal_routing, Context& ctx) {
  const model::ModelConfig& cfg = tf.config();
  MOE_CHECK(data.val.size() >= 2, kTag, "the validation split is empty (need at least 2 tokens)");
  const TokenBatch all = PackSequential(data.val, seq_len, rows);
  EvalResult out;
  const size_t nd = data.domain_names.size();
  std::vector<double> dloss(nd, 0.0);
  std::vector<int64_t> dcount(nd, 0);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    if (!cfg.IsMoeLayer(l)) continue;
    out.routing.emplace_back(data.domain_names, static_cast<int>(cfg.moe.n_experts));
    out.moe_layers.push_back(l);
  }
  double total = 0;
  int64_t count = 0;
  model::ForwardState<float> st;
  const int64_t chunk = 16;
  for (int64_t r0 = 0; r0 < all.batch; r0 += chunk) {
    TokenBatch tb;
    tb.batch = std::min(chunk, all.batch - r0);
    tb.seq_len = all.seq_len;
    const size_t w1 = static_cast<size_t>(all.seq_len + 1);
    tb.tokens.assign(all.tokens.begin() + static_cast<std::ptrdiff_t>(r0 * w1),
                     all.tokens.begin() + static_cast<std::ptrdiff_t>((r0 + tb.batch) * w1));
    tb.domains.assign(all.domains.begin() + static_cast<std::ptrdiff_t>(r0 * w1),
                      all.domains.begin() + static_cast<std::ptrdiff_t>((r0 + tb.batch) * w1));
    const model::Batch b = ToModelBatch(tb);
    tf.Forward<float>(w, b, st, ctx, {.training = false, .seed = 0, .causal_routing = causal_routing});
    const auto rl = st.row_loss.view<const float>();
    std::vector<int32_t> in_dom(static_cast<size_t>(tb.batch * tb.seq_len));
    for (int64_t r = 0; r < tb.batch; ++r) {
      for (int64_t t = 0; t < tb.seq_len; ++t) {
        const size_t i = static_cast<size_t>(r * tb.seq_len + t);
        in_dom[i] = tb.row_domains(r)[t];
        if (b.targets[i] < 0) continue;
        const int32_t dom = tb.row_domains(r)[t + 1];
        total += rl[static_cast<int64_t>(i)];
        ++count;
        if (dom >= 0 && static_cast<size_t>(dom) < nd) {
          dloss[static_cast<size_t>(dom)] += rl[static_cast<int64_t>(i)];
          ++dcount[static_cast<size_t>(dom)];
        }
      }
    }
    for (size_t k = 0; k < out.moe_layers.size(); ++k) {
      const auto& plan = st.layers[static_cast<size_t>(out.moe_layers[k])].moe.plan;
      out.routing[k].Add(in_dom, plan.token, plan.expert, plan.dropped);
    }
  }
  out.loss = count > 0 ? total / static_cast<double>(count) : 0.0;
  out.perplexity = std::exp(out.loss);
  out.tokens = count;
  for (size_t dd = 0; dd < nd; ++dd) {
    out.domains.push_back({data.domain_names[dd], dcount[dd] > 0 ? dloss[dd] / static_cast<double>(dcount[dd]) : 0.0,
                           dcount[dd]});
  }
  return out;
}

Trainer::Trainer(const model::ModelConfig& cfg, const TrainOptions& opt, std::shared_ptr<const Dataset> data,
                 std::string out_dir, Context& ctx)
    : Trainer(cfg, opt, std::move(data), std::move(out_dir), ctx, true) {}

Trainer::Trainer(const model::ModelConfig& cfg, const TrainOptions& opt, std::shared_ptr<const Dataset> data,
                 std::string out_dir, Context& ctx, bool init)
    : cfg_(cfg), opt_(opt), data_(std::move(data)), out_dir_(std::move(out_dir)), ctx_(ctx), tf_(cfg) {
  MOE_CHECK(data_ != nullptr, kTag, "no dataset");
  MOE_CHECK(opt_.steps >= 1, kTag, "steps = {} must be >= 1", opt_.steps);
  MOE_CHECK(opt_.batch >= 1 && opt_.batch <= 4096, kTag, "batch = {} not in 1..4096", opt_.batch);
  MOE_CHECK(opt_.seq_len >= 2 && opt_.seq_len <= cfg_.max_seq, kTag, "seq_len = {} not in 2..max_seq ({})",
            opt_.seq_len, cfg_.max_seq);
  MOE_CHECK(opt_.grad_accum >= 1 && opt_.grad_accum <= 1024, kTag, "grad_accum = {} not in 1..1024", opt_.grad_accum);
  MOE_CHECK(std::isfinite(opt_.lr) && opt_.lr > 0 && opt_.lr < 10, kTag, "lr = {} not in (0, 10)", opt_.lr);
  MOE_CHECK(opt_.min_lr_ratio >= 0 && opt_.min_lr_ratio <= 1, kTag, "min_lr_ratio = {} not in [0, 1]", opt_.min_lr_ratio);
  MOE_CHECK(opt_.warmup >= 0, kTag, "warmup = {} must be >= 0", opt_.warmup);
  MOE_CHECK(opt_.weight_decay >= 0 && opt_.weight_decay < 1, kTag, "weight_decay = {} not in [0, 1)", opt_.weight_decay);
  MOE_CHECK(opt_.beta1 >= 0 && opt_.beta1 < 1 && opt_.beta2 >= 0 && opt_.beta2 < 1, kTag,
            "beta1 = {}, beta2 = {} must be in [0, 1)", opt_.beta1, opt_.beta2);
  MOE_CHECK(opt_.clip >= 0, kTag, "clip = {} must be >= 0", opt_.clip);
  MOE_CHECK(opt_.eval_rows >= 1, kTag, "eval_rows = {} must be >= 1", opt_.eval_rows);
  MOE_CHECK(opt_.keep_checkpoints >= 1, kTag, "keep_checkpoints = {} must be >= 1", opt_.keep_checkpoints);
  MOE_CHECK(cfg_.vocab_size >= kVocabSize, kTag, "vocab_size = {} is smaller than the byte vocabulary ({})",
            cfg_.vocab_size, kVocabSize);
  if (opt_.bf16) CheckBf16Matmul(kTag);
  MOE_CHECK(data_->train.size() >= opt_.seq_len + 1, kTag, "the training split has {} tokens, fewer than seq_len + 1 = {}",
            data_->train.size(), opt_.seq_len + 1);
  if (init) {
    Rng rng(Mix(opt_.seed, 0xC0FFEE));
    w_.InitRandom(cfg_, DType::kF32, rng);
  } else {
    w_.Allocate(cfg_, DType::kF32);
  }
  AllocateState();
}

void Trainer::AllocateState() {
  grad_.Allocate(cfg_, DType::kF32);
  m_.Allocate(cfg_, DType::kF32);
  v_.Allocate(cfg_, DType::kF32);
}

MatmulPrecision Trainer::Precision() const {
  return opt_.bf16 ? MatmulPrecision::kBf16 : MatmulPrecision::kF32;
}

StepRecord Trainer::Step() {
  const double t0 = kernels::NowSeconds();
  const ScopedMatmulPrecision precision(ctx_, Precision());
  auto params = Params(w_), grads = Params(grad_), ms = Params(m_), vs = Params(v_);
  for (auto& [n, g] : grads) g->SetZero();
  std::vector<int64_t> moe_layers;
  for (int64_t l = 0; l < cfg_.n_layers; ++l)
    if (cfg_.IsMoeLayer(l)) moe_layers.push_back(l);
  const int64_t ne = cfg_.moe.n_experts;
  std::vector<std::vector<int64_t>> selected(moe_layers.size(), std::vector<int64_t>(static_cast<size_t>(ne), 0));
  StepRecord rec;
  rec.step = step_;
  rec.load.assign(moe_layers.size(), std::vector<int64_t>(static_cast<size_t>(ne), 0));
  const double inv = 1.0 / static_cast<double>(opt_.grad_accum);
  for (int64_t micro = 0; micro < opt_.grad_accum; ++micro) {
    Rng rng(Mix(opt_.seed, static_cast<uint64_t>(step_), static_cast<uint64_t>(micro)));
    const model::Batch b = ToModelBatch(SampleBatch(data_->train, opt_.batch, opt_.seq_len, rng));
    const model::RunOptions ro{.training = true, .seed = Mix(opt_.seed ^ 0x5EED, static_cast<uint64_t>(step_),
                                                             static_cast<uint64_t>(micro))};
    // Errors inside the model (e.g. non-finite router logits) are reported with the step.
    auto guarded = [&](auto&& fn) {
      try {
        fn();
      } catch (const Error& e) {
        Fail(kTag, "step {}: {}; stopping without saving, the last checkpoint is kept", step_, e.what());
      }
    };
    guarded([&] { tf_.Forward<float>(w_, b, fs_, ctx_, ro); });
    MOE_CHECK(std::isfinite(fs_.ce_loss) && std::isfinite(fs_.aux_loss), kTag,
              "step {}: the loss is not finite (cross-entropy {}, aux {}); stopping without saving, the last "
              "checkpoint is kept. Try a lower --lr or a smaller --clip.",
              step_, fs_.ce_loss, fs_.aux_loss);
    rec.loss += fs_.ce_loss * inv;
    rec.aux += fs_.aux_loss * inv;
    guarded([&] { tf_.Backward<float>(w_, b, fs_, grad_, ctx_, ro, inv); });
    for (size_t k = 0; k < moe_layers.size(); ++k) {
      const auto& stats = fs_.layers[static_cast<size_t>(moe_layers[k])].moe.stats;
      for (int64_t e = 0; e < ne; ++e) {
        selected[k][static_cast<size_t>(e)] += stats.selected_per_expert[static_cast<size_t>(e)];
        rec.load[k][static_cast<size_t>(e)] += stats.tokens_per_expert[static_cast<size_t>(e)];
      }
    }
  }
  // Non-finite gradients: name the first tensor.
  for (auto& [name, g] : grads) {
    const auto gv = g->view<const float>();
    for (int64_t i = 0; i < gv.numel(); ++i) {
      MOE_CHECK(std::isfinite(gv[i]), kTag,
                "step {}: gradient of '{}' is not finite at element {} ({}); stopping without saving, the last "
                "checkpoint is kept",
                step_, name, i, gv[i]);
    }
  }
  std::vector<View<float>> gviews;
  for (auto& [n, g] : grads) gviews.push_back(g->view<float>());
  std::vector<CView<float>> gcviews(gviews.begin(), gviews.end());
  rec.grad_norm = kernels::GlobalGradNorm<float>(gcviews, ctx_);
  if (opt_.clip > 0 && rec.grad_norm > opt_.clip) kernels::ScaleGrads<float>(gviews, opt_.clip / rec.grad_norm, ctx_);
  rec.lr = LearningRate(opt_, step_);
  for (size_t i = 0; i < params.size(); ++i) {
    const kernels::AdamWOptions ao{.lr = rec.lr, .beta1 = opt_.beta1, .beta2 = opt_.beta2, .eps = opt_.eps,
                                   .weight_decay = Decays(opt_, params[i].first) ? opt_.weight_decay : 0.0};
    kernels::AdamWStep<float>(grads[i].second->view<const float>(), ao, step_ + 1, params[i].second->view<float>(),
                              ms[i].second->view<float>(), vs[i].second->view<float>(), ctx_);
  }
  if (cfg_.moe.bias_update_rate > 0) {
    for (size_t k = 0; k < moe_layers.size(); ++k)
      mixture::UpdateSelectionBias(cfg_.moe, selected[k], w_.layers[static_cast<size_t>(moe_layers[k])].moe.bias);
  }
  double imb = 0;
  for (const auto& load : rec.load) {
    double mx = 0, sum = 0;
    for (int64_t c : load) mx = std::max(mx, static_cast<double>(c)), sum += static_cast<double>(c);
    imb += sum > 0 ? mx / (sum / static_cast<double>(ne)) : 0.0;
  }
  rec.imbalance = moe_layers.empty() ? 0.0 : imb / static_cast<double>(moe_layers.size());
  const double dt = kernels::NowSeconds() - t0;
  rec.tokens_per_s = static_cast<double>(opt_.batch * opt_.seq_len * opt_.grad_accum) / std::max(dt, 1e-9);
  ++step_;
  return rec;
}

EvalResult Trainer::Eval() {
  const ScopedMatmulPrecision precision(ctx_, Precision());
  EvalResult e = Evaluate(tf_, w_, *data_, opt_.seq_len, opt_.eval_rows, false, ctx_);
  e.step = step_;
  return e;
}

void Trainer::Run(const std::atomic<bool>* stop) {
  const double start = kernels::NowSeconds();
  int64_t last_saved = -1;
  while (step_ < opt_.steps) {
    if (stop != nullptr && stop->load()) break;
    if (opt_.time_limit_s > 0 && kernels::NowSeconds() - start > opt_.time_limit_s) break;
    StepRecord rec = Step();
    if (opt_.fit_steps_to_time && opt_.time_limit_s > 0 && step_ == std::min<int64_t>(opt_.steps, 20)) {
      // Eval and checkpoint time is small next to training; keep 10% in reserve for it.
      const double el = kernels::NowSeconds() - start, per_step = el / static_cast<double>(step_);
      const auto fit = static_cast<int64_t>(0.9 * opt_.time_limit_s / per_step);
      if (fit < opt_.steps) {
        opt_.steps = std::max<int64_t>(fit, step_ + 1);
        if (opt_.eval_every > opt_.steps / 2) opt_.eval_every = std::max<int64_t>(1, opt_.steps / 4);
      }
      if (on_plan) on_plan(opt_.steps, per_step);
    }
    const bool log = (rec.step % std::max<int64_t>(1, opt_.log_every)) == 0 || step_ == opt_.steps;
    if (on_step) on_step(rec);
    if (log) history_.push_back(std::move(rec));
    if (opt_.eval_every > 0 && step_ % opt_.eval_every == 0 && step_ < opt_.steps) {
      evals_.push_back(Eval());
      if (on_eval) on_eval(evals_.back());
    }
    if (opt_.ckpt_every > 0 && step_ % opt_.ckpt_every == 0 && step_ < opt_.steps) {
      SaveCheckpoint();
      last_saved = step_;
    }
  }
  if (evals_.empty() || evals_.back().step != step_) {
    evals_.push_back(Eval());
    if (on_eval) on_eval(evals_.back());
  }
  if (last_saved != step_) SaveCheckpoint();
}

std::string Trainer::StateJson() const {
  nlohmann::json j;
  j["format"] = "moe-trainer-state-1";
  j["step"] = step_;
  j["options"] = OptionsJson(opt_);
  j["data_fingerprint"] = Fingerprint(*data_);
  j["domains"] = data_->domain_names;
  nlohmann::json h = nlohmann::json::array(), e = nlohmann::json::array();
  for (const auto& r : history_) h.push_back(RecordJson(r));
  for (const auto& r : evals_) e.push_back(EvalJson(r));
  j["history"] = h;
  j["evals"] = e;
  return j.dump(1) + "\n";
}

std::string Trainer::SaveCheckpoint() {
  io::MakeDirs(out_dir_);
  const std::string name = fmt::format("ckpt-{:06d}", step_);
  const std::string dir = out_dir_ + "/" + name;
  io::SafetensorsWriter opt_state;
  m_.ForEachParameter([&](const std::string& n, Tensor& t) { opt_state.Add("m." + n, t); });
  v_.ForEachParameter([&](const std::string& n, Tensor& t) { opt_state.Add("v." + n, t); });
  const std::vector<uint8_t> bytes = opt_state.Serialize();
  model::SaveModel(dir, cfg_, w_,
                   {{"trainer_state.json", StateJson()},
                    {"optimizer.safetensors", std::string(bytes.begin(), bytes.end())}});
  io::WriteFileAtomic(out_dir_ + "/LATEST", name + "\n");
  // Keep the newest keep_checkpoints folders.
  std::vector<std::string> ckpts;
  for (const auto& entry : std::filesystem::directory_iterator(out_dir_)) {
    const std::string fn = entry.path().filename().string();
    if (entry.is_directory() && fn.starts_with("ckpt-") && !fn.ends_with(".tmp")) ckpts.push_back(fn);
  }
  std::sort(ckpts.begin(), ckpts.end());
  for (size_t i = 0; i + static_cast<size_t>(opt_.keep_checkpoints) < ckpts.size(); ++i)
    if (ckpts[i] != name) io::RemoveAll(out_dir_ + "/" + ckpts[i]);
  return dir;
}

std::string LatestCheckpoint(const std::string& dir) {
  if (io::PathExists(dir + "/config.json")) return dir;
  const std::string latest = dir + "/LATEST";
  MOE_CHECK(io::PathExists(latest), kTag, "{}: no checkpoint here (neither config.json nor LATEST)", dir);
  std::string name = io::ReadFile(latest, 4096);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  MOE_CHECK(!name.empty() && name.find('/') == std::string::npos, kTag, "{}: malformed (names '{}')", latest, name);
  const std::string path = dir + "/" + name;
  MOE_CHECK(io::PathExists(path + "/config.json"), kTag, "{} names {}, which has no config.json", latest, path);
  return path;
}

void Trainer::LoadState(const std::string& dir) {
  const std::string path = dir + "/trainer_state.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::ReadFile(path, 256 << 20));
    MOE_CHECK(j.at("format") == "moe-trainer-state-1", kTag, "{}: unknown format {}", path, j.at("format").dump());
    step_ = j.at("step");
    MOE_CHECK(j.at("data_fingerprint").get<uint64_t>() == Fingerprint(*data_), kTag,
              "{}: the data differs from the data this run was trained on (same --data files / corpus seed needed "
              "to resume)",
              path);
    history_.clear();
    for (const auto& r : j.at("history")) history_.push_back(RecordFromJson(r));
    evals_.clear();
    for (const auto& r : j.at("evals")) evals_.push_back(EvalFromJson(r));
  } catch (const nlohmann::json::exception& e) {
    Fail(kTag, "{}: malformed trainer state: {}", path, e.what());
  }
  const io::SafetensorsFile f = io::SafetensorsFile::Open(dir + "/optimizer.safetensors");
  auto load = [&](model::ModelWeights& dst, const char* prefix) {
    dst.ForEachParameter([&](const std::string& n, Tensor& t) {
      const Tensor src = f.Load(std::string(prefix) + n, DType::kF32);
      MOE_CHECK(src.shape() == t.shape(), kTag, "{}: '{}{}' has shape {}, expected {}", f.name(), prefix, n,
                src.shape().str(), t.shape().str());
      std::memcpy(t.raw(), src.raw(), t.nbytes());
    });
  };
  load(m_, "m.");
  load(v_, "v.");
}

std::unique_ptr<Trainer> Trainer::Resume(const std::string& out_dir, std::shared_ptr<const Dataset> data,
                                         const TrainOptions* override_opt, Context& ctx) {
  const std::string dir = LatestCheckpoint(out_dir);
  model::LoadedModel lm = model::LoadModel(dir);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::ReadFile(dir + "/trainer_state.json", 256 << 20));
  } catch (const nlohmann::json::exception& e) {
    Fail(kTag, "{}/trainer_state.json: malformed: {}", dir, e.what());
  }
  TrainOptions opt;
  try {
    opt = OptionsFromJson(j.at("options"));
  } catch (const nlohmann::json::exception& e) {
    Fail(kTag, "{}/trainer_state.json: malformed options: {}", dir, e.what());
  }
  if (override_opt != nullptr) {
    opt.steps = std::max(opt.steps, override_opt->steps);
    opt.time_limit_s = override_opt->time_limit_s;
  }
  std::unique_ptr<Trainer> t(new Trainer(lm.config, opt, std::move(data), out_dir, ctx, false));
  t->w_ = std::move(lm.weights);
  t->LoadState(dir);
  return t;
}

}  // namespace moe::train
