#include "moe/model/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "moe/core/dtype.h"
#include "moe/core/error.h"
#include "moe/io/gguf.h"
#include "moe/kernels/quant.h"
#include "moe/tokenizer/gguf_vocab.h"

namespace moe::model {

namespace {
constexpr std::string_view kTag = "gguf";

using io::GgmlType;
using io::GgufValue;
using Lookup = std::function<const GgufValue*(std::string_view)>;

constexpr std::string_view kArchs[] = {"llama",    "qwen2", "qwen2moe",
                                       "qwen3moe", "olmoe", "deepseek2"};

bool KnownArch(std::string_view a) {
  return std::find(std::begin(kArchs), std::end(kArchs), a) != std::end(kArchs);
}

// One GGUF tensor and where its elements live in the canonical weights: `copies` move runs of
// elements between the GGUF tensor (row-major `shape`) and `dst`.
struct Copy {
  size_t gguf_off, canon_off, n;
};
struct Part {
  std::string name;
  std::vector<int64_t> shape;  // row-major
  Tensor* dst = nullptr;
  std::vector<Copy> copies;
  bool permute_rope = false;  // attn_q / attn_k of llama: interleaved-pair row order
  int64_t rope_heads = 0;
  bool is_vector = false;  // norms, biases, gates: kept F32
  std::string role;        // "attn_v", "ffn_down", "output", "token_embd", "router", ""
  int64_t layer = -1;
};

// The GGUF tensors of cfg/weights. merged(l): layer l's experts use the [E, ...] tensors.
std::vector<Part> PlanParts(const ModelConfig& cfg, ModelWeights& w, bool llama_permute,
                            const std::function<bool(int64_t)>& merged) {
  std::vector<Part> out;
  // whole() hands out pointers into `out`: reserve the most parts any layer can have so that no
  // push_back reallocates.
  out.reserve(
      static_cast<size_t>(4 + cfg.n_layers * (32 + 3 * std::max<int64_t>(0, cfg.moe.n_experts))));
  auto whole = [&](std::string name, Tensor& t, std::string role = "", int64_t layer = -1) {
    Part p;
    p.name = std::move(name);
    for (int i = 0; i < t.shape().rank; ++i) p.shape.push_back(t.shape()[i]);
    p.dst = &t;
    p.copies.push_back({0, 0, static_cast<size_t>(t.numel())});
    p.is_vector = t.shape().rank == 1;
    p.role = std::move(role);
    p.layer = layer;
    out.push_back(std::move(p));
    return &out.back();
  };
  // rows [r0, r1) of each of `experts` leading slices of t (experts = 0: t is a matrix).
  auto rows = [&](std::string name, Tensor& t, int64_t experts, int64_t r0, int64_t r1,
                  std::string role, int64_t layer, int64_t only_expert = -1) {
    Part p;
    p.name = std::move(name);
    const int64_t cols = t.shape()[t.shape().rank - 1];
    const int64_t per = experts > 0 ? t.numel() / t.shape()[0] : 0;
    if (experts > 0 && only_expert < 0) p.shape.push_back(experts);
    p.shape.push_back(r1 - r0);
    p.shape.push_back(cols);
    p.dst = &t;
    const size_t n = static_cast<size_t>((r1 - r0) * cols);
    if (experts == 0) {
      p.copies.push_back({0, static_cast<size_t>(r0 * cols), n});
    } else if (only_expert >= 0) {
      p.copies.push_back({0, static_cast<size_t>(only_expert * per + r0 * cols), n});
    } else {
      for (int64_t e = 0; e < experts; ++e)
        p.copies.push_back(
            {static_cast<size_t>(e) * n, static_cast<size_t>(e * per + r0 * cols), n});
    }
    p.role = std::move(role);
    p.layer = layer;
    out.push_back(std::move(p));
  };
  whole("token_embd.weight", w.embed, "token_embd");
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    LayerWeights& L = w.layers[static_cast<size_t>(l)];
    const std::string b = "blk." + std::to_string(l) + ".";
    whole(b + "attn_norm.weight", L.attn_norm);
    if (cfg.mla.enabled()) {
      if (L.wq.defined()) {
        whole(b + "attn_q.weight", L.wq, "", l);
      } else {
        whole(b + "attn_q_a.weight", L.wq_a, "", l);
        whole(b + "attn_q_a_norm.weight", L.q_a_norm);
        whole(b + "attn_q_b.weight", L.wq_b, "", l);
      }
      whole(b + "attn_kv_a_mqa.weight", L.wkv_a, "", l);
      whole(b + "attn_kv_a_norm.weight", L.kv_a_norm);
      whole(b + "attn_kv_b.weight", L.wkv_b, "", l);
      whole(b + "attn_output.weight", L.wo, "", l);
    } else {
      Part* q = whole(b + "attn_q.weight", L.wq, "", l);
      Part* k = whole(b + "attn_k.weight", L.wk, "", l);
      if (llama_permute) {
        q->permute_rope = k->permute_rope = true;
        q->rope_heads = cfg.n_heads;
        k->rope_heads = cfg.n_kv_heads;
      }
      whole(b + "attn_v.weight", L.wv, "attn_v", l);
      whole(b + "attn_output.weight", L.wo, "", l);
      if (L.bq.defined()) {
        Part* bq = whole(b + "attn_q.bias", L.bq);
        Part* bk = whole(b + "attn_k.bias", L.bk);
        if (llama_permute) {
          bq->permute_rope = bk->permute_rope = true;
          bq->rope_heads = cfg.n_heads;
          bk->rope_heads = cfg.n_kv_heads;
        }
        whole(b + "attn_v.bias", L.bv);
      }
      if (L.bo.defined()) whole(b + "attn_output.bias", L.bo);
    }
    if (L.q_norm.defined()) whole(b + "attn_q_norm.weight", L.q_norm);
    if (L.k_norm.defined()) whole(b + "attn_k_norm.weight", L.k_norm);
    whole(b + "ffn_norm.weight", L.ffn_norm);
    if (!L.is_moe) {
      const int64_t fd = cfg.dense_d_ff;
      rows(b + "ffn_gate.weight", L.w13, 0, 0, fd, "", l);
      rows(b + "ffn_up.weight", L.w13, 0, fd, 2 * fd, "", l);
      whole(b + "ffn_down.weight", L.w2, "ffn_down", l);
      continue;
    }
    mixture::MoeWeights& m = L.moe;
    const int64_t E = cfg.moe.n_experts, F = cfg.moe.d_ff;
    whole(b + "ffn_gate_inp.weight", m.router, "router", l)->is_vector = true;
    if (m.bias.defined()) whole(b + "exp_probs_b.bias", m.bias);
    if (merged(l)) {
      rows(b + "ffn_gate_exps.weight", m.w13, E, 0, F, "", l);
      rows(b + "ffn_up_exps.weight", m.w13, E, F, 2 * F, "", l);
      whole(b + "ffn_down_exps.weight", m.w2, "ffn_down", l);
    } else {
      const int64_t D = cfg.d_model;
      for (int64_t e = 0; e < E; ++e) {
        rows(fmt::format("{}ffn_gate.{}.weight", b, e), m.w13, E, 0, F, "", l, e);
        rows(fmt::format("{}ffn_up.{}.weight", b, e), m.w13, E, F, 2 * F, "", l, e);
        rows(fmt::format("{}ffn_down.{}.weight", b, e), m.w2, E, 0, D, "ffn_down", l, e);
      }
    }
    if (m.shared_w13.defined()) {
      const int64_t fs = cfg.moe.shared_d_ff;
      rows(b + "ffn_gate_shexp.weight", m.shared_w13, 0, 0, fs, "", l);
      rows(b + "ffn_up_shexp.weight", m.shared_w13, 0, fs, 2 * fs, "", l);
      whole(b + "ffn_down_shexp.weight", m.shared_w2, "ffn_down", l);
    }
    if (m.shared_gate.defined()) {
      Part* g = whole(b + "ffn_gate_inp_shexp.weight", m.shared_gate, "router", l);
      g->shape = {cfg.d_model};  // llama.cpp keeps it as a vector [D]
      g->is_vector = true;
    }
  }
  whole("output_norm.weight", w.final_norm);
  if (w.lm_head.defined()) whole("output.weight", w.lm_head, "output");
  return out;
}

// RoPE row order of llama-arch attn_q / attn_k: GGUF (interleaved pairs) row h*Dh + 2i + j holds
// Hugging Face (rotate-half) row h*Dh + j*Dh/2 + i. to_gguf: HF -> GGUF, else back.
void PermuteRows(std::vector<float>& v, int64_t heads, int64_t cols, bool to_gguf) {
  const int64_t nrows = static_cast<int64_t>(v.size()) / cols;
  const int64_t dh = nrows / heads;
  MOE_CHECK(dh % 2 == 0 && dh * heads == nrows, kTag,
            "cannot permute {} rows for RoPE over {} heads (odd head size)", nrows, heads);
  const std::vector<float> src = v;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < dh / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t g = h * dh + 2 * i + j, f = h * dh + j * (dh / 2) + i;
        const int64_t to = to_gguf ? g : f, from = to_gguf ? f : g;
        std::memcpy(&v[static_cast<size_t>(to * cols)], &src[static_cast<size_t>(from * cols)],
                    static_cast<size_t>(cols) * sizeof(float));
      }
}

// Dequantises a GGUF tensor into f32.
std::vector<float> ToF32(const io::GgufFile& f, const io::GgufTensorInfo& t) {
  f.RequireSupported(t);
  std::vector<float> out(static_cast<size_t>(t.numel));
  switch (t.type) {
    case GgmlType::kF32:
      std::memcpy(out.data(), t.data, out.size() * sizeof(float));
      break;
    case GgmlType::kF16:
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = FromF16(h);
      }
      break;
    case GgmlType::kBF16:
      for (size_t i = 0; i < out.size(); ++i) {
        bf16 h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = FromBf16(h);
      }
      break;
    default: {
      const kernels::QuantType q = kernels::QuantTypeFromGgml(static_cast<int>(t.type));
      kernels::Dequantize(q, t.data, out.data(), t.numel);
    }
  }
  return out;
}

// ---- MLA kv_b in the split form of newer llama.cpp converters (docs/FORMATS.md)
//
// Our wkv_b (Hugging Face kv_b_proj) is [H*(Dn+Dv), R] row-major: per head h, Dn rows of the
// no-RoPE key part, then Dv value rows. The split form stores per head the key rows transposed,
// attn_k_b ggml [Dn, R, H] (row-major [H][R][Dn]), and the value rows as they are, attn_v_b ggml
// [R, Dv, H] (row-major [H][Dv][R]).

constexpr std::string_view kKvB = "attn_kv_b.weight", kKB = "attn_k_b.weight",
                           kVB = "attn_v_b.weight";

// Whether layer `prefix` ("blk.N.") has a split-form tensor (complete or not).
bool HasSplitKvB(const io::GgufFile& f, const std::string& prefix) {
  return f.HasTensor(prefix + std::string(kKB)) || f.HasTensor(prefix + std::string(kVB));
}

struct SplitKvB {
  const io::GgufTensorInfo* k;  // ggml [Dn, R, H]
  const io::GgufTensorInfo* v;  // ggml [R, Dv, H]
};

// Layer `prefix`'s attn_k_b and attn_v_b, both present and shaped as cfg says (Error naming the
// tensor, its shape and the metadata keys behind the expected one otherwise).
SplitKvB FindSplitKvB(const io::GgufFile& f, const ModelConfig& cfg, const std::string& prefix,
                      const std::string& path) {
  const std::string kn = prefix + std::string(kKB), vn = prefix + std::string(kVB);
  const SplitKvB s{f.FindTensor(kn), f.FindTensor(vn)};
  MOE_CHECK(s.k != nullptr && s.v != nullptr, kTag,
            "{}: tensor '{}' is missing: the split MLA form stores '{}' and '{}' together "
            "(or '{}{}' alone)",
            path, s.k == nullptr ? kn : vn, kn, vn, prefix, kKvB);
  const MlaConfig& m = cfg.mla;
  // The keys the widths came from (ConfigFrom): the _mla ones when set.
  const std::string a = f.GetString("general.architecture") + ".attention.";
  const bool mla_keys = f.Has(a + "key_length_mla");
  const std::string k_key = a + (mla_keys ? "key_length_mla" : "key_length"),
                    v_key = a + (mla_keys ? "value_length_mla" : "value_length");
  auto check = [&](const io::GgufTensorInfo& t, std::vector<int64_t> want,
                   const std::string& from) {
    // A trailing 1 (one head) may be left out.
    std::vector<int64_t> got = t.dims;
    while (got.size() < want.size()) got.push_back(1);
    MOE_CHECK(got == want, kTag,
              "{}: tensor '{}' has shape {}, expected [{}] (ggml order; {}, kv_lora_rank {}, "
              "head_count {} from the metadata)",
              path, t.name, t.ShapeStr(), fmt::join(want, ","), from, m.kv_lora_rank, cfg.n_heads);
  };
  check(*s.k, {m.qk_nope_head_dim, m.kv_lora_rank, cfg.n_heads},
        fmt::format("no-RoPE key width {} = '{}' {} - rope.dimension_count {}", m.qk_nope_head_dim,
                    k_key, cfg.head_dim, m.qk_rope_head_dim));
  check(*s.v, {m.kv_lora_rank, m.v_head_dim, cfg.n_heads},
        fmt::format("value width '{}' {}", v_key, m.v_head_dim));
  return s;
}

// wkv_b [H*(Dn+Dv), R] from the split pair (dequantised).
std::vector<float> KvBFromSplit(const io::GgufFile& f, const SplitKvB& s, const ModelConfig& cfg) {
  const int64_t H = cfg.n_heads, dn = cfg.mla.qk_nope_head_dim, dv = cfg.mla.v_head_dim,
                r = cfg.mla.kv_lora_rank;
  const std::vector<float> k = ToF32(f, *s.k), v = ToF32(f, *s.v);
  std::vector<float> out(static_cast<size_t>(H * (dn + dv) * r));
  for (int64_t h = 0; h < H; ++h) {
    float* head = out.data() + h * (dn + dv) * r;
    const float* kh = k.data() + h * r * dn;
    for (int64_t j = 0; j < dn; ++j)
      for (int64_t c = 0; c < r; ++c) head[j * r + c] = kh[c * dn + j];
    std::memcpy(head + dn * r, v.data() + h * dv * r, static_cast<size_t>(dv * r) * sizeof(float));
  }
  return out;
}

// The inverse: k [H][R][Dn] and v [H][Dv][R] from wkv_b [H*(Dn+Dv), R].
void SplitKvBRows(const float* kv, const ModelConfig& cfg, std::vector<float>& k,
                  std::vector<float>& v) {
  const int64_t H = cfg.n_heads, dn = cfg.mla.qk_nope_head_dim, dv = cfg.mla.v_head_dim,
                r = cfg.mla.kv_lora_rank;
  k.resize(static_cast<size_t>(H * r * dn));
  v.resize(static_cast<size_t>(H * dv * r));
  for (int64_t h = 0; h < H; ++h) {
    const float* head = kv + h * (dn + dv) * r;
    float* kh = k.data() + h * r * dn;
    for (int64_t j = 0; j < dn; ++j)
      for (int64_t c = 0; c < r; ++c) kh[c * dn + j] = head[j * r + c];
    std::memcpy(v.data() + h * dv * r, head + dn * r, static_cast<size_t>(dv * r) * sizeof(float));
  }
}

// Layer `prefix`'s wkv_b when the file stores it split; nullopt when attn_kv_b is there (the
// caller reads it as usual; a split pair next to it, as ik_llama.cpp's converter writes, is
// shape-checked and not read). `use` is called with the names of a split pair.
std::optional<std::vector<float>> ReadSplitKvB(const io::GgufFile& f, const ModelConfig& cfg,
                                               const std::string& prefix, const std::string& path,
                                               const std::function<void(const std::string&)>& use) {
  if (!HasSplitKvB(f, prefix)) return std::nullopt;
  const SplitKvB s = FindSplitKvB(f, cfg, prefix, path);
  use(s.k->name);
  use(s.v->name);
  if (f.HasTensor(prefix + std::string(kKvB))) return std::nullopt;
  return KvBFromSplit(f, s, cfg);
}

// ---- loading for inference: weights used in place (mmap)

// Fills the inference layout of `w` from the file without copying F32 and block-quantised
// matrices: they are borrowed from the mapping (kept alive by the tensors). F16/BF16 matrices and
// every non-F32 vector are converted to owned f32. llama-arch attn_q / attn_k stay in the file's
// row order; the caller switches RoPE to interleaved pairs, which is the same rotation in that order.
class MappedLoader {
 public:
  MappedLoader(const io::GgufFile& f, std::shared_ptr<const void> owner, const std::string& path)
      : f_(f), owner_(std::move(owner)), path_(path) {}

  // A matrix (or a vector kept as is): borrowed when F32 or quantised, else f32.
  void Matrix(const std::string& name, Tensor& dst, Shape want) {
    const io::GgufTensorInfo& t = Find(name, want);
    dst = Borrowable(t) ? Tensor::Borrow(DTypeFor(t), want, t.data, owner_) : ToTensor(t, want);
  }
  // Norms, biases, routers and gates: always F32 (borrowed when the file holds F32).
  void Vector(const std::string& name, Tensor& dst, Shape want) {
    const io::GgufTensorInfo& t = Find(name, want);
    dst = t.type == GgmlType::kF32 && Borrowable(t)
              ? Tensor::Borrow(DType::kF32, want, t.data, owner_)
              : ToTensor(t, want);
  }
  // Expert slices of a merged [E, rows, cols] tensor: (experts[e].*part) = slice e.
  void Experts(const std::string& name, std::vector<mixture::FfnMatrices>& experts,
               Tensor mixture::FfnMatrices::*part, int64_t rows, int64_t cols) {
    const auto e_count = static_cast<int64_t>(experts.size());
    const io::GgufTensorInfo& t = Find(name, {e_count, rows, cols});
    const Shape one{rows, cols};
    if (Borrowable(t)) {
      const size_t slice = TensorBytes(DTypeFor(t), one);
      for (int64_t e = 0; e < e_count; ++e)
        experts[static_cast<size_t>(e)].*part =
            Tensor::Borrow(DTypeFor(t), one, t.data + static_cast<size_t>(e) * slice, owner_);
      return;
    }
    const std::vector<float> v = ToF32(f_, t);
    const auto n = static_cast<size_t>(rows * cols);
    for (int64_t e = 0; e < e_count; ++e) {
      Tensor x(DType::kF32, one);
      std::memcpy(x.raw(), v.data() + static_cast<size_t>(e) * n, n * sizeof(float));
      experts[static_cast<size_t>(e)].*part = std::move(x);
    }
  }
  // Records a tensor read outside the loader (the split MLA pair).
  void Use(const std::string& name) { used_.insert(name); }
  const std::set<std::string>& used() const { return used_; }

 private:
  const io::GgufTensorInfo& Find(const std::string& name, const Shape& want) {
    const io::GgufTensorInfo* t = f_.FindTensor(name);
    MOE_CHECK(t != nullptr, kTag, "{}: tensor '{}' is missing (this config needs it)", path_, name);
    f_.RequireSupported(*t);
    std::vector<int64_t> shape = t->RowMajorShape();
    std::vector<int64_t> w(want.dims.begin(), want.dims.begin() + want.rank);
    // Vectors may be stored as [1, D] and [1, D] gates as [D].
    while (shape.size() > w.size() && shape.front() == 1) shape.erase(shape.begin());
    while (w.size() > shape.size() && w.front() == 1) w.erase(w.begin());
    MOE_CHECK(shape == w, kTag, "{}: tensor '{}' has shape {}, expected [{}] (ggml order)", path_,
              name, t->ShapeStr(), fmt::join(std::vector<int64_t>(w.rbegin(), w.rend()), ","));
    used_.insert(name);
    return *t;
  }
  // F32 and quantised data is used in place; F16/BF16 is converted, and so is F32 that a file with
  // general.alignment < 4 left at an address floats cannot be read from.
  static bool Borrowable(const io::GgufTensorInfo& t) {
    if (t.type == GgmlType::kF32) return reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0;
    return t.type != GgmlType::kF16 && t.type != GgmlType::kBF16;
  }
  static DType DTypeFor(const io::GgufTensorInfo& t) {
    return t.type == GgmlType::kF32
               ? DType::kF32
               : kernels::ToDType(kernels::QuantTypeFromGgml(static_cast<int>(t.type)));
  }
  Tensor ToTensor(const io::GgufTensorInfo& t, const Shape& want) const {
    const std::vector<float> v = ToF32(f_, t);
    Tensor x(DType::kF32, want);
    std::memcpy(x.raw(), v.data(), v.size() * sizeof(float));
    return x;
  }

  const io::GgufFile& f_;
  std::shared_ptr<const void> owner_;
  const std::string& path_;
  std::set<std::string> used_;
};

// Returns the names of the tensors it read.
std::set<std::string> LoadMapped(const io::GgufFile& f, const ModelConfig& cfg, ModelWeights& w,
                                 const std::string& path) {
  MappedLoader ld(f, f.storage(), path);
  const int64_t d = cfg.d_model, v = cfg.vocab_size;
  ld.Matrix("token_embd.weight", w.embed, {v, d});
  w.layers.clear();
  w.layers.resize(static_cast<size_t>(cfg.n_layers));
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    LayerWeights& L = w.layers[static_cast<size_t>(l)];
    const std::string b = "blk." + std::to_string(l) + ".";
    ld.Vector(b + "attn_norm.weight", L.attn_norm, {d});
    const int64_t wo_in = cfg.n_heads * cfg.v_head_dim();
    if (cfg.mla.enabled()) {
      const MlaConfig& m = cfg.mla;
      if (m.q_lora_rank > 0) {
        ld.Matrix(b + "attn_q_a.weight", L.wq_a, {m.q_lora_rank, d});
        ld.Vector(b + "attn_q_a_norm.weight", L.q_a_norm, {m.q_lora_rank});
        ld.Matrix(b + "attn_q_b.weight", L.wq_b, {cfg.q_dim(), m.q_lora_rank});
      } else {
        ld.Matrix(b + "attn_q.weight", L.wq, {cfg.q_dim(), d});
      }
      ld.Matrix(b + "attn_kv_a_mqa.weight", L.wkv_a, {m.kv_lora_rank + m.qk_rope_head_dim, d});
      ld.Vector(b + "attn_kv_a_norm.weight", L.kv_a_norm, {m.kv_lora_rank});
      const Shape kv_b{cfg.n_heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank};
      if (std::optional<std::vector<float>> split =
              ReadSplitKvB(f, cfg, b, path, [&](const std::string& name) { ld.Use(name); })) {
        // Assembled once into an owned f32 matrix (small: R columns).
        L.wkv_b = Tensor(DType::kF32, kv_b);
        std::memcpy(L.wkv_b.raw(), split->data(), split->size() * sizeof(float));
      } else {
        ld.Matrix(b + "attn_kv_b.weight", L.wkv_b, kv_b);
      }
    } else {
      ld.Matrix(b + "attn_q.weight", L.wq, {cfg.q_dim(), d});
      ld.Matrix(b + "attn_k.weight", L.wk, {cfg.kv_dim(), d});
      ld.Matrix(b + "attn_v.weight", L.wv, {cfg.kv_dim(), d});
      if (cfg.qkv_bias) {
        ld.Vector(b + "attn_q.bias", L.bq, {cfg.q_dim()});
        ld.Vector(b + "attn_k.bias", L.bk, {cfg.kv_dim()});
        ld.Vector(b + "attn_v.bias", L.bv, {cfg.kv_dim()});
      }
      if (cfg.qk_norm != QkNorm::kNone) {
        const bool per_head = cfg.qk_norm == QkNorm::kPerHead;
        ld.Vector(b + "attn_q_norm.weight", L.q_norm, {per_head ? cfg.head_dim : cfg.q_dim()});
        ld.Vector(b + "attn_k_norm.weight", L.k_norm, {per_head ? cfg.head_dim : cfg.kv_dim()});
      }
    }
    ld.Matrix(b + "attn_output.weight", L.wo, {d, wo_in});
    if (cfg.o_bias) ld.Vector(b + "attn_output.bias", L.bo, {d});
    ld.Vector(b + "ffn_norm.weight", L.ffn_norm, {d});
    L.is_moe = cfg.IsMoeLayer(l);
    if (!L.is_moe) {
      const int64_t fd = cfg.dense_d_ff;
      ld.Matrix(b + "ffn_gate.weight", L.ffn.gate, {fd, d});
      ld.Matrix(b + "ffn_up.weight", L.ffn.up, {fd, d});
      ld.Matrix(b + "ffn_down.weight", L.ffn.down, {d, fd});
      continue;
    }
    mixture::MoeWeights& m = L.moe;
    const mixture::MoeConfig& mc = cfg.moe;
    const int64_t E = mc.n_experts, F = mc.d_ff;
    ld.Vector(b + "ffn_gate_inp.weight", m.router, {E, d});
    if (mc.selection_bias) ld.Vector(b + "exp_probs_b.bias", m.bias, {E});
    m.experts.resize(static_cast<size_t>(E));
    using FM = mixture::FfnMatrices;
    if (!f.HasTensor(b + "ffn_gate.0.weight")) {
      ld.Experts(b + "ffn_gate_exps.weight", m.experts, &FM::gate, F, d);
      ld.Experts(b + "ffn_up_exps.weight", m.experts, &FM::up, F, d);
      ld.Experts(b + "ffn_down_exps.weight", m.experts, &FM::down, d, F);
    } else {
      for (int64_t e = 0; e < E; ++e) {
        FM& x = m.experts[static_cast<size_t>(e)];
        ld.Matrix(fmt::format("{}ffn_gate.{}.weight", b, e), x.gate, {F, d});
        ld.Matrix(fmt::format("{}ffn_up.{}.weight", b, e), x.up, {F, d});
        ld.Matrix(fmt::format("{}ffn_down.{}.weight", b, e), x.down, {d, F});
      }
    }
    if (mc.shared_d_ff > 0) {
      const int64_t fs = mc.shared_d_ff;
      ld.Matrix(b + "ffn_gate_shexp.weight", m.shared.gate, {fs, d});
      ld.Matrix(b + "ffn_up_shexp.weight", m.shared.up, {fs, d});
      ld.Matrix(b + "ffn_down_shexp.weight", m.shared.down, {d, fs});
    }
    if (mc.shared_gate) ld.Vector(b + "ffn_gate_inp_shexp.weight", m.shared_gate, {1, d});
  }
  ld.Vector("output_norm.weight", w.final_norm, {d});
  if (!cfg.tie_embeddings) ld.Matrix("output.weight", w.lm_head, {v, d});
  return ld.used();
}

// A tensor the model does not read is an Error (a wrong architecture or config), except
// rope_freqs, which GgufModelConfig has read.
void RequireAllUsed(const io::GgufFile& f, const std::set<std::string>& used,
                    const std::string& arch, const std::string& path) {
  std::vector<std::string> unexpected;
  for (const io::GgufTensorInfo& t : f.tensors())
    if (!used.contains(t.name) && !t.name.ends_with("rope_freqs.weight"))
      unexpected.push_back(t.name);
  MOE_CHECK(unexpected.empty(), kTag, "{}: {} tensors this {} model does not use (first: '{}')",
            path, unexpected.size(), arch, unexpected.empty() ? "" : unexpected.front());
}

// ---- config <-> metadata

int64_t IntOr(const Lookup& find, const std::string& key, int64_t dflt, const std::string& origin) {
  const GgufValue* v = find(key);
  if (v == nullptr) return dflt;
  const auto x = v->AsI64();
  MOE_CHECK(x.has_value(), kTag, "{}: '{}' must be an integer, got {}", origin, key, v->ToString());
  return *x;
}
int64_t IntReq(const Lookup& find, const std::string& key, const std::string& origin) {
  MOE_CHECK(find(key) != nullptr, kTag, "{}: metadata key '{}' is missing", origin, key);
  return IntOr(find, key, 0, origin);
}
double FloatOr(const Lookup& find, const std::string& key, double dflt, const std::string& origin) {
  const GgufValue* v = find(key);
  if (v == nullptr) return dflt;
  const auto x = v->AsF64();
  MOE_CHECK(x.has_value(), kTag, "{}: '{}' must be a number, got {}", origin, key, v->ToString());
  return *x;
}
bool BoolOr(const Lookup& find, const std::string& key, bool dflt) {
  const GgufValue* v = find(key);
  return v != nullptr && v->AsBool() ? *v->AsBool() : dflt;
}

// `moe_layers[l]`: layer l has an MoE FFN; vocab from the embedding; tie when output.weight is
// absent.
ModelConfig ConfigFrom(const std::string& arch, const Lookup& find, int64_t vocab,
                       const std::vector<uint8_t>& moe_layers, bool tie,
                       const std::string& origin) {
  MOE_CHECK(KnownArch(arch), kTag, "{}: architecture '{}' is not supported (supported: {})", origin,
            arch, GgufArchitectureNames());
  const std::string a = arch + ".";
  ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = IntReq(find, a + "embedding_length", origin);
  c.n_layers = IntReq(find, a + "block_count", origin);
  c.n_heads = IntReq(find, a + "attention.head_count", origin);
  c.n_kv_heads = IntOr(find, a + "attention.head_count_kv", c.n_heads, origin);
  c.head_dim = IntOr(find, a + "attention.key_length", 0, origin);
  c.max_seq = IntOr(find, a + "context_length", 4096, origin);
  c.rope_theta = FloatOr(find, a + "rope.freq_base", 10000.0, origin);
  c.norm_eps = FloatOr(find, a + "attention.layer_norm_rms_epsilon", 1e-5, origin);
  c.tie_embeddings = tie;
  c.bos_id = static_cast<int32_t>(IntOr(find, "tokenizer.ggml.bos_token_id", -1, origin));
  c.eos_id = static_cast<int32_t>(IntOr(find, "tokenizer.ggml.eos_token_id", -1, origin));
  c.clip_qkv = FloatOr(find, a + "attention.clamp_kqv", 0.0, origin);
  c.sliding_window = IntOr(find, a + "attention.sliding_window", 0, origin);
  const int64_t n_exp = IntOr(find, a + "expert_count", 0, origin);
  const bool any_moe = std::find(moe_layers.begin(), moe_layers.end(), 1) != moe_layers.end();
  MOE_CHECK(any_moe == (n_exp > 0), kTag,
            "{}: {}.expert_count = {} but {} layer has an ffn_gate_inp router tensor", origin, arch,
            n_exp, any_moe ? "a" : "no");
  const int64_t ffl = IntOr(find, a + "feed_forward_length", 0, origin);
  if (any_moe) {
    auto& m = c.moe;
    m.n_experts = n_exp;
    m.top_k = IntReq(find, a + "expert_used_count", origin);
    m.d_ff = IntOr(find, a + "expert_feed_forward_length", ffl, origin);
    // llama.cpp's defaults per architecture (Mixtral and Qwen3-MoE renormalise the top-K gates).
    m.renormalize = BoolOr(find, a + "expert_weights_norm", arch == "llama" || arch == "qwen3moe");
    m.shared_d_ff = IntOr(find, a + "expert_shared_feed_forward_length", 0, origin);
    m.shared_gate = arch == "qwen2moe" && m.shared_d_ff > 0;
    c.moe_layers = moe_layers;
    const bool all = std::find(moe_layers.begin(), moe_layers.end(), 0) == moe_layers.end();
    if (all) {
      c.moe_layers.clear();
      c.moe_every = 1;
    }
    c.dense_d_ff = all ? 0 : ffl;
  } else {
    c.moe_every = 0;
    c.dense_d_ff = ffl;
  }
  if (arch == "qwen2" || arch == "qwen2moe") c.qkv_bias = true;
  if (arch == "qwen3moe") c.qk_norm = QkNorm::kPerHead;
  if (arch == "olmoe") c.qk_norm = QkNorm::kFull;
  if (arch == "deepseek2") {
    // Multi-head latent attention; RoPE with interleaved pairs on the last Dr dims of each head
    // (as moe/model/arch/deepseek.cc), no Q/K permutation in the file.
    // Two forms (docs/FORMATS.md): the older one gives the per-head widths in key_length /
    // value_length; the split one (attn_k_b / attn_v_b) moves them to key_length_mla /
    // value_length_mla and describes the latent MQA view (one kv head of width R + Dr, values of
    // width R) in key_length / value_length / head_count_kv.
    const int64_t kv_heads = c.n_kv_heads;
    MOE_CHECK(kv_heads == c.n_heads || kv_heads == 1, kTag,
              "{}: '{}attention.head_count_kv' = {}; deepseek2 needs head_count ({}) or 1 (the "
              "latent MQA view)",
              origin, a, kv_heads, c.n_heads);
    c.n_kv_heads = c.n_heads;
    MlaConfig& mla = c.mla;
    mla.q_lora_rank = IntOr(find, a + "attention.q_lora_rank", 0, origin);
    mla.kv_lora_rank = IntReq(find, a + "attention.kv_lora_rank", origin);
    mla.qk_rope_head_dim = IntReq(find, a + "rope.dimension_count", origin);
    const std::string kl = a + "attention.key_length", vl = a + "attention.value_length";
    const std::string kl_mla = kl + "_mla", vl_mla = vl + "_mla";
    const bool split = find(kl_mla) != nullptr;
    MOE_CHECK(split == (find(vl_mla) != nullptr), kTag,
              "{}: '{}' is set but '{}' is missing (the split MLA form sets both)", origin,
              split ? kl_mla : vl_mla, split ? vl_mla : kl_mla);
    const std::string& k_key = split ? kl_mla : kl;
    const int64_t k_len = IntReq(find, k_key, origin);
    MOE_CHECK(k_len > mla.qk_rope_head_dim, kTag,
              "{}: '{}' = {} must exceed '{}rope.dimension_count' = {} (a key head is its nope "
              "then its rope dims)",
              origin, k_key, k_len, a, mla.qk_rope_head_dim);
    mla.qk_nope_head_dim = k_len - mla.qk_rope_head_dim;
    c.head_dim = k_len;
    mla.v_head_dim = IntReq(find, split ? vl_mla : vl, origin);
    if (split) {
      const int64_t latent_k = mla.kv_lora_rank + mla.qk_rope_head_dim;
      const int64_t got_k = IntOr(find, kl, latent_k, origin);
      MOE_CHECK(got_k == latent_k, kTag,
                "{}: '{}' = {} but with '{}' set it is the latent key width kv_lora_rank + "
                "rope.dimension_count = {}",
                origin, kl, got_k, kl_mla, latent_k);
      const int64_t got_v = IntOr(find, vl, mla.kv_lora_rank, origin);
      MOE_CHECK(got_v == mla.kv_lora_rank, kTag,
                "{}: '{}' = {} but with '{}' set it is the latent value width kv_lora_rank = {}",
                origin, vl, got_v, vl_mla, mla.kv_lora_rank);
    }
    c.rope_pairing = kernels::RopePairing::kInterleaved;
    auto& m = c.moe;
    if (any_moe) {
      const int64_t gating = IntOr(find, a + "expert_gating_func", 1, origin);
      MOE_CHECK(gating == 1 || gating == 2, kTag,
                "{}: {}expert_gating_func = {} is not supported (1 softmax, 2 sigmoid)", origin, a,
                gating);
      const bool sigmoid = gating == 2;
      m.score = sigmoid ? mixture::ScoreFn::kSigmoid : mixture::ScoreFn::kSoftmax;
      m.selection_bias = sigmoid;
      m.n_groups = IntOr(find, a + "expert_group_count", 1, origin);
      m.topk_groups = IntOr(find, a + "expert_group_used_count", 1, origin);
      m.group_score = sigmoid ? mixture::GroupScore::kTop2Sum : mixture::GroupScore::kMax;
      m.route_scale = FloatOr(find, a + "expert_weights_scale", 1.0, origin);
      m.renormalize = BoolOr(find, a + "expert_weights_norm", false);
      m.shared_d_ff = IntOr(find, a + "expert_shared_count", 0, origin) * m.d_ff;
    }
  }
  if (const GgufValue* st = find(a + "rope.scaling.type"); st != nullptr) {
    MOE_CHECK(st->type() == io::GgufValueType::kString, kTag,
              "{}: '{}rope.scaling.type' must be a string", origin, a);
    const std::string& kind = st->str();
    kernels::RopeScaling& rs = c.rope_scaling;
    if (kind == "linear" || kind == "yarn") {
      rs.kind =
          kind == "linear" ? kernels::RopeScalingKind::kLinear : kernels::RopeScalingKind::kYarn;
      rs.factor = FloatOr(find, a + "rope.scaling.factor", 1.0, origin);
      rs.original_max_position_embeddings =
          IntOr(find, a + "rope.scaling.original_context_length", 0, origin);
      rs.beta_fast = FloatOr(find, a + "rope.scaling.yarn_beta_fast", 32.0, origin);
      rs.beta_slow = FloatOr(find, a + "rope.scaling.yarn_beta_slow", 1.0, origin);
      // DeepSeek: yarn_log_multiplier = 0.1 * mscale_all_dim (llama.cpp's converter); mscale is
      // taken equal to it unless moe's own yarn_mscale key says otherwise.
      const double mult = FloatOr(find, a + "rope.scaling.yarn_log_multiplier", 0.0, origin);
      rs.mscale_all_dim = mult / 0.1;
      rs.mscale = FloatOr(find, a + "rope.scaling.yarn_mscale", mult != 0 ? rs.mscale_all_dim : 1.0,
                          origin);
    } else {
      MOE_CHECK(kind == "none", kTag,
                "{}: {}rope.scaling.type = '{}' is not supported (supported: none, linear, yarn)",
                origin, a, kind);
    }
  }
  const int64_t rope_dims = IntOr(find, a + "rope.dimension_count", 0, origin);
  const int64_t dh = c.head_dim > 0 ? c.head_dim : c.d_model / std::max<int64_t>(1, c.n_heads);
  if (!c.mla.enabled() && rope_dims > 0 && rope_dims != dh) c.rotary_dim = rope_dims;
  if (c.mla.enabled()) {
    double scale =
        1.0 / std::sqrt(static_cast<double>(c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim));
    if (c.rope_scaling.kind == kernels::RopeScalingKind::kYarn &&
        c.rope_scaling.mscale_all_dim != 0) {
      const double ms = kernels::YarnMscale(c.rope_scaling.factor, c.rope_scaling.mscale_all_dim);
      scale *= ms * ms;
    }
    c.attn_scale = scale;
  }
  c.architecture = arch;
  try {
    c.Finalize();
  } catch (const Error& e) {
    Fail(kTag, "{}: {}", origin, e.what());
  }
  return c;
}

std::string GgufArchOf(const ModelConfig& cfg) {
  const std::string& a = cfg.architecture;
  if (a == "MixtralForCausalLM" || a == "LlamaForCausalLM" || a == "MistralForCausalLM" ||
      a.empty() || a == "llama")
    return "llama";
  if (a == "Qwen2ForCausalLM" || a == "qwen2") return "qwen2";
  if (a == "Qwen2MoeForCausalLM" || a == "qwen2moe") return "qwen2moe";
  if (a == "Qwen3MoeForCausalLM" || a == "qwen3moe") return "qwen3moe";
  if (a == "OlmoeForCausalLM" || a == "olmoe") return "olmoe";
  if (a == "DeepseekV2ForCausalLM" || a == "DeepseekV3ForCausalLM" || a == "deepseek2")
    return "deepseek2";
  Fail(kTag, "architecture '{}' cannot be written as GGUF (supported: {})", a,
       GgufArchitectureNames());
}

// Per-tensor type under a scheme (see docs/FORMATS.md).
GgmlType ChooseType(GgufScheme s, const Part& p, int64_t n_layers) {
  if (p.is_vector || s == GgufScheme::kF32) return GgmlType::kF32;
  const int64_t cols = p.shape.back();
  auto fit = [&](GgmlType want) {
    const int64_t block = io::GgufTypeInfo(want).block_elems;
    if (cols % block == 0) return want;
    if (block == 256 && cols % 32 == 0) return GgmlType::kQ8_0;  // K-quant fallback
    return GgmlType::kF16;
  };
  switch (s) {
    case GgufScheme::kF16:
      return GgmlType::kF16;
    case GgufScheme::kQ8_0:
      return fit(GgmlType::kQ8_0);
    case GgufScheme::kQ4_0:
      return fit(p.role == "output" ? GgmlType::kQ6_K : GgmlType::kQ4_0);
    default: {
      const GgmlType base = s == GgufScheme::kQ4_K_M ? GgmlType::kQ4_K : GgmlType::kQ5_K;
      if (p.role == "output") return fit(GgmlType::kQ6_K);
      if (p.role == "attn_v" || p.role == "ffn_down") {
        // llama.cpp's use_more_bits: the first and last eighth of the layers, every third between.
        const int64_t l = p.layer, n = n_layers;
        const bool more = l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2;
        return fit(more ? GgmlType::kQ6_K : base);
      }
      return fit(base);
    }
  }
}

uint32_t FileType(GgufScheme s) {
  switch (s) {
    case GgufScheme::kF32:
      return 0;
    case GgufScheme::kF16:
      return 1;
    case GgufScheme::kQ4_0:
      return 2;
    case GgufScheme::kQ8_0:
      return 7;
    case GgufScheme::kQ4_K_M:
      return 15;
    case GgufScheme::kQ5_K_M:
      return 17;
  }
  return 0;
}

}  // namespace

std::string GgufArchitectureNames() {
  std::string out;
  for (std::string_view a : kArchs) out += (out.empty() ? "" : ", ") + std::string(a);
  return out;
}

GgufScheme ParseGgufScheme(std::string_view name) {
  for (GgufScheme s : {GgufScheme::kF32, GgufScheme::kF16, GgufScheme::kQ8_0, GgufScheme::kQ4_0,
                       GgufScheme::kQ4_K_M, GgufScheme::kQ5_K_M})
    if (Name(s) == name) return s;
  Fail(kTag, "unknown type '{}' (supported: F32, F16, Q8_0, Q4_0, Q4_K_M, Q5_K_M)", name);
}

std::string_view Name(GgufScheme s) {
  switch (s) {
    case GgufScheme::kF32:
      return "F32";
    case GgufScheme::kF16:
      return "F16";
    case GgufScheme::kQ8_0:
      return "Q8_0";
    case GgufScheme::kQ4_0:
      return "Q4_0";
    case GgufScheme::kQ4_K_M:
      return "Q4_K_M";
    case GgufScheme::kQ5_K_M:
      return "Q5_K_M";
  }
  return "?";
}

ModelConfig GgufModelConfig(const io::GgufFile& f, const std::string& path, std::string* arch_out) {
  MOE_CHECK(f.Has("general.architecture"), kTag, "{}: no 'general.architecture' (supported: {})",
            path, GgufArchitectureNames());
  const std::string arch = f.GetString("general.architecture");
  MOE_CHECK(KnownArch(arch), kTag, "{}: architecture '{}' is not supported (supported: {})", path,
            arch, GgufArchitectureNames());
  const Lookup find = [&](std::string_view k) { return f.Find(k); };
  const io::GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  MOE_CHECK(embd != nullptr && embd->dims.size() == 2, kTag,
            "{}: tensor 'token_embd.weight' is missing or not a matrix", path);
  const int64_t n_layers = IntReq(find, arch + ".block_count", path);
  MOE_CHECK(n_layers >= 1 && n_layers <= 4096, kTag, "{}: {}.block_count = {} not in 1..4096", path,
            arch, n_layers);
  std::vector<uint8_t> moe_layers(static_cast<size_t>(n_layers));
  for (int64_t l = 0; l < n_layers; ++l)
    moe_layers[static_cast<size_t>(l)] =
        f.HasTensor("blk." + std::to_string(l) + ".ffn_gate_inp.weight") ? 1 : 0;
  ModelConfig cfg =
      ConfigFrom(arch, find, embd->dims[1], moe_layers, !f.HasTensor("output.weight"), path);
  // A config describing far more parameters than the file's tensors hold is wrong (a missing or
  // mis-shaped tensor is named by the loader instead).
  const double params = CountParams(cfg).total();
  double elems = 0;
  for (const io::GgufTensorInfo& t : f.tensors()) elems += static_cast<double>(t.numel);
  MOE_CHECK(params <= 2 * elems + 1e6, kTag,
            "{}: the metadata describes {:.4g} parameters but the tensors hold {:.4g} values: a "
            "size key is wrong (embedding_length {}, block_count {}, head_count {}, expert_count "
            "{} of width {}, feed_forward_length {})",
            path, params, elems, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.moe.n_experts,
            cfg.moe.d_ff, cfg.dense_d_ff);
  // Split MLA pairs against the metadata's widths (a wrong key_length_mla is named here).
  if (cfg.mla.enabled())
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      if (HasSplitKvB(f, b)) FindSplitKvB(f, cfg, b, path);
    }
  if (const io::GgufTensorInfo* rf = f.FindTensor("rope_freqs.weight")) {
    // Per-frequency divisors of the RoPE angles (llama.cpp's form of Llama 3 scaling).
    MOE_CHECK(rf->numel == cfg.rope_dim() / 2, kTag,
              "{}: tensor 'rope_freqs.weight' has {} values; rope.dimension_count {} needs {}", path,
              rf->numel, cfg.rope_dim(), cfg.rope_dim() / 2);
    MOE_CHECK(cfg.rope_scaling.kind == kernels::RopeScalingKind::kNone, kTag,
              "{}: both rope.scaling.type and a rope_freqs tensor scale RoPE", path);
    const std::vector<float> v = ToF32(f, *rf);
    cfg.rope_scaling.kind = kernels::RopeScalingKind::kFreqFactors;
    cfg.rope_scaling.freq_factors.assign(v.begin(), v.end());
    cfg.Validate();  // factors finite and > 0
  }
  if (arch_out != nullptr) *arch_out = arch;
  return cfg;
}

GgufModel LoadGgufModel(const std::string& path, const GgufLoadOptions& opts) {
  GgufModel out;
  auto finish = [&](const io::GgufFile& f) {
    DeriveInferenceWeights(out.config, out.weights);
    out.tokenizer = tokenizer::TokenizerSpecFromGguf(f);
    out.chat_template = f.GetString("tokenizer.chat_template", "");
    return std::move(out);
  };
  if (opts.mapped) {
    // Weights stay in the file: only vectors and F16/BF16 matrices are allocated (each checked).
    const io::GgufFile f = io::GgufFile::Open(path);
    out.config = GgufModelConfig(f, path, &out.architecture);
    if (out.architecture == "llama") out.config.rope_pairing = kernels::RopePairing::kInterleaved;
    RequireAllUsed(f, LoadMapped(f, out.config, out.weights, path), out.architecture, path);
    return finish(f);
  }
  const GgufWeightReader reader = GgufWeightReader::Open(path);
  out.config = reader.config();
  out.architecture = reader.architecture();
  // Nothing is allocated for a model beyond what moe allocates (f32, 4 bytes per parameter).
  const double params = CountParams(out.config).total();
  MOE_CHECK(params * 4 <= static_cast<double>(kMaxAllocBytes), kTag,
            "{}: {:.4g} parameters take {:.4g} bytes as f32, more than moe allocates ({}); run "
            "it mapped (moe run / chat / perplexity do)",
            path, params, params * 4, kMaxAllocBytes);
  out.weights.Allocate(out.config, DType::kF32);
  out.weights.ForEachTensor([&](const std::string& name, Tensor& t) { reader.Fill(name, t); });
  return finish(reader.file());
}

struct GgufWeightReader::Impl {
  io::GgufFile file;
  std::string path, arch;
  ModelConfig config;
  ModelWeights shapes;  // shape-only: what the parts below point into
  std::vector<Part> parts;
  std::map<std::string, std::vector<size_t>> parts_of;  // canonical name -> its parts
  std::set<size_t> from_split;  // kv_b parts rebuilt from attn_k_b + attn_v_b
};

GgufWeightReader GgufWeightReader::Open(const std::string& path) {
  auto impl = std::make_shared<Impl>(Impl{io::GgufFile::Open(path), path, "", {}, {}, {}, {}, {}});
  Impl& m = *impl;
  const io::GgufFile& f = m.file;
  m.config = GgufModelConfig(f, path, &m.arch);
  const ModelConfig& cfg = m.config;
  m.shapes.Allocate(cfg, DType::kF32, /*storage=*/false);
  m.parts = PlanParts(cfg, m.shapes, m.arch == "llama", [&](int64_t l) {
    return !f.HasTensor("blk." + std::to_string(l) + ".ffn_gate.0.weight");
  });
  // Every tensor is checked (present, shape) and every file tensor accounted for before any data
  // is read.
  std::set<std::string> used;
  for (size_t i = 0; i < m.parts.size(); ++i) {
    const Part& p = m.parts[i];
    if (p.name.ends_with(kKvB)) {
      const std::string prefix = p.name.substr(0, p.name.size() - kKvB.size());
      if (HasSplitKvB(f, prefix)) {
        const SplitKvB sp = FindSplitKvB(f, cfg, prefix, path);
        used.insert(sp.k->name);
        used.insert(sp.v->name);
        if (!f.HasTensor(p.name)) {
          m.from_split.insert(i);
          continue;
        }
      }
    }
    const io::GgufTensorInfo* t = f.FindTensor(p.name);
    MOE_CHECK(t != nullptr, kTag, "{}: tensor '{}' is missing ({} with this config needs it)", path,
              p.name, m.arch);
    f.RequireSupported(*t);
    std::vector<int64_t> shape = t->RowMajorShape();
    // Vectors may be stored as [1, D] (shared-expert gate).
    while (shape.size() > p.shape.size() && shape.front() == 1) shape.erase(shape.begin());
    MOE_CHECK(shape == p.shape, kTag, "{}: tensor '{}' has shape {}, expected [{}] (ggml order)",
              path, p.name, t->ShapeStr(),
              fmt::join(std::vector<int64_t>(p.shape.rbegin(), p.shape.rend()), ","));
    used.insert(p.name);
  }
  RequireAllUsed(f, used, m.arch, path);
  std::map<const Tensor*, std::string> names;
  m.shapes.ForEachTensor([&](const std::string& n, Tensor& t) { names[&t] = n; });
  for (size_t i = 0; i < m.parts.size(); ++i) m.parts_of[names[m.parts[i].dst]].push_back(i);
  GgufWeightReader r;
  r.impl_ = std::move(impl);
  return r;
}

const ModelConfig& GgufWeightReader::config() const { return impl_->config; }
const std::string& GgufWeightReader::architecture() const { return impl_->arch; }
const io::GgufFile& GgufWeightReader::file() const { return impl_->file; }

void GgufWeightReader::Fill(const std::string& name, Tensor& t) const {
  const Impl& m = *impl_;
  const auto it = m.parts_of.find(name);
  MOE_CHECK(it != m.parts_of.end(), kTag, "{}: no tensor of the file fills '{}'", m.path, name);
  const Tensor& want = *m.parts[it->second.front()].dst;
  MOE_CHECK(t.dtype() == DType::kF32 && t.shape() == want.shape(), kTag,
            "{}: '{}' is {} {}, the file's is F32 {}", m.path, name, DTypeName(t.dtype()),
            t.shape().str(), want.shape().str());
  if (t.shape_only()) t.Resize(t.dtype(), t.shape());
  float* dst = static_cast<float*>(t.raw());
  for (const size_t i : it->second) {
    const Part& p = m.parts[i];
    if (m.from_split.contains(i)) {
      const std::string prefix = p.name.substr(0, p.name.size() - kKvB.size());
      const std::vector<float> kv = KvBFromSplit(m.file, FindSplitKvB(m.file, m.config, prefix, m.path), m.config);
      std::memcpy(dst, kv.data(), kv.size() * sizeof(float));
      continue;
    }
    std::vector<float> v = ToF32(m.file, *m.file.FindTensor(p.name));
    if (p.permute_rope)
      PermuteRows(v, p.rope_heads, p.shape.size() == 1 ? 1 : p.shape.back(), false);
    for (const Copy& c : p.copies)
      std::memcpy(dst + c.canon_off, v.data() + c.gguf_off, c.n * sizeof(float));
  }
}

void SaveGgufModel(const ModelConfig& cfg, ModelWeights& weights, const std::string& path,
                   const GgufSaveOptions& opts) {
  const std::string arch = GgufArchOf(cfg);
  const std::string a = arch + ".";
  io::GgufWriter w;
  std::map<std::string, GgufValue, std::less<>> meta;
  auto put = [&](std::string key, GgufValue v) {
    meta[key] = v;
    w.AddMetadata(std::move(key), std::move(v));
  };
  put("general.architecture", GgufValue::String(arch));
  if (!opts.name.empty()) put("general.name", GgufValue::String(opts.name));
  put("general.file_type", GgufValue::U32(FileType(opts.scheme)));
  if (opts.scheme != GgufScheme::kF32 && opts.scheme != GgufScheme::kF16)
    put("general.quantization_version", GgufValue::U32(2));
  auto u32 = [](int64_t v) { return GgufValue::U32(static_cast<uint32_t>(v)); };
  put(a + "vocab_size", u32(cfg.vocab_size));
  put(a + "context_length", u32(cfg.max_seq));
  put(a + "embedding_length", u32(cfg.d_model));
  put(a + "block_count", u32(cfg.n_layers));
  const int64_t ffl = cfg.dense_d_ff > 0 ? cfg.dense_d_ff : cfg.moe.d_ff;
  put(a + "feed_forward_length", u32(ffl));
  put(a + "attention.head_count", u32(cfg.n_heads));
  MOE_CHECK(!opts.split_mla_kv_b || cfg.mla.enabled(), kTag,
            "split_mla_kv_b needs an MLA model (deepseek2); this one is '{}'", arch);
  const bool split = opts.split_mla_kv_b;
  // The split form's metadata describes the latent MQA view (docs/FORMATS.md).
  put(a + "attention.head_count_kv", u32(split ? 1 : cfg.n_kv_heads));
  if (split) {
    put(a + "attention.key_length", u32(cfg.mla.kv_lora_rank + cfg.mla.qk_rope_head_dim));
    put(a + "attention.value_length", u32(cfg.mla.kv_lora_rank));
    put(a + "attention.key_length_mla", u32(cfg.head_dim));
    put(a + "attention.value_length_mla", u32(cfg.v_head_dim()));
  } else if (cfg.head_dim * cfg.n_heads != cfg.d_model || cfg.mla.enabled()) {
    put(a + "attention.key_length", u32(cfg.head_dim));
    put(a + "attention.value_length", u32(cfg.v_head_dim()));
  }
  if (cfg.mla.enabled()) {
    if (cfg.mla.q_lora_rank > 0) put(a + "attention.q_lora_rank", u32(cfg.mla.q_lora_rank));
    put(a + "attention.kv_lora_rank", u32(cfg.mla.kv_lora_rank));
  }
  put(a + "rope.dimension_count", u32(cfg.rope_dim()));
  put(a + "rope.freq_base", GgufValue::F32(static_cast<float>(cfg.rope_theta)));
  put(a + "attention.layer_norm_rms_epsilon", GgufValue::F32(static_cast<float>(cfg.norm_eps)));
  const kernels::RopeScaling& rs = cfg.rope_scaling;
  if (rs.kind == kernels::RopeScalingKind::kLinear || rs.kind == kernels::RopeScalingKind::kYarn) {
    const bool yarn = rs.kind == kernels::RopeScalingKind::kYarn;
    put(a + "rope.scaling.type", GgufValue::String(yarn ? "yarn" : "linear"));
    put(a + "rope.scaling.factor", GgufValue::F32(static_cast<float>(rs.factor)));
    if (yarn) {
      put(a + "rope.scaling.original_context_length", u32(rs.original_max_position_embeddings));
      put(a + "rope.scaling.yarn_beta_fast", GgufValue::F32(static_cast<float>(rs.beta_fast)));
      put(a + "rope.scaling.yarn_beta_slow", GgufValue::F32(static_cast<float>(rs.beta_slow)));
      if (rs.mscale_all_dim != 0)
        put(a + "rope.scaling.yarn_log_multiplier",
            GgufValue::F32(static_cast<float>(0.1 * rs.mscale_all_dim)));
      if (rs.mscale != (rs.mscale_all_dim != 0 ? rs.mscale_all_dim : 1.0))
        put(a + "rope.scaling.yarn_mscale", GgufValue::F32(static_cast<float>(rs.mscale)));
    }
  }
  if (cfg.clip_qkv > 0)
    put(a + "attention.clamp_kqv", GgufValue::F32(static_cast<float>(cfg.clip_qkv)));
  if (cfg.sliding_window > 0) put(a + "attention.sliding_window", u32(cfg.sliding_window));
  if (cfg.bos_id >= 0) put("tokenizer.ggml.bos_token_id", u32(cfg.bos_id));
  if (cfg.eos_id >= 0) put("tokenizer.ggml.eos_token_id", u32(cfg.eos_id));
  std::vector<uint8_t> moe_layers(static_cast<size_t>(cfg.n_layers));
  for (int64_t l = 0; l < cfg.n_layers; ++l) moe_layers[static_cast<size_t>(l)] = cfg.IsMoeLayer(l);
  if (cfg.NumMoeLayers() > 0) {
    put(a + "expert_count", u32(cfg.moe.n_experts));
    put(a + "expert_used_count", u32(cfg.moe.top_k));
    put(a + "expert_feed_forward_length", u32(cfg.moe.d_ff));
    put(a + "expert_weights_norm", GgufValue::Bool(cfg.moe.renormalize));
    if (arch == "deepseek2") {
      const auto& m = cfg.moe;
      int64_t lead = 0;
      while (lead < cfg.n_layers && !cfg.IsMoeLayer(lead)) ++lead;
      put(a + "leading_dense_block_count", u32(lead));
      put(a + "expert_shared_count", u32(m.d_ff > 0 ? m.shared_d_ff / m.d_ff : 0));
      put(a + "expert_weights_scale", GgufValue::F32(static_cast<float>(m.route_scale)));
      put(a + "expert_gating_func", u32(m.score == mixture::ScoreFn::kSigmoid ? 2 : 1));
      put(a + "expert_group_count", u32(m.n_groups));
      put(a + "expert_group_used_count", u32(m.topk_groups));
    } else if (cfg.moe.shared_d_ff > 0) {
      put(a + "expert_shared_feed_forward_length", u32(cfg.moe.shared_d_ff));
    }
  }
  // Everything the file says must describe this model: read the config back and compare.
  {
    const Lookup find = [&](std::string_view k) -> const GgufValue* {
      const auto it = meta.find(k);
      return it == meta.end() ? nullptr : &it->second;
    };
    ModelConfig back = ConfigFrom(arch, find, cfg.vocab_size, moe_layers, cfg.tie_embeddings, path);
    ModelConfig want = cfg;
    // f32 storage of theta / eps / clip.
    back.rope_theta = want.rope_theta, back.norm_eps = want.norm_eps;
    back.clip_qkv = want.clip_qkv;
    auto near = [](double x, double y) {
      return std::abs(x - y) <= 1e-6 * std::max(1.0, std::abs(y));
    };
    if (near(back.attn_scale, want.attn_scale)) back.attn_scale = want.attn_scale;
    if (near(back.moe.route_scale, want.moe.route_scale))
      back.moe.route_scale = want.moe.route_scale;
    // Llama 3 / explicit frequency factors travel as the rope_freqs tensor (written below).
    const bool freq_tensor = want.rope_scaling.kind == kernels::RopeScalingKind::kLlama3 ||
                             want.rope_scaling.kind == kernels::RopeScalingKind::kFreqFactors;
    if (freq_tensor && back.rope_scaling.kind == kernels::RopeScalingKind::kNone)
      back.rope_scaling = want.rope_scaling;
    if (back.rope_scaling.kind == want.rope_scaling.kind) {  // f32 storage
      if (near(back.rope_scaling.mscale, want.rope_scaling.mscale))
        back.rope_scaling.mscale = want.rope_scaling.mscale;
      if (near(back.rope_scaling.mscale_all_dim, want.rope_scaling.mscale_all_dim))
        back.rope_scaling.mscale_all_dim = want.rope_scaling.mscale_all_dim;
      back.rope_scaling.factor = want.rope_scaling.factor;
      back.rope_scaling.beta_fast = want.rope_scaling.beta_fast;
      back.rope_scaling.beta_slow = want.rope_scaling.beta_slow;
    }
    back.architecture = want.architecture;
    if (want.NumMoeLayers() == 0) back.moe = want.moe;  // unused by a dense model
    // Training-only options do not change inference.
    back.moe.aux_loss_coef = want.moe.aux_loss_coef, back.moe.z_loss_coef = want.moe.z_loss_coef;
    back.moe.jitter = want.moe.jitter, back.moe.bias_update_rate = want.moe.bias_update_rate;
    if (back.moe_layers.empty() && !want.moe_layers.empty()) want.moe_layers.clear();
    nlohmann::json jb = ToHfJson(back), jw = ToHfJson(want);
    std::vector<std::string> diff;
    for (const auto& [k, v] : jw.items())
      if (!jb.contains(k) || jb[k] != v) diff.push_back(k + "=" + v.dump());
    for (const auto& [k, v] : jb.items())
      if (!jw.contains(k)) diff.push_back(k);
    // moe_every vs an explicit layer list describe the same layers.
    std::erase_if(diff, [&](const std::string& d) {
      return d.starts_with("output_router_logits") || d.starts_with("moe_every") ||
             d.starts_with("moe_layers") || d.starts_with("decoder_sparse_step") ||
             d.starts_with("intermediate_size");
    });
    MOE_CHECK(diff.empty(), kTag, "GGUF architecture '{}' cannot express this model's {}", arch,
              fmt::join(diff, ", "));
  }
  if (opts.tokenizer != nullptr) {
    std::string why;
    if (!tokenizer::AddTokenizerToGguf(*opts.tokenizer, cfg.bos_id, cfg.eos_id, w, &why)) {
      if (opts.warn) opts.warn("tokenizer not written: " + why);
    } else if (!opts.chat_template.empty()) {
      w.AddMetadata("tokenizer.chat_template", GgufValue::String(opts.chat_template));
    }
  }

  if (cfg.rope_scaling.kind == kernels::RopeScalingKind::kLlama3 ||
      cfg.rope_scaling.kind == kernels::RopeScalingKind::kFreqFactors) {
    // llama.cpp's form of Llama 3 scaling: the per-frequency divisors as an F32 tensor [r/2].
    const std::vector<double> f =
        kernels::RopeFreqFactors(cfg.rope_dim(), cfg.rope_theta, cfg.rope_scaling);
    std::vector<float> v(f.begin(), f.end());
    w.AddTensor("rope_freqs.weight", GgmlType::kF32, {static_cast<int64_t>(v.size())}, v.data(),
                v.size() * sizeof(float));
  }
  const std::vector<Part> parts =
      PlanParts(cfg, weights, arch == "llama", [](int64_t) { return true; });
  // The split form writes attn_k_b + attn_v_b in place of each layer's attn_kv_b.
  const size_t n_tensors = parts.size() + (split ? static_cast<size_t>(cfg.n_layers) : 0);
  // Every tensor is produced when the writer reaches it (gathered from the canonical tensor,
  // permuted, converted), so the output is never whole in memory; with opts.load the canonical
  // tensors are loaded on first use and released after their last part as well.
  std::map<const Tensor*, std::string> names;
  weights.ForEachTensor([&](const std::string& n, Tensor& t) { names[&t] = n; });
  std::map<const Tensor*, size_t> last_use;
  for (size_t i = 0; i < parts.size(); ++i) last_use[parts[i].dst] = i;
  // The values of part i in GGUF order (row-major p.shape).
  auto values = [&](size_t i) {
    const Part& p = parts[i];
    if (p.dst->shape_only()) {
      MOE_CHECK(opts.load != nullptr, kTag, "SaveGgufModel: '{}' has no data and no loader",
                names[p.dst]);
      opts.load(names[p.dst], *p.dst);
    }
    MOE_CHECK(p.dst->dtype() == DType::kF32, kTag, "SaveGgufModel needs f32 weights");
    size_t numel = 1;
    for (int64_t d : p.shape) numel *= static_cast<size_t>(d);
    std::vector<float> v(numel);
    const float* src = static_cast<const float*>(std::as_const(*p.dst).raw());
    for (const Copy& c : p.copies)
      std::memcpy(v.data() + c.gguf_off, src + c.canon_off, c.n * sizeof(float));
    if (p.permute_rope)
      PermuteRows(v, p.rope_heads, p.shape.size() == 1 ? 1 : p.shape.back(), true);
    return v;
  };
  auto release = [&](size_t i) {
    Tensor* t = parts[i].dst;
    if (opts.load && last_use[t] == i) *t = Tensor::ShapeOnly(t->dtype(), t->shape());
  };
  // Converts v (row-major p.shape) to the tensor's type at out.
  auto convert = [&](const Part& p, GgmlType type, const std::vector<float>& v, uint8_t* out) {
    if (type == GgmlType::kF32) {
      std::memcpy(out, v.data(), v.size() * sizeof(float));
    } else if (type == GgmlType::kF16) {
      for (size_t j = 0; j < v.size(); ++j) {
        const uint16_t h = ToF16(v[j]);
        std::memcpy(out + 2 * j, &h, 2);
      }
    } else {
      const kernels::QuantType q = kernels::QuantTypeFromGgml(static_cast<int>(type));
      const int64_t cols = p.shape.back(), rows = static_cast<int64_t>(v.size()) / cols;
      const int64_t row_bytes = kernels::QuantRowBytes(q, cols);
      auto rows_fn = [&](int64_t b, int64_t e, int) {
        kernels::Quantize(q, v.data() + b * cols, out + b * row_bytes, (e - b) * cols);
      };
      if (opts.ctx != nullptr) {
        ParallelForRange(rows, *opts.ctx, rows_fn, 16);
      } else {
        rows_fn(0, rows, 0);
      }
    }
  };
  size_t index = 0;
  // Adds one lazy tensor with p's name, shape, role and layer; produce() returns its values.
  auto add = [&](const Part& p, std::function<std::vector<float>()> produce) {
    const GgmlType type = ChooseType(opts.scheme, p, cfg.n_layers);
    std::vector<int64_t> dims(p.shape.rbegin(), p.shape.rend());
    const auto bytes = io::GgmlTensorBytes(type, dims);
    MOE_CHECK(bytes.has_value(), kTag, "tensor '{}' is too large", p.name);
    const size_t at = index++;
    w.AddTensorLazy(p.name, type, dims, static_cast<size_t>(*bytes),
                    [&, p, type, at, produce = std::move(produce)](uint8_t* out) {
                      if (opts.progress)
                        opts.progress(at, n_tensors, p.name, io::GgmlTypeName(type));
                      convert(p, type, produce(), out);
                    });
  };
  for (size_t i = 0; i < parts.size(); ++i) {
    const Part& p = parts[i];
    if (split && p.name.ends_with(kKvB)) {
      const std::string prefix = p.name.substr(0, p.name.size() - kKvB.size());
      const MlaConfig& m = cfg.mla;
      Part pk = p, pv = p;
      pk.name = prefix + std::string(kKB);
      pk.shape = {cfg.n_heads, m.kv_lora_rank, m.qk_nope_head_dim};
      pv.name = prefix + std::string(kVB);
      pv.shape = {cfg.n_heads, m.v_head_dim, m.kv_lora_rank};
      // Both halves come from the same rows: each split runs once per half (cheap next to I/O).
      add(pk, [&, i] {
        std::vector<float> k, vb;
        SplitKvBRows(values(i).data(), cfg, k, vb);
        return k;
      });
      add(pv, [&, i] {
        std::vector<float> k, vb;
        SplitKvBRows(values(i).data(), cfg, k, vb);
        release(i);
        return vb;
      });
      continue;
    }
    add(p, [&, i] {
      std::vector<float> v = values(i);
      release(i);
      return v;
    });
  }
  w.Write(path);
}

}  // namespace moe::model
