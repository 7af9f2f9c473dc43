// `moe bench moe-layer`: times the MoE layer forward and forward+backward on named shapes, next to
// the equal-active dense SwiGLU FFN, and reports them against the machine's sgemm rate and memory
// bandwidth measured in the same run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/core/context.h"
#include "moe/core/cpu.h"
#include "moe/kernels/roofline.h"
#include "moe/mixture/experts.h"
#include "moe/mixture/moe_layer.h"
#include "moe/mixture/presets.h"
#include "tools/commands.h"

namespace moe::cli {
namespace {

using kernels::NowSeconds;
using mixture::MoeConfig;

struct BenchOptions {
  std::vector<std::string> presets{"mixtral"};
  std::vector<int64_t> tokens{1, 8, 512, 4096};
  int threads = 0;
  double min_time = 1.0;
  bool backward = true;
  bool dense = true;
  std::string json_path;
};

// Median seconds of fn over at least 3 runs and min_time seconds (after one warm-up run).
template <typename Fn>
double TimeIt(Fn&& fn, double min_time) {
  fn();
  std::vector<double> times;
  const double start = NowSeconds();
  while (times.size() < 3 || (NowSeconds() - start < min_time && times.size() < 1000)) {
    const double t0 = NowSeconds();
    fn();
    times.push_back(NowSeconds() - t0);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void FillNormal(Tensor& t, Rng& rng, double std) {
  auto v = t.view<float>();
  for (int64_t i = 0; i < v.numel(); ++i) v[i] = static_cast<float>(rng.Normal() * std);
}

struct Row {
  int64_t tokens = 0;
  double fwd_s = 0, fwdbwd_s = 0, dense_fwd_s = 0, dense_fwdbwd_s = 0;
  double flops = 0;      // active forward FLOPs
  double bytes = 0;      // expert weight bytes read by one forward
  int64_t copies = 1;
};

Row BenchOne(const MoeConfig& cfg, int64_t nt, const BenchOptions& opt, Context& ctx) {
  Row row;
  row.tokens = nt;
  Rng rng(1234);
  // Few-token calls are bound by reading weights: rotate over enough copies of the layer that
  // they do not fit in the last-level cache, so the figure is a DRAM figure.
  mixture::MoeWeights probe;
  probe.Allocate(cfg, DType::kF32);
  double layer_bytes = 0;
  probe.ForEachTensor([&](std::string_view, Tensor& t) { layer_bytes += static_cast<double>(t.nbytes()); });
  row.copies = nt <= 64 ? std::max<int64_t>(1, static_cast<int64_t>(std::ceil(512e6 / layer_bytes))) : 1;
  std::vector<mixture::MoeWeights> layers(static_cast<size_t>(row.copies));
  for (auto& w : layers) w.InitRandom(cfg, DType::kF32, rng);

  Tensor x(DType::kF32, {nt, cfg.d_model}), y(DType::kF32, {nt, cfg.d_model});
  Tensor dy(DType::kF32, {nt, cfg.d_model}), dx(DType::kF32, {nt, cfg.d_model});
  FillNormal(x, rng, 1.0);
  FillNormal(dy, rng, 1.0);
  mixture::MoeState<float> st;
  size_t which = 0;
  auto fwd = [&] {
    const auto& w = layers[which];
    which = (which + 1) % layers.size();
    mixture::MoeForward<float>(cfg, w, x.view<const float>(), y.view<float>(), st, ctx);
  };
  row.fwd_s = TimeIt(fwd, opt.min_time);
  row.flops = mixture::MoeForwardFlops(cfg, nt, st.stats.assignments);
  row.bytes = mixture::ActiveWeightBytes(cfg, st.stats.tokens_per_expert, nt);
  if (opt.backward) {
    mixture::MoeWeights grad;
    grad.Allocate(cfg, DType::kF32);
    auto fb = [&] {
      const auto& w = layers[which];
      which = (which + 1) % layers.size();
      mixture::MoeForward<float>(cfg, w, x.view<const float>(), y.view<float>(), st, ctx,
                                 {.training = true, .seed = 7});
      mixture::MoeBackward<float>(cfg, w, x.view<const float>(), dy.view<const float>(), st, grad,
                                  dx.view<float>(), ctx);
    };
    row.fwdbwd_s = TimeIt(fb, opt.min_time);
  }
  if (opt.dense) {
    // Dense SwiGLU FFN with the same active parameters: hidden = K*F (+ shared).
    const int64_t fd = cfg.top_k * cfg.d_ff + cfg.shared_d_ff, d = cfg.d_model;
    const int64_t copies = nt <= 64 ? std::max<int64_t>(1, static_cast<int64_t>(std::ceil(512e6 / (12.0 * d * fd)))) : 1;
    std::vector<Tensor> w13s, w2s;
    for (int64_t c = 0; c < copies; ++c) {
      w13s.emplace_back(DType::kF32, Shape{2 * fd, d});
      w2s.emplace_back(DType::kF32, Shape{d, fd});
      FillNormal(w13s.back(), rng, 1.0 / std::sqrt(static_cast<double>(d)));
      FillNormal(w2s.back(), rng, 1.0 / std::sqrt(static_cast<double>(fd)));
    }
    Tensor h(DType::kF32, {nt, 2 * fd}), a(DType::kF32, {nt, fd});
    size_t wc = 0;
    auto group = [&] {
      mixture::FfnGroup<float> g{nt, fd, x.view<float>().data, w13s[wc].view<float>().data,
                                 w2s[wc].view<float>().data, h.view<float>().data,
                                 a.view<float>().data, y.view<float>().data};
      wc = (wc + 1) % w13s.size();
      return g;
    };
    row.dense_fwd_s = TimeIt([&] { mixture::GroupedSwiGluForward<float>({group()}, d, ctx); }, opt.min_time);
    if (opt.backward) {
      Tensor dw13(DType::kF32, {2 * fd, d}), dw2(DType::kF32, {d, fd});
      Tensor da(DType::kF32, {nt, fd}), dh(DType::kF32, {nt, 2 * fd});
      row.dense_fwdbwd_s = TimeIt([&] {
        const auto g = group();
        mixture::GroupedSwiGluForward<float>({g}, d, ctx);
        mixture::GroupedSwiGluBackward<float>(
            {g}, {{dy.view<float>().data, dx.view<float>().data, da.view<float>().data,
                   dh.view<float>().data, dw13.view<float>().data, dw2.view<float>().data}},
            d, ctx);
      }, opt.min_time);
    }
  }
  return row;
}

int RunLayerBench(const BenchOptions& opt) {
  Context ctx({.threads = opt.threads});
  std::printf("moe bench moe-layer: %d threads, ISA %s\n", ctx.threads(),
              std::string(IsaName(ActiveIsa())).c_str());
  std::printf("measuring this machine (sgemm 2048^3, 1 GiB read) ...\n");
  std::fflush(stdout);
  const kernels::Roofline roof = kernels::MeasureRoofline(ctx);
  std::printf("  sgemm %.1f GFLOP/s   read bandwidth %.1f GB/s\n\n", roof.sgemm_gflops, roof.bandwidth_gbs);

  nlohmann::json out;
  out["threads"] = ctx.threads();
  out["isa"] = std::string(IsaName(ActiveIsa()));
  out["sgemm_gflops"] = roof.sgemm_gflops;
  out["bandwidth_gbs"] = roof.bandwidth_gbs;
  out["results"] = nlohmann::json::array();

  for (const auto& name : opt.presets) {
    const auto& preset = mixture::FindLayerPreset(name);
    std::printf("%s — %s\n", preset.name.c_str(), preset.description.c_str());
    std::printf("  %6s | %9s %10s %8s %7s | %8s %9s | %9s %10s %8s %7s | %s\n", "T", "fwd ms",
                "tok/s", "GFLOP/s", "%sgemm", "dense ms", "moe/dense", "f+b ms", "tok/s",
                "GFLOP/s", "%sgemm", "weight-read bound");
    for (int64_t nt : opt.tokens) {
      const Row r = BenchOne(preset.config, nt, opt, ctx);
      const double gf = r.flops / r.fwd_s * 1e-9;
      const double gfb = opt.backward ? 3.0 * r.flops / r.fwdbwd_s * 1e-9 : 0.0;
      const double bound_s = r.bytes / (roof.bandwidth_gbs * 1e9);
      std::string mem = nt <= 64 ? fmt::format("{:.1f} MB, {:.2f}x of {:.3f} ms", r.bytes / 1e6,
                                               r.fwd_s / bound_s, bound_s * 1e3)
                                 : "-";
      const std::string dense =
          r.dense_fwd_s > 0 ? fmt::format("{:8.3f} {:9.2f}", r.dense_fwd_s * 1e3, r.fwd_s / r.dense_fwd_s)
                            : fmt::format("{:>8} {:>9}", "-", "-");
      const std::string fb =
          opt.backward ? fmt::format("{:9.3f} {:10.0f} {:8.1f} {:6.0f}%", r.fwdbwd_s * 1e3,
                                     static_cast<double>(nt) / r.fwdbwd_s, gfb,
                                     100.0 * gfb / roof.sgemm_gflops)
                       : fmt::format("{:>9} {:>10} {:>8} {:>7}", "-", "-", "-", "-");
      std::printf("  %6lld | %9.3f %10.0f %8.1f %6.0f%% | %s | %s | %s\n", static_cast<long long>(nt),
                  r.fwd_s * 1e3, static_cast<double>(nt) / r.fwd_s, gf, 100.0 * gf / roof.sgemm_gflops,
                  dense.c_str(), fb.c_str(), mem.c_str());
      std::fflush(stdout);
      out["results"].push_back({{"preset", preset.name}, {"tokens", nt}, {"fwd_ms", r.fwd_s * 1e3},
                                {"fwd_gflops", gf}, {"fwdbwd_ms", r.fwdbwd_s * 1e3},
                                {"fwdbwd_gflops", gfb}, {"dense_fwd_ms", r.dense_fwd_s * 1e3},
                                {"dense_fwdbwd_ms", r.dense_fwdbwd_s * 1e3},
                                {"weight_bytes", r.bytes}, {"weight_bound_ms", bound_s * 1e3},
                                {"layer_copies", r.copies}});
    }
    std::printf("\n");
  }
  std::printf("GFLOP/s count active FLOPs (router + chosen experts + shared); f+b counts 3x the forward.\n"
              "Few-token rows rotate over layer copies larger than the cache, so weights come from DRAM.\n");
  if (!opt.json_path.empty()) {
    const std::string tmp = opt.json_path + ".tmp";
    {
      std::ofstream f(tmp);
      MOE_CHECK(f.good(), "bench", "cannot write '{}'", tmp);
      f << out.dump(2) << "\n";
      MOE_CHECK(f.good(), "bench", "failed writing '{}'", tmp);
    }
    MOE_CHECK(std::rename(tmp.c_str(), opt.json_path.c_str()) == 0, "bench", "cannot rename '{}' to '{}'",
              tmp, opt.json_path);
    std::printf("results written to %s\n", opt.json_path.c_str());
  }
  return 0;
}

}  // namespace

void AddBenchCommand(CLI::App& root) {
  auto* bench = root.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto opt = std::make_shared<BenchOptions>();
  auto* layer = bench->add_subcommand("moe-layer", "MoE layer forward / forward+backward vs dense and the machine's limits");
  std::string preset_names;
  for (const auto& p : mixture::LayerPresets()) preset_names += (preset_names.empty() ? "" : ", ") + p.name;
  layer->add_option("--preset,-p", opt->presets, "Layer shapes: " + preset_names + ", or all")
      ->delimiter(',')
      ->capture_default_str();
  layer->add_option("--tokens,-t", opt->tokens, "Token counts T")->delimiter(',')->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  layer->add_option("--threads", opt->threads, "Threads (0 = all cores or MOE_THREADS)")
      ->check(CLI::Range(0, 1024));
  layer->add_option("--min-time", opt->min_time, "Seconds per measurement")->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  layer->add_flag("!--no-backward", opt->backward, "Skip forward+backward");
  layer->add_flag("!--no-dense", opt->dense, "Skip the equal-active dense FFN");
  layer->add_option("--json", opt->json_path, "Also write the results as JSON");
  layer->callback([opt] {
    if (opt->presets.size() == 1 && opt->presets[0] == "all") {
      opt->presets.clear();
      for (const auto& p : mixture::LayerPresets()) opt->presets.push_back(p.name);
    }
    for (const auto& p : opt->presets) (void)mixture::FindLayerPreset(p);
    RunLayerBench(*opt);
  });
  AddBenchModelCommand(*bench);
}

}  // namespace moe::cli
