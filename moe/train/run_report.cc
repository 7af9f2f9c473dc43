#include "moe/train/run_report.h"

#include <cmath>

#include "moe/core/error.h"
#include "moe/io/file.h"
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
