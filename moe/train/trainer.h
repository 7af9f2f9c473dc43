// Training loop for MoE language models: AdamW with decoupled weight decay (none on norms and
// embeddings unless asked), global-norm clipping, warmup + cosine schedule, gradient accumulation,
// aux-loss-free bias updates, periodic evaluation with per-domain loss and routing reports,
// checkpoints (Hugging Face Mixtral layout + optimiser state) that resume bit for bit.
//
// Determinism: the data of step s and its router jitter come from (seed, s) alone, every reduction
// has a fixed order, so a run is bitwise reproducible for a given seed and thread count, and
// "train N, save, resume, train N" equals "train 2N".
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/context.h"
#include "moe/model/config.h"
#include "moe/model/transformer.h"
#include "moe/model/weights.h"
#include "moe/train/dataset.h"
#include "moe/train/routing_report.h"

namespace moe::train {

struct TrainOptions {
  int64_t steps = 600;
  int64_t batch = 16;           // sequences per micro-batch (B)
  int64_t seq_len = 128;        // tokens per sequence (S <= max_seq)
  int64_t grad_accum = 1;       // micro-batches per step
  double lr = 3e-3;
  double min_lr_ratio = 0.1;    // cosine decays to lr * min_lr_ratio
  int64_t warmup = 50;          // linear warmup steps
  double weight_decay = 0.1;
  bool decay_norms_and_embeddings = false;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double clip = 1.0;            // max global gradient norm (0 = off)
  uint64_t seed = 1;
  int64_t eval_every = 100;     // 0 = only at the end
  int64_t eval_rows = 64;       // validation rows of seq_len tokens per evaluation
  int64_t ckpt_every = 200;     // 0 = only at the end
  int keep_checkpoints = 2;
  double time_limit_s = 0;      // stop, evaluate and save after this long (0 = no limit)
  // With a time limit: after the first steps, lower `steps` so that the whole schedule (warmup +
  // cosine) fits in the time left (the demo). Makes the step count depend on the machine's speed.
  bool fit_steps_to_time = false;
  int64_t log_every = 10;       // history points (and non-TTY progress lines)
  // Mixed precision: the matrix products of training steps and evaluations (Linear layers, experts;
  // not attention or the router) round their inputs to bf16 and accumulate in f32; weights,
  // gradients and optimiser state stay f32. Needs a CPU with AVX512-BF16 (Error otherwise).
  bool bf16 = false;
};

// Learning rate at step s (0-based): linear warmup to lr, then cosine to lr * min_lr_ratio.
double LearningRate(const TrainOptions& o, int64_t step);

struct StepRecord {
  int64_t step = 0;
  double loss = 0;       // cross-entropy (mean over the step's micro-batches)
  double aux = 0;        // aux + z losses of all MoE layers
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double tokens_per_s = 0;
  double imbalance = 0;  // mean over MoE layers of max/mean expert load
  std::vector<std::vector<int64_t>> load;  // [MoE layers][E] tokens per expert
};

struct DomainLoss {
  std::string name;
  double loss = 0;
  int64_t tokens = 0;
};

struct EvalResult {
  int64_t step = 0;
  double loss = 0;
  double perplexity = 0;
  int64_t tokens = 0;
  std::vector<DomainLoss> domains;
  std::vector<RoutingStats> routing;  // per MoE layer
  std::vector<int64_t> moe_layers;    // layer index of each entry of routing
};

// Evaluates `rows` validation rows (PackSequential). causal_routing: expert-choice layers route as
// token choice (what generation does).
EvalResult Evaluate(const model::Transformer& tf, const model::ModelWeights& w, const Dataset& data,
                    int64_t seq_len, int64_t rows, bool causal_routing, Context& ctx);

class Trainer {
 public:
  // Fresh run: weights initialised from the seed.
  Trainer(const model::ModelConfig& cfg, const TrainOptions& opt, std::shared_ptr<const Dataset> data,
          std::string out_dir, Context& ctx);
  // Continues the newest checkpoint of out_dir (Error when there is none); the options stored in
  // the checkpoint win except steps and time_limit_s, which may be extended.
  static std::unique_ptr<Trainer> Resume(const std::string& out_dir, std::shared_ptr<const Dataset> data,
                                         const TrainOptions* override_opt, Context& ctx);

  // Runs until opt.steps, the time limit or *stop; evaluates every eval_every steps, saves every
  // ckpt_every steps and at the end. Non-finite loss or gradients: Error naming the step and the
  // tensor, without saving (the last checkpoint stays good).
  void Run(const std::atomic<bool>* stop = nullptr);
  // One optimiser step (grad_accum micro-batches); returns its record.
  StepRecord Step();
  EvalResult Eval();
  // Writes out_dir/ckpt-<step> and points out_dir/LATEST at it; keeps keep_checkpoints folders.
  std::string SaveCheckpoint();

  int64_t step() const { return step_; }
  const model::ModelConfig& config() const { return cfg_; }
  const TrainOptions& options() const { return opt_; }
  model::ModelWeights& weights() { return w_; }
  const std::vector<StepRecord>& history() const { return history_; }
  const std::vector<EvalResult>& evals() const { return evals_; }
  const std::string& out_dir() const { return out_dir_; }
  // Called after each step (progress display).
  std::function<void(const StepRecord&)> on_step;
  std::function<void(const EvalResult&)> on_eval;
  // Called once when fit_steps_to_time has chosen the step count.
  std::function<void(int64_t steps, double seconds_per_step)> on_plan;

 private:
  Trainer(const model::ModelConfig& cfg, const TrainOptions& opt, std::shared_ptr<const Dataset> data,
          std::string out_dir, Context& ctx, bool init);
  void AllocateState();
  MatmulPrecision Precision() const;  // of the matrix products in Step and Eval
  std::string StateJson() const;
  void LoadState(const std::string& dir);

  model::ModelConfig cfg_;
  TrainOptions opt_;
  std::shared_ptr<const Dataset> data_;
  std::string out_dir_;
  Context& ctx_;
  model::Transformer tf_;
  model::ModelWeights w_, grad_, m_, v_;
  model::ForwardState<float> fs_;
  int64_t step_ = 0;
  std::vector<StepRecord> history_;
  std::vector<EvalResult> evals_;
};

// Path of the newest checkpoint folder of a run (out_dir/LATEST), or the folder itself when it holds
// a config.json. Error when neither.
std::string LatestCheckpoint(const std::string& dir);

}  // namespace moe::train
