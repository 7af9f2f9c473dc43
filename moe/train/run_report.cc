#include "moe/train/run_report.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/model/checkpoint.h"
#include "moe/report/svg.h"

namespace moe::train {

std::string RenderEval(const EvalResult& e, bool with_routing) {
  std::string s = fmt::format("validation: loss {:.4f}  perplexity {:.3f}  ({} tokens, step {})\n", e.loss,
                              e.perplexity, e.tokens, e.step);
  s += "  per domain:";
  for (const auto& d : e.domains) {
    if (d.tokens > 0) s += fmt::format("  {} {:.3f}", d.name, d.loss);
  }
  s += "\n";
  if (with_routing) {
    for (size_t k = 0; k < e.routing.size(); ++k) {
      s += '\n';
      s += e.routing[k].RenderTable(fmt::format("layer {} routing", e.moe_layers[k]));
    }
  }
  return s;
}

std::string RenderRoutingSummary(const EvalResult& e) {
  std::string s;
  for (size_t k = 0; k < e.routing.size(); ++k) {
    const RoutingSummary r = e.routing[k].Summarize();
    s += fmt::format("  layer {:2d}: specialisation NMI {:.3f}  domain recovery {:.3f}  load max/mean {:.2f}  CV {:.2f}"
                     "  drop {:.1f}%\n",
                     e.moe_layers[k], r.info.nmi, r.info.domain_recovery, r.load_max_over_mean, r.load_cv,
                     100.0 * r.drop_rate);
  }
  return s;
}

std::vector<std::string> WriteRunPictures(const std::string& dir, const model::ModelConfig& cfg,
                                          const std::vector<StepRecord>& history,
                                          const std::vector<EvalResult>& evals) {
  io::MakeDirs(dir);
  std::vector<std::string> out;
  // Loss curves.
  {
    report::LineChart c;
    c.title = "Loss";
    c.x_label = "step";
    c.y_label = "cross-entropy (nats/byte)";
    report::Series train{"train", {}, {}}, val{"validation", {}, {}};
    for (const auto& r : history) {
      train.x.push_back(static_cast<double>(r.step + 1));
      train.y.push_back(r.loss);
    }
    for (const auto& e : evals) {
      val.x.push_back(static_cast<double>(e.step));
      val.y.push_back(e.loss);
    }
    c.series = {train, val};
    if (!train.x.empty()) {
      out.push_back(fmt::format("{}/loss.svg", dir));
      report::WriteSvg(out.back(), report::RenderLineChart(c));
    }
  }
  // Per-domain validation loss.
  if (!evals.empty() && evals.size() >= 2) {
    report::LineChart c;
    c.title = "Validation loss per domain";
    c.x_label = "step";
    c.y_label = "cross-entropy (nats/byte)";
    for (size_t d = 0; d < evals.back().domains.size(); ++d) {
      report::Series s{evals.back().domains[d].name, {}, {}};
      for (const auto& e : evals) {
        if (d < e.domains.size() && e.domains[d].tokens > 0) {
          s.x.push_back(static_cast<double>(e.step));
          s.y.push_back(e.domains[d].loss);
        }
      }
      if (!s.x.empty()) c.series.push_back(s);
    }
    if (!c.series.empty()) {
      out.push_back(fmt::format("{}/domain_loss.svg", dir));
      report::WriteSvg(out.back(), report::RenderLineChart(c));
    }
  }
  // Expert load over training: rows = (layer, expert), columns = logged steps, value = share of
  // the layer's assignments.
  if (!history.empty() && !history.front().load.empty()) {
    const size_t layers = history.front().load.size();
    const int64_t ne = cfg.moe.n_experts;
    const size_t max_cols = 60, stride = (history.size() + max_cols - 1) / max_cols;
    report::Heatmap h;
    h.title = "Expert load over training (share of each layer's assignments)";
    h.x_label = "step";
    h.y_label = "layer / expert";
    h.value_label = "share";
    std::vector<size_t> cols;
    for (size_t i = 0; i < history.size(); i += stride) cols.push_back(i);
    for (size_t i : cols) h.col_labels.push_back(fmt::format("{}", history[i].step + 1));
    std::vector<int64_t> moe_layers;
    for (int64_t l = 0; l < cfg.n_layers; ++l)
      if (cfg.IsMoeLayer(l)) moe_layers.push_back(l);
    for (size_t k = 0; k < layers; ++k) {
      for (int64_t e = 0; e < ne; ++e) {
        h.row_labels.push_back(fmt::format("L{} E{}", k < moe_layers.size() ? moe_layers[k] : static_cast<int64_t>(k), e));
        for (size_t i : cols) {
          const auto& load = history[i].load[k];
          double sum = 0;
          for (int64_t c : load) sum += static_cast<double>(c);
          h.values.push_back(sum > 0 ? static_cast<double>(load[static_cast<size_t>(e)]) / sum : 0.0);
        }
      }
    }
    h.vmin = 0.0;
    out.push_back(fmt::format("{}/expert_load.svg", dir));
    report::WriteSvg(out.back(), report::RenderHeatmap(h));
  }
  // Domain x expert shares of the last evaluation, one heatmap per MoE layer stacked as rows.
  if (!evals.empty() && !evals.back().routing.empty()) {
    const EvalResult& e = evals.back();
    report::Heatmap h;
    h.title = fmt::format("Routing by domain at step {} (share of each domain's assignments)", e.step);
    h.x_label = "expert";
    h.y_label = "layer / domain";
    h.value_label = "share";
    for (int64_t x = 0; x < cfg.moe.n_experts; ++x) h.col_labels.push_back(fmt::format("E{}", x));
    for (size_t k = 0; k < e.routing.size(); ++k) {
      const RoutingSummary r = e.routing[k].Summarize();
      for (size_t d = 0; d < r.share.size(); ++d) {
        h.row_labels.push_back(fmt::format("L{} {}", e.moe_layers[k], e.routing[k].domain_names()[d]));
        for (double v : r.share[d]) h.values.push_back(v);
      }
    }
    h.vmin = 0.0;
    out.push_back(fmt::format("{}/routing_by_domain.svg", dir));
    report::WriteSvg(out.back(), report::RenderHeatmap(h));
  }
  return out;
}

}  // namespace moe::train

namespace moe::train {

RunSummary ReadRunSummary(const std::string& run_dir, const std::string& name) {
  const std::string dir = LatestCheckpoint(run_dir);
  RunSummary r;
  r.dir = run_dir;
  r.name = name.empty() ? std::filesystem::path(run_dir).filename().string() : name;
  const model::LoadedModel lm = model::LoadModel(dir);
  r.config = lm.config;
  const std::string path = dir + "/trainer_state.json";
  try {
    const nlohmann::json j = nlohmann::json::parse(io::ReadFile(path, 256 << 20));
    for (const auto& h : j.at("history")) {
      StepRecord s;
      s.step = h.at("step");
      s.loss = h.at("loss");
      s.aux = h.at("aux");
      s.lr = h.at("lr");
      s.grad_norm = h.at("grad_norm");
      s.tokens_per_s = h.at("tokens_per_s");
      s.imbalance = h.at("imbalance");
      r.history.push_back(s);
    }
    for (const auto& e : j.at("evals")) {
      EvalResult ev;
      ev.step = e.at("step");
      ev.loss = e.at("loss");
      ev.perplexity = std::exp(ev.loss);
      ev.tokens = e.at("tokens");
      for (const auto& d : e.at("domains")) ev.domains.push_back({d.at("name"), d.at("loss"), d.at("tokens")});
      r.evals.push_back(ev);
      r.nmi.push_back(e.at("nmi").get<std::vector<double>>());
    }
  } catch (const nlohmann::json::exception& e) {
    Fail("report", "{}: malformed trainer state: {}", path, e.what());
  }
  const size_t skip = r.history.size() / 10;
  double sum = 0;
  size_t n = 0;
  for (size_t i = skip; i < r.history.size(); ++i, ++n) sum += r.history[i].tokens_per_s;
  r.mean_tokens_per_s = n > 0 ? sum / static_cast<double>(n) : 0.0;
  return r;
}

void WriteRunComparison(const std::vector<RunSummary>& runs, const std::string& svg_path, const std::string& title) {
  report::LineChart c;
  c.title = title;
  c.y_label = "validation loss (nats/byte)";
  for (const auto& r : runs) {
    report::Series s{r.name, {}, {}};
    for (const auto& e : r.evals) {
      s.x.push_back(static_cast<double>(e.step));
      s.y.push_back(e.loss);
    }
    c.series.push_back(s);
  }
  c.x_label = "step (same tokens per step in every run)";
  report::WriteSvg(svg_path, report::RenderLineChart(c));
}

std::string RunComparisonTable(const std::vector<RunSummary>& runs) {
  std::string s = "| run | params total / active | steps | final val loss | tokens/s | load max/mean | NMI (mean over MoE layers) |\n"
                  "|---|---|---|---|---|---|---|\n";
  for (const auto& r : runs) {
    const double loss = r.evals.empty() ? NAN : r.evals.back().loss;
    double imb = 0;
    size_t n = 0;
    for (size_t i = r.history.size() / 2; i < r.history.size(); ++i, ++n) imb += r.history[i].imbalance;
    double nmi = 0;
    if (!r.nmi.empty() && !r.nmi.back().empty()) {
      for (double v : r.nmi.back()) nmi += v;
      nmi /= static_cast<double>(r.nmi.back().size());
    }
    const bool moe = r.config.NumMoeLayers() > 0;
    s += fmt::format("| {} | {:.2f}M / {:.2f}M | {} | {:.4f} | {:.0f} | {} | {} |\n", r.name, r.config.TotalParams() / 1e6,
                     r.config.ActiveParams() / 1e6, r.evals.empty() ? 0 : r.evals.back().step, loss, r.mean_tokens_per_s,
                     moe && n > 0 ? fmt::format("{:.2f}", imb / static_cast<double>(n)) : "-",
                     moe ? fmt::format("{:.3f}", nmi) : "-");
  }
  return s;
}

}  // namespace moe::train
