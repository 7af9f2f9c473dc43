// `moe bench model`: prefill and decode speed of a whole model (a built-in shape with random
// weights, optionally written as a GGUF file of a weight type and run from it, or a model folder /
// .gguf file) against the machine's limits measured in the same run: decode against the bandwidth
// roofline (bytes of weights and KV cache read per token, as stored, ÷ read bandwidth), prefill
// against the sgemm rate on active FLOPs.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/cpu.h"
#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/generate/generator.h"
#include "moe/generate/model_dir.h"
#include "moe/io/file.h"
#include "moe/kernels/roofline.h"
#include "moe/kernels/rope.h"
#include "moe/model/checkpoint.h"
#include "moe/model/gguf_model.h"
#include "moe/model/transformer.h"
#include "tools/commands.h"

namespace moe::cli {
namespace {

using kernels::NowSeconds;

struct ModelBenchOptions {
  std::string shape = "mixtral-like";
  std::string model;  // a model folder instead of a random shape
  std::string save;   // write the random shape as a Hugging Face folder first
  std::string type;   // write the random shape as GGUF of this scheme and run that file
  std::string gguf_path;  // where (default: $TMPDIR or /tmp, moe-bench-<shape>-<type>.gguf)
  int64_t prefill = 512;
  int64_t decode = 64;
  int reps = 3;
  int threads = 0;
  std::string json_path;
};

// The shapes of the published-checkpoint benchmarks (vocab 32000, D=1024, 8 layers).
model::ModelConfig BenchShape(const std::string& name) {
  model::ModelConfig c;
  c.vocab_size = 32000;
  c.d_model = 1024;
  c.n_layers = 8;
  c.n_heads = 16;
  c.n_kv_heads = 4;
  c.max_seq = 4096;
  c.rope_theta = 1e6;
  c.moe_every = 1;
  c.moe.renormalize = true;
  if (name == "mixtral-like") {
    c.moe.n_experts = 8;
    c.moe.top_k = 2;
    c.moe.d_ff = 2816;
  } else if (name == "olmoe-like") {
    c.n_kv_heads = 16;
    c.moe.n_experts = 64;
    c.moe.top_k = 8;
    c.moe.d_ff = 512;
    c.moe.renormalize = false;
  } else if (name == "qwen2-moe-like") {
    c.architecture = "Qwen2MoeForCausalLM";  // q/k/v biases and a gated shared expert
    c.qkv_bias = true;
    c.moe.n_experts = 60;
    c.moe.top_k = 4;
    c.moe.d_ff = 704;
    c.moe.shared_d_ff = 2816;
    c.moe.shared_gate = true;
    c.moe.renormalize = false;
  } else if (name == "deepseek-like") {
    // DeepSeek-V2-Lite's attention (MLA, no q compression, R = 512, Dn = Dv = 128, Dr = 64) and
    // its routing (64 experts, 6 active, 2 shared) at D = 1024.
    c.architecture = "DeepseekV2ForCausalLM";
    c.n_kv_heads = 16;
    c.head_dim = 0;
    c.mla.kv_lora_rank = 512;
    c.mla.qk_nope_head_dim = 128;
    c.mla.qk_rope_head_dim = 64;
    c.mla.v_head_dim = 128;
    c.rope_pairing = kernels::RopePairing::kInterleaved;
    c.attn_scale = 1.0 / std::sqrt(192.0);
    c.moe.n_experts = 64;
    c.moe.top_k = 6;
    c.moe.d_ff = 704;
    c.moe.shared_d_ff = 2 * 704;
    c.moe.renormalize = false;
    c.moe.group_score = mixture::GroupScore::kMax;  // V2's softmax "greedy": one group
  } else if (name == "dense-like") {  // a dense model with the Mixtral-like one's active FFN width
    c.moe_every = 0;
    c.dense_d_ff = 2 * 2816;
  } else {
    Fail("bench",
         "unknown shape '{}'; known: mixtral-like, olmoe-like, qwen2-moe-like, deepseek-like, "
         "dense-like",
         name);
  }
  c.Finalize();
  return c;
}

// Bytes of all the weights as stored.
double WeightBytes(model::ModelWeights& w) {
  double bytes = 0;
  w.ForEachTensor([&](const std::string&, Tensor& t) { bytes += static_cast<double>(t.nbytes()); });
  return bytes;
}

// Bytes one decoded token reads at context length `pos`, from the weights as stored: everything
// but the embedding table (one row of it, unless the head shares it) and the experts a token does
// not choose (top_k of n_experts per MoE layer), plus the layers' cached keys and values (f32).
double DecodeBytes(const model::ModelConfig& c, model::ModelWeights& w, int64_t pos) {
  double bytes = WeightBytes(w);
  if (!c.tie_embeddings)
    bytes -= static_cast<double>(w.embed.nbytes()) * static_cast<double>(c.vocab_size - 1) /
             static_cast<double>(c.vocab_size);
  for (auto& lw : w.layers) {
    if (!lw.is_moe) continue;
    double experts = 0;
    if (lw.moe.inference_layout()) {
      for (auto& e : lw.moe.experts)
        experts += static_cast<double>(e.gate.nbytes() + e.up.nbytes() + e.down.nbytes());
    } else {
      experts = static_cast<double>(lw.moe.w13.nbytes() + lw.moe.w2.nbytes());
    }
    const double unused = static_cast<double>(c.moe.n_experts - c.moe.top_k) /
                          static_cast<double>(c.moe.n_experts);
    bytes -= experts * unused;
  }
  // Floats cached per token and layer: keys and values, or MLA's latent ([c | k_pe] and c).
  const double per_token =
      c.mla.enabled() ? static_cast<double>(2 * c.mla.kv_lora_rank + c.mla.qk_rope_head_dim)
                      : 2.0 * static_cast<double>(c.kv_dim());
  const double kv = static_cast<double>(pos) * per_token * static_cast<double>(c.n_layers);
  return bytes + 4.0 * kv;
}

// Resident and peak resident memory of this process (VmRSS / VmHWM), in bytes; 0 when unknown.
std::pair<double, double> ResidentBytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  double rss = 0, hwm = 0;
  while (std::getline(f, line)) {
    if (line.starts_with("VmRSS:")) rss = std::atof(line.c_str() + 6) * 1024.0;
    if (line.starts_with("VmHWM:")) hwm = std::atof(line.c_str() + 6) * 1024.0;
  }
  return {rss, hwm};
}

// Active FLOPs of a prefill of n tokens: 2 per active weight per token (the embedding is a lookup)
// plus causal attention (QK^T and PV over n(n+1)/2 pairs per head).
double PrefillFlops(const model::ModelConfig& c, int64_t n) {
  double params =
      static_cast<double>(c.ActiveParams()) - static_cast<double>(c.vocab_size) * c.d_model;
  if (c.tie_embeddings)
    params += static_cast<double>(c.vocab_size) * c.d_model;  // head still multiplies
  const double pairs = static_cast<double>(n) * static_cast<double>(n + 1) / 2.0;
  return 2.0 * params * static_cast<double>(n) +
         4.0 * pairs * static_cast<double>(c.q_dim()) * c.n_layers;
}

void InitBenchWeights(const model::ModelConfig& cfg, model::ModelWeights& w, Context& ctx) {
  w.Allocate(cfg, DType::kF32);
  // Small random values, written in parallel (also places pages next to the threads that read
  // them).
  w.ForEachTensor([&](const std::string&, Tensor& t) {
    auto v = t.view<float>();
    const int64_t n = v.numel();
    ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int) {
      uint64_t s = 0x9e3779b97f4a7c15ULL ^ static_cast<uint64_t>(b);
      for (int64_t i = b; i < e; ++i) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        v.data[i] = (static_cast<float>(s >> 40) / 16777216.0f - 0.5f) * 0.04f;
      }
    });
  });
  // Norm weights 1 so activations stay in range.
  for (auto& lw : w.layers) {
    for (Tensor* t : {&lw.attn_norm, &lw.ffn_norm}) {
      auto v = t->view<float>();
      for (int64_t i = 0; i < v.numel(); ++i) v.data[i] = 1.0f;
    }
    if (lw.is_moe && lw.moe.bias.defined()) lw.moe.bias.SetZero();
  }
  auto fv = w.final_norm.view<float>();
  for (int64_t i = 0; i < fv.numel(); ++i) fv.data[i] = 1.0f;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int RunModelBench(const ModelBenchOptions& opt) {
  Context ctx({.threads = opt.threads});
  model::ModelConfig cfg;
  model::ModelWeights w;
  std::string what;
  int64_t repacked = 0;
  const double ti = NowSeconds();
  // With --type, the GGUF file to run (written below unless it exists).
  std::string gguf;
  model::GgufScheme scheme = model::GgufScheme::kF32;
  if (!opt.type.empty()) {
    scheme = model::ParseGgufScheme(opt.type);
    gguf = opt.gguf_path;
    if (gguf.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      const std::string base =
          opt.model.empty() ? opt.shape : std::filesystem::path(opt.model).filename().string();
      gguf = fmt::format("{}/moe-bench-{}-{}.gguf", tmp && *tmp ? tmp : "/tmp", base,
                         model::Name(scheme));
    }
  }
  const bool reuse = !gguf.empty() && io::PathExists(gguf);
  if (reuse) {
    std::printf("using the existing %s (delete it to write a new one)\n", gguf.c_str());
  } else if (!opt.model.empty()) {
    MOE_CHECK(gguf.empty() || !opt.model.ends_with(".gguf"), "bench",
              "--type converts a random shape or a model folder; '{}' is already GGUF", opt.model);
    generate::ModelDir m = generate::OpenModelDir(opt.model);
    cfg = m.config;
    w = std::move(m.weights);
    repacked = m.repacked_bytes;
    what = opt.model;
    std::printf("model: %s: %s\n", what.c_str(), cfg.Summary().c_str());
  } else {
    cfg = BenchShape(opt.shape);
    what = opt.shape;
    std::printf("model: %s (random weights): %s\n", what.c_str(), cfg.Summary().c_str());
    InitBenchWeights(cfg, w, ctx);
  }
  if (!opt.save.empty()) {
    MOE_CHECK(!reuse, "bench", "--save needs the model in memory; {} exists already", gguf);
    model::SaveModel(opt.save, cfg, w);
    std::printf("saved as a Hugging Face folder: %s (moe bench model --model %s)\n",
                opt.save.c_str(), opt.save.c_str());
  }
  if (!gguf.empty()) {
    // Through our GGUF writer, then run from the file (mapped) like `moe run model.gguf`.
    if (!reuse) {
      std::printf("writing %s as %s ...\n", gguf.c_str(), std::string(model::Name(scheme)).c_str());
      std::fflush(stdout);
      const double tw = NowSeconds();
      model::GgufSaveOptions so;
      so.scheme = scheme;
      so.ctx = &ctx;
      so.name = what;
      model::SaveGgufModel(cfg, w, gguf, so);
      std::printf("  written in %.1f s\n", NowSeconds() - tw);
    }
    w = model::ModelWeights();  // frees the f32 weights before mapping the file
    generate::ModelDir m = generate::OpenModelDir(gguf);
    cfg = m.config;
    w = std::move(m.weights);
    repacked = m.repacked_bytes;
    what = fmt::format("{} ({})", gguf, model::Name(scheme));
    std::printf("model: %s: %s\n", what.c_str(), cfg.Summary().c_str());
  }
  const double weight_bytes = WeightBytes(w);
  const auto [rss_load, hwm_load] = ResidentBytes();
  std::printf("weights: %.2f GB as stored, ready in %.1f s; resident %.2f GB (peak %.2f GB)\n",
              weight_bytes / 1e9, NowSeconds() - ti, rss_load / 1e9, hwm_load / 1e9);
  if (repacked > 0)
    std::printf("  of which %.2f GB of Q8_0 / Q4_0 / K-quants regrouped in 16-row tiles in memory "
                "for decode (MOE_REPACK=0: keep them mapped)\n",
                static_cast<double>(repacked) / 1e9);
  MOE_CHECK(opt.prefill + opt.decode < cfg.max_seq, "bench",
            "prefill + decode = {} exceeds the context of {}", opt.prefill + opt.decode,
            cfg.max_seq);
  std::printf("machine: %s, %d threads\n", std::string(IsaName(ActiveIsa())).c_str(),
              ctx.threads());
  std::fflush(stdout);
  model::Transformer tf(cfg);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::Bytes();
  generate::Generator gen(tf, w, tok, ctx, opt.prefill + opt.decode + 1);
  std::vector<int32_t> prompt(static_cast<size_t>(opt.prefill));
  for (size_t i = 0; i < prompt.size(); ++i)
    prompt[i] = static_cast<int32_t>((i * 7919 + 13) % std::min<int64_t>(cfg.vocab_size, 255));

  std::vector<double> prefill_s, decode_s, bws, wbws, sgemms, prefill_frac, decode_frac, decode_wfrac;
  // The weights where they live: this machine (a VM) hands out memory at different speeds from
  // one allocation to the next, so the pages of the weights need not read like a fresh buffer.
  std::vector<kernels::ByteRegion> regions;
  std::vector<bool> steady_rep;
  w.ForEachTensor([&](const std::string&, Tensor& t) {
    if (t.defined()) regions.push_back({std::as_const(t).raw(), static_cast<int64_t>(t.nbytes())});
  });
  generate::GenerateOptions go;
  go.max_tokens = opt.decode;
  go.prefill_chunk = opt.prefill;
  const double flops = PrefillFlops(cfg, opt.prefill);
  const double bytes = DecodeBytes(cfg, w, opt.prefill + opt.decode / 2);
  for (int r = 0; r < opt.reps; ++r) {
    // The machine's limits are measured right before each run and each run is compared with its
    // own: bandwidth on a shared machine drifts by tens of percent from minute to minute.
    sgemms.push_back(kernels::MeasureSgemmGflops(ctx, 2048, 2048, 2048, 2));
    bws.push_back(kernels::MeasureReadBandwidthGBs(ctx, int64_t{1} << 30, 2));
    wbws.push_back(kernels::MeasureRegionReadBandwidthGBs(ctx, regions, int64_t{1} << 30, 2));
    gen.Reset();
    const generate::GenerateResult res = gen.Generate(prompt, go);
    prefill_s.push_back(res.prefill_s);
    decode_s.push_back(res.decode_s / static_cast<double>(std::max<int64_t>(1, res.decode_tokens)));
    prefill_frac.push_back(flops / res.prefill_s / 1e9 / sgemms.back());
    decode_frac.push_back(bytes / decode_s.back() / 1e9 / bws.back());
    // The weights' probe again right after: the machine's bandwidth also changes from one second
    // to the next, and a run whose two probes disagree by more than 15% straddled a change.
    const double after = kernels::MeasureRegionReadBandwidthGBs(ctx, regions, int64_t{1} << 30, 2);
    const bool steady = std::abs(after - wbws.back()) <= 0.15 * std::max(after, wbws.back());
    wbws.back() = 0.5 * (wbws.back() + after);
    decode_wfrac.push_back(bytes / decode_s.back() / 1e9 / wbws.back());
    steady_rep.push_back(steady);
    std::printf(
        "  rep %d: prefill %.1f tok/s (%.0f%% of sgemm %.0f GFLOP/s), decode %.2f tok/s (%.0f%% of "
        "%.1f GB/s; %.0f%% of the weights' pages at %.1f GB/s%s)\n",
        r + 1, res.PrefillTokensPerSecond(), 100.0 * prefill_frac.back(), sgemms.back(),
        res.DecodeTokensPerSecond(), 100.0 * decode_frac.back(), bws.back(),
        100.0 * decode_wfrac.back(), wbws.back(), steady ? "" : ", unsteady: not counted");
    std::fflush(stdout);
  }
  const double tp = Median(prefill_s), td = Median(decode_s);
  const double sgemm = Median(sgemms), bw = Median(bws), wbw = Median(wbws);
  const double pf = Median(prefill_frac);
  // The decode fractions over the steady runs (all of them when none was steady).
  std::vector<double> steady_frac, steady_wfrac;
  for (size_t i = 0; i < decode_wfrac.size(); ++i)
    if (steady_rep[i]) {
      steady_frac.push_back(decode_frac[i]);
      steady_wfrac.push_back(decode_wfrac[i]);
    }
  const int n_steady = static_cast<int>(steady_wfrac.size());
  const double df = Median(n_steady > 0 ? steady_frac : decode_frac);
  const double dwf = Median(n_steady > 0 ? steady_wfrac : decode_wfrac);
  const auto [rss_end, hwm_end] = ResidentBytes();
  const double prefill_gflops = flops / tp / 1e9;
  const double decode_tps = 1.0 / td;
  std::printf("\nsame-run limits (median of the reps): sgemm %.1f GFLOP/s, read bandwidth %.1f GB/s "
              "(a fresh 1 GiB buffer), %.1f GB/s (the weights' own pages)\n",
              sgemm, bw, wbw);
  std::printf("prefill %lld tokens: %.1f tok/s, %.1f GFLOP/s active = %.0f%% of sgemm\n",
              static_cast<long long>(opt.prefill), opt.prefill / tp, prefill_gflops, 100.0 * pf);
  std::printf(
      "decode: %.2f tok/s, %.1f MB read per token, %.1f GB/s = %.0f%% of the bandwidth roofline "
      "(%.0f%% of the weights' pages; medians of %d steady runs)\n",
      decode_tps, bytes / 1e6, bytes * decode_tps / 1e9, 100.0 * df, 100.0 * dwf,
      n_steady > 0 ? n_steady : opt.reps);
  std::printf("(fractions: the median over the reps of each run against the limits measured just "
              "before it)\n");
  std::printf("memory: weights %.2f GB as stored, resident %.2f GB after the runs (peak %.2f GB, "
              "which includes the 1 GiB bandwidth probe)\n",
              weight_bytes / 1e9, rss_end / 1e9, hwm_end / 1e9);
  if (!opt.json_path.empty()) {
    nlohmann::json j = {{"model", what},
                        {"threads", ctx.threads()},
                        {"isa", IsaName(ActiveIsa())},
                        {"sgemm_gflops", sgemm},
                        {"bandwidth_gbs", bw},
                        {"prefill_tokens", opt.prefill},
                        {"prefill_tok_s", opt.prefill / tp},
                        {"prefill_gflops", prefill_gflops},
                        {"prefill_frac_sgemm", pf},
                        {"decode_tok_s", decode_tps},
                        {"decode_bytes_per_token", bytes},
                        {"decode_frac_roofline", df},
                        {"weights_bandwidth_gbs", wbw},
                        {"decode_frac_weights_bandwidth", dwf},
                        {"steady_runs", n_steady},
                        {"weight_bytes", weight_bytes},
                        {"resident_bytes_after_load", rss_load},
                        {"resident_bytes_after_runs", rss_end}};
    io::WriteFileAtomic(opt.json_path, j.dump(2) + "\n");
    std::printf("results written to %s\n", opt.json_path.c_str());
  }
  return 0;
}

}  // namespace

void AddBenchModelCommand(CLI::App& bench) {
  auto opt = std::make_shared<ModelBenchOptions>();
  auto* cmd = bench.add_subcommand(
      "model", "Prefill and decode tokens/s of a whole model against the same-run rooflines");
  cmd->add_option(
      "--model,-m", opt->model,
      "A model folder (Hugging Face or moe train) or .gguf file instead of a random shape");
  cmd->add_option("--save", opt->save,
                  "Also write the random-weight model as a Hugging Face folder (F32)");
  cmd->add_option("--shape", opt->shape,
                  "mixtral-like, olmoe-like, qwen2-moe-like, deepseek-like or dense-like (random "
                  "weights)")
      ->capture_default_str();
  cmd->add_option("--type", opt->type,
                  "Write the random shape (or --model folder) as GGUF of this type (F32, F16, Q8_0, "
                  "Q4_0, Q4_K_M, Q5_K_M) and run from that file, mapped");
  cmd->add_option("--gguf-path", opt->gguf_path,
                  "Where --type writes (reused when it exists; default "
                  "$TMPDIR/moe-bench-<shape>-<type>.gguf)");
  cmd->add_option("--prefill", opt->prefill, "Prompt tokens")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--decode", opt->decode, "Decoded tokens per repetition")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--reps", opt->reps, "Repetitions (median reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  cmd->add_option("--threads", opt->threads, "Threads (0 = all cores or MOE_THREADS)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--json", opt->json_path, "Also write the results as JSON");
  cmd->callback([opt] { RunModelBench(*opt); });
}

}  // namespace moe::cli
