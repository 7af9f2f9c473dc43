#include "moe/model/inspect.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <string_view>
#include <vector>

#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/io/gguf.h"
#include "moe/model/gguf_model.h"
#include "moe/model/hf_model.h"
#include "moe/tokenizer/gguf_vocab.h"

namespace moe::model {

namespace {
constexpr std::string_view kTag = "inspect";

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

// Bytes in binary units, as llama.cpp and file managers print model files: "3.10 GiB".
std::string Bytes(double v) {
  const char* prefix[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int i = 0;
  while (v >= 1024 && i < 5) v /= 1024, ++i;
  return i == 0 ? fmt::format("{:.0f} B", v) : fmt::format("{:.2f} {}", v, prefix[i]);
}

void Line(std::string& out, const char* key, const std::string& value) {
  out += fmt::format("{:<11}{}\n", key, value);
}

// shape, attention, ffn (runs of equal layers) and params lines: the same for every format.
void DescribeConfig(const ModelConfig& c, std::string& out) {
  auto line = [&](const char* key, const std::string& value) { Line(out, key, value); };
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
}

// The parts of GgufReport::parts, in order; PartOf returns an index into it.
constexpr const char* kParts[] = {"embeddings",     "attention",      "router",
                                  "routed experts", "shared experts", "dense ffn",
                                  "norms",          "head",           "other"};
enum PartIndex : size_t {
  kEmbed,
  kAttention,
  kRouter,
  kExperts,
  kShared,
  kDense,
  kNorms,
  kHead,
  kOther
};

// Which part a tensor of the llama.cpp layout belongs to, as CountParams splits a config:
// q/k and MLA latent norms and attention biases count as attention, the shared-expert gate and the
// selection bias as router.
PartIndex PartOf(std::string_view name) {
  if (name == "token_embd.weight") return kEmbed;
  if (name == "output.weight") return kHead;
  if (name == "output_norm.weight") return kNorms;
  if (!name.starts_with("blk.")) return kOther;
  const size_t dot = name.find('.', 4);
  if (dot == std::string_view::npos) return kOther;
  const std::string_view t = name.substr(dot + 1);  // "attn_q.weight"
  if (t.starts_with("attn_norm.") || t.starts_with("ffn_norm.")) return kNorms;
  if (t.starts_with("attn_")) return kAttention;
  if (t.starts_with("ffn_gate_inp") || t.starts_with("exp_probs_b.")) return kRouter;
  if (t.find("_shexp.") != std::string_view::npos) return kShared;
  if (t.find("_exps.") != std::string_view::npos) return kExperts;
  for (std::string_view ffn : {"ffn_gate.", "ffn_up.", "ffn_down."}) {
    if (!t.starts_with(ffn)) continue;
    // Older files: one tensor per expert, "ffn_gate.E.weight"; a dense FFN: "ffn_gate.weight".
    const std::string_view rest = t.substr(ffn.size());
    return !rest.empty() && rest[0] >= '0' && rest[0] <= '9' ? kExperts : kDense;
  }
  return kOther;
}

// llama.cpp's general.file_type names (LLAMA_FTYPE_*), those in common use.
std::string FileTypeName(int64_t t) {
  static const std::map<int64_t, const char*> names = {
      {0, "F32"},     {1, "F16"},     {2, "Q4_0"},    {3, "Q4_1"},    {7, "Q8_0"},
      {8, "Q5_0"},    {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"},
      {13, "Q3_K_L"}, {14, "Q4_K_S"}, {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"},
      {18, "Q6_K"},   {32, "BF16"},
  };
  const auto it = names.find(t);
  return it != names.end() ? it->second : fmt::format("{}", t);
}

std::string StringOr(const io::GgufFile& f, std::string_view key) {
  const io::GgufValue* v = f.Find(key);
  return v != nullptr && v->type() == io::GgufValueType::kString ? v->str() : "";
}

int64_t ArraySize(const io::GgufFile& f, std::string_view key) {
  const io::GgufValue* v = f.Find(key);
  return v != nullptr && v->is_array() ? static_cast<int64_t>(v->size()) : 0;
}

}  // namespace

GgufReport ReadGgufReport(const std::string& path) {
  const io::GgufFile f = io::GgufFile::Open(path);
  GgufReport r;
  r.config = GgufModelConfig(f, path, &r.architecture);
  r.name = StringOr(f, "general.name");
  r.version = f.version();
  r.file_bytes = f.file_size();
  r.data_offset = f.data_offset();
  r.tensors = static_cast<int64_t>(f.tensors().size());
  for (const char* name : kParts) r.parts.push_back({.name = name});
  std::map<io::GgmlType, GgufReport::TypeUse> types;
  double expert_bytes = 0, expert_active_bytes = 0;
  const ModelConfig& c = r.config;
  for (const io::GgufTensorInfo& t : f.tensors()) {
    const PartIndex i = PartOf(t.name);
    GgufReport::Part& p = r.parts[i];
    p.params += static_cast<double>(t.numel);
    p.bytes += t.nbytes;
    ++p.tensors;
    r.tensor_bytes += t.nbytes;
    GgufReport::TypeUse& u = types[t.type];
    u.name = std::string(io::GgmlTypeName(t.type));
    u.supported = t.traits().supported;
    ++u.tensors;
    u.params += static_cast<double>(t.numel);
    u.bytes += t.nbytes;
    if (i == kExperts) {
      // Every routed expert tensor holds E experts (merged) or one of them: a token reads K/E.
      expert_bytes += static_cast<double>(t.nbytes);
      if (c.moe.n_experts > 0)
        expert_active_bytes += static_cast<double>(t.nbytes) * static_cast<double>(c.moe.top_k) /
                               static_cast<double>(c.moe.n_experts);
    }
  }
  r.active_bytes = static_cast<double>(r.tensor_bytes) - expert_bytes + expert_active_bytes;
  for (auto& [type, u] : types) r.types.push_back(std::move(u));
  std::stable_sort(r.types.begin(), r.types.end(),
                   [](const auto& a, const auto& b) { return a.bytes > b.bytes; });
  if (const io::GgufValue* ft = f.Find("general.file_type"); ft != nullptr && ft->AsI64())
    r.file_type = *ft->AsI64();
  r.tokenizer_model = StringOr(f, "tokenizer.ggml.model");
  r.tokenizer_pre = StringOr(f, "tokenizer.ggml.pre");
  r.tokenizer_tokens = ArraySize(f, "tokenizer.ggml.tokens");
  r.tokenizer_merges = ArraySize(f, "tokenizer.ggml.merges");
  if (f.Has("tokenizer.ggml.model")) {
    try {
      tokenizer::TokenizerSpecFromGguf(f);
    } catch (const Error& e) {
      r.tokenizer_problem = e.what();
    }
  }
  if (const io::GgufValue* ct = f.Find("tokenizer.chat_template");
      ct != nullptr && ct->type() == io::GgufValueType::kString)
    r.chat_template_bytes = static_cast<int64_t>(ct->str().size());
  return r;
}

std::string InspectGguf(const std::string& path) {
  const GgufReport r = ReadGgufReport(path);
  std::string out;
  auto line = [&](const char* key, const std::string& value) { Line(out, key, value); };
  std::string model = fmt::format("{} (GGUF {}", path, r.architecture);
  if (!r.name.empty()) model += fmt::format(", \"{}\"", r.name);
  if (r.file_type >= 0) model += fmt::format(", file type {}", FileTypeName(r.file_type));
  line("model", model + ")");
  line("file", fmt::format("{} ({} bytes), GGUF v{}, {} tensors, {} of tensor data from byte {}",
                           Bytes(static_cast<double>(r.file_bytes)), r.file_bytes, r.version,
                           r.tensors, Bytes(static_cast<double>(r.tensor_bytes)), r.data_offset));
  DescribeConfig(r.config, out);
  if (r.tokenizer_model.empty()) {
    line("tokenizer", "none embedded (moe uses its byte tokenizer)");
  } else {
    std::string tok = fmt::format("{}", r.tokenizer_model);
    if (!r.tokenizer_pre.empty()) tok += fmt::format(" (pre {})", r.tokenizer_pre);
    tok += fmt::format(", {} tokens", r.tokenizer_tokens);
    if (r.tokenizer_merges > 0) tok += fmt::format(", {} merges", r.tokenizer_merges);
    if (!r.tokenizer_problem.empty())
      tok += fmt::format("; moe cannot read it: {}", r.tokenizer_problem);
    line("tokenizer", tok);
  }
  line("chat", r.chat_template_bytes >= 0
                   ? fmt::format("template present ({} bytes)", r.chat_template_bytes)
                   : std::string("no template"));
  const double total = static_cast<double>(r.tensor_bytes);
  auto pct = [&](double b) { return total > 0 ? 100.0 * b / total : 0.0; };
  auto bits = [](double bytes, double params) { return params > 0 ? 8 * bytes / params : 0.0; };
  out += "memory in the file, by part (bytes as stored):\n";
  double params = 0;
  for (const GgufReport::Part& p : r.parts) {
    params += p.params;
    if (p.tensors == 0) continue;
    out += fmt::format("  {:<15}{:>12}  {:5.1f}%  {:>12} params  {:5.2f} bits/param\n", p.name,
                       Bytes(static_cast<double>(p.bytes)), pct(static_cast<double>(p.bytes)),
                       Human(p.params, ""), bits(static_cast<double>(p.bytes), p.params));
  }
  out += fmt::format("  {:<15}{:>12}  {:5.1f}%  {:>12} params  {:5.2f} bits/param\n", "total",
                     Bytes(total), 100.0, Human(params, ""), bits(total, params));
  if (r.config.NumMoeLayers() > 0)
    out += fmt::format("  {:<15}{:>12}  {:5.1f}%  (weights one token reads: K of E experts)\n",
                       "active/token", Bytes(r.active_bytes), pct(r.active_bytes));
  out += "tensor types:\n";
  for (const GgufReport::TypeUse& u : r.types)
    out +=
        fmt::format("  {:<8}{:>5} tensors  {:>12}  {:5.1f}%  {:5.2f} bits/param{}\n", u.name,
                    u.tensors, Bytes(static_cast<double>(u.bytes)),
                    pct(static_cast<double>(u.bytes)), bits(static_cast<double>(u.bytes), u.params),
                    u.supported ? "" : "  (no moe kernels: the loader refuses it)");
  return out;
}

std::string InspectModel(const std::string& path) {
  if (!io::IsDirectory(path)) {
    MOE_CHECK(!io::PathExists(path) || path.ends_with(".gguf"), kTag,
              "'{}' is a file but not a .gguf model (expected a model folder or a .gguf file)",
              path);
    if (path.ends_with(".gguf")) return InspectGguf(path);
  }
  const std::string& dir = path;
  const Architecture* arch = nullptr;
  const ModelConfig c = ReadHfConfig(dir, &arch);
  std::string out;
  auto line = [&](const char* key, const std::string& value) { Line(out, key, value); };
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
  DescribeConfig(c, out);
  const ParamCounts p = CountParams(c);
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
