// What a training run shows its user: the evaluation as text (loss, perplexity, per-domain loss,
// a routing report per MoE layer) and pictures as SVG files (loss curves, per-domain validation
// loss, expert load over training as a heatmap, the domain x expert table of the last evaluation).
#pragma once

#include <string>
#include <vector>

#include "moe/model/config.h"
#include "moe/train/trainer.h"

namespace moe::train {

// Loss, perplexity and per-domain losses; then, when with_routing, each MoE layer's routing table
// (domain x expert shares, load balance, drop rate, specialisation).
std::string RenderEval(const EvalResult& e, bool with_routing);
// One line per MoE layer: NMI, domain recovery, load max/mean and CV, drop rate.
std::string RenderRoutingSummary(const EvalResult& e);

// Writes the pictures into dir and returns their paths.
std::vector<std::string> WriteRunPictures(const std::string& dir, const model::ModelConfig& cfg,
                                          const std::vector<StepRecord>& history,
                                          const std::vector<EvalResult>& evals);

// What `moe report` compares across runs: read from a run folder's newest trainer_state.json.
struct RunSummary {
  std::string name;                   // label (folder name unless given)
  std::string dir;
  model::ModelConfig config;
  std::vector<StepRecord> history;
  std::vector<EvalResult> evals;      // routing stats are not stored; see nmi
  std::vector<std::vector<double>> nmi;  // [evals][MoE layers]
  double mean_tokens_per_s = 0;       // over the logged steps after the first 10%
};
RunSummary ReadRunSummary(const std::string& run_dir, const std::string& name = "");
// Validation-loss curves of several runs in one chart, and a Markdown table of the final figures.
void WriteRunComparison(const std::vector<RunSummary>& runs, const std::string& svg_path, const std::string& title);
std::string RunComparisonTable(const std::vector<RunSummary>& runs);

}  // namespace moe::train
