#include "moe/model/inspect.h"

#include <fmt/format.h>

#include <map>
#include <vector>

#include "moe/model/hf_model.h"

namespace moe::model {

namespace {

std::string Human(double v, const char* unit) {
  const char* prefix[] = {"", "K", "M", "G", "T"};
  int i = 0;
  while (v >= 1000 && i < 4) v /= 1000, ++i;
  return fmt::format("{:.2f} {}{}", v, prefix[i], unit);
}

std::string FfnOf(const ModelConfig& c, int64_t l) {
  if (!c.IsMoeLayer(l)) return fmt::format("dense SwiGLU F={}", c.dense_d_ff);
  const auto& m = c.moe;
  std::string s =
      fmt::format("MoE E={} K={} F={} {}", m.n_experts, m.top_k, m.d_ff, mixture::Name(m.score));
  if (m.n_groups > 1)
    s += fmt::format(" groups {}/{} ({})", m.topk_groups, m.n_groups, mixture::Name(m.group_score));
  if (m.selection_bias) s += " +selection bias";
  s += m.renormalize ? " renorm" : " no-renorm";
  if (m.route_scale != 1.0) s += fmt::format(" scale {}", m.route_scale);
  if (m.shared_d_ff > 0)
    s += fmt::format(" + shared F={}{}", m.shared_d_ff, m.shared_gate ? " (gated)" : "");
  return s;
}

}  // namespace

std::string InspectModel(const std::string& dir) {
  const Architecture* arch = nullptr;
  const ModelConfig c = ReadHfConfig(dir, &arch);
  std::string out;
  auto line = [&](const char* key, const std::string& value) {
    out += fmt::format("{:<11}{}\n", key, value);
  };
  line("model", fmt::format("{} ({})", dir, arch->name));
  // The weights are optional here: a folder with only config.json is described all the same.
  try {
    const HfTensorFiles files = HfTensorFiles::Open(dir);
    std::map<std::string, int64_t> by_dtype;
    const std::vector<std::string> names = files.Names();
    for (const std::string& n : names)
      ++by_dtype[std::string(io::StDTypeName(files.Find(n)->dtype))];
    std::string dtypes;
    for (const auto& [dt, n] : by_dtype)
      dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", n, dt);
    line("files",
         fmt::format("{}: {} file(s), {} tensors ({}), {}", files.origin(), files.files().size(),
                     names.size(), dtypes, Human(static_cast<double>(files.DataBytes()), "B")));
  } catch (const Error& e) {
    line("files", fmt::format("not readable: {}", e.what()));
  }
  line("shape", fmt::format("{} layers, D={}, vocab {}, context {}, {} head", c.n_layers, c.d_model,
                            c.vocab_size, c.max_seq, c.tie_embeddings ? "tied" : "separate"));
  std::string attn;
  if (c.mla.enabled()) {
    attn = fmt::format("MLA H={} q_lora={} kv_lora={} nope={} rope={} v={}", c.n_heads,
                       c.mla.q_lora_rank, c.mla.kv_lora_rank, c.mla.qk_nope_head_dim,
                       c.mla.qk_rope_head_dim, c.mla.v_head_dim);
  } else {
    attn = fmt::format("H={} Hkv={} Dh={}", c.n_heads, c.n_kv_heads, c.head_dim);
    if (c.qkv_bias) attn += ", qkv bias";
    if (c.o_bias) attn += ", o bias";
    if (c.qk_norm != QkNorm::kNone) attn += fmt::format(", q/k norm {}", Name(c.qk_norm));
    if (c.clip_qkv > 0) attn += fmt::format(", clip {}", c.clip_qkv);
  }
  attn +=
      fmt::format(", rope theta {} dims {} ({})", c.rope_theta, c.rope_dim(),
                  c.rope_pairing == kernels::RopePairing::kHalf ? "rotate_half" : "interleaved");
  if (c.rope_scaling.kind != kernels::RopeScalingKind::kNone)
    attn += fmt::format(" {} x{}", kernels::RopeScalingKindName(c.rope_scaling.kind),
                        c.rope_scaling.factor);
  attn += fmt::format(", softmax scale {:.4g}", c.softmax_scale());
  if (c.sliding_window > 0) attn += fmt::format(", sliding window {}", c.sliding_window);
  line("attention", attn);
  // FFN kinds as runs of equal layers.
  for (int64_t l = 0; l < c.n_layers;) {
    int64_t e = l;
    while (e + 1 < c.n_layers && FfnOf(c, e + 1) == FfnOf(c, l)) ++e;
    line(l == 0 ? "ffn" : "",
         fmt::format("layers {}: {}", e == l ? fmt::format("{}", l) : fmt::format("{}-{}", l, e),
                     FfnOf(c, l)));
    l = e + 1;
  }
  const ParamCounts p = CountParams(c);
  line("params", fmt::format("{} total, {} active per token ({:.1f}%)", Human(p.total(), ""),
                             Human(p.active(), ""), 100.0 * p.active() / p.total()));
  out += "memory as loaded (F32, 4 bytes per parameter):\n";
  const std::pair<const char*, double> parts[] = {
      {"embeddings", p.embed}, {"attention", p.attention}, {"experts", p.experts},
      {"shared", p.shared},    {"router", p.router},       {"dense ffn", p.dense_ffn},
      {"norms", p.norms},      {"head", p.head},
  };
  for (const auto& [name, n] : parts)
    if (n > 0)
      out +=
          fmt::format("  {:<12}{:>12}  {:5.1f}%\n", name, Human(4 * n, "B"), 100.0 * n / p.total());
  out += fmt::format("  {:<12}{:>12}\n", "total", Human(4 * p.total(), "B"));
  return out;
}

}  // namespace moe::model
