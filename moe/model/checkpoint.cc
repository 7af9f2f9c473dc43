#include "moe/model/checkpoint.h"

#include <cstring>

#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/io/safetensors.h"

namespace moe::model {

namespace {
constexpr std::string_view kTag = "checkpoint";

// "layers.3.moe.w13" -> (3, "moe.w13"); other names -> (-1, name).
std::pair<int64_t, std::string> SplitLayer(const std::string& name) {
  if (!name.starts_with("layers.")) return {-1, name};
  const size_t dot = name.find('.', 7);
  return {std::stoll(name.substr(7, dot - 7)), name.substr(dot + 1)};
}
}  // namespace

std::vector<HfPiece> HfNames(const ModelConfig& cfg, const std::string& canonical) {
  const auto [layer, rest] = SplitLayer(canonical);
  if (layer < 0) {
    if (rest == "embed") return {{"model.embed_tokens.weight"}};
    if (rest == "final_norm") return {{"model.norm.weight"}};
    if (rest == "lm_head") return {{"lm_head.weight"}};
    Fail(kTag, "no Hugging Face name for tensor '{}'", canonical);
  }
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const std::string moe = p + "block_sparse_moe.";
  if (rest == "attn_norm") return {{p + "input_layernorm.weight"}};
  if (rest == "ffn_norm") return {{p + "post_attention_layernorm.weight"}};
  if (rest == "wq") return {{p + "self_attn.q_proj.weight"}};
  if (rest == "wk") return {{p + "self_attn.k_proj.weight"}};
  if (rest == "wv") return {{p + "self_attn.v_proj.weight"}};
  if (rest == "wo") return {{p + "self_attn.o_proj.weight"}};
  const int64_t fd = cfg.dense_d_ff, f = cfg.moe.d_ff, fs = cfg.moe.shared_d_ff;
  if (rest == "w13") return {{p + "mlp.gate_proj.weight", -1, 0, fd}, {p + "mlp.up_proj.weight", -1, fd, 2 * fd}};
  if (rest == "w2") return {{p + "mlp.down_proj.weight"}};
  if (rest == "moe.router") return {{moe + "gate.weight"}};
  if (rest == "moe.bias") return {{moe + "gate.e_score_correction_bias"}};
  if (rest == "moe.shared_w13")
    return {{moe + "shared_expert.gate_proj.weight", -1, 0, fs}, {moe + "shared_expert.up_proj.weight", -1, fs, 2 * fs}};
  if (rest == "moe.shared_w2") return {{moe + "shared_expert.down_proj.weight"}};
  if (rest == "moe.shared_gate") return {{moe + "shared_expert_gate.weight"}};
  if (rest == "moe.w13" || rest == "moe.w2") {
    std::vector<HfPiece> out;
    for (int64_t e = 0; e < cfg.moe.n_experts; ++e) {
      const std::string ep = moe + "experts." + std::to_string(e) + ".";
      if (rest == "moe.w13") {
        out.push_back({ep + "w1.weight", e, 0, f});
        out.push_back({ep + "w3.weight", e, f, 2 * f});
      } else {
        out.push_back({ep + "w2.weight", e, 0, -1});
      }
    }
    return out;
  }
  Fail(kTag, "no Hugging Face name for tensor '{}'", canonical);
}

namespace {

// Shape and byte range of one piece inside the canonical tensor (row-major, contiguous rows).
struct PieceSpan {
  std::vector<int64_t> shape;
  size_t offset = 0;  // elements
  size_t numel = 0;
};

PieceSpan Span(const Tensor& t, const HfPiece& pc) {
  const Shape& s = t.shape();
  PieceSpan sp;
  int64_t base = 0, rows = s[0], cols = 1;
  int first = 0;
  if (pc.expert >= 0) {
    base = pc.expert * (t.numel() / s[0]);
    rows = s[1];
    first = 1;
  }
  for (int i = first + 1; i < s.rank; ++i) cols *= s[i];
  const int64_t rb = pc.row_begin, re = pc.row_end < 0 ? rows : pc.row_end;
  sp.offset = static_cast<size_t>(base + rb * cols);
  sp.numel = static_cast<size_t>((re - rb) * cols);
  sp.shape.push_back(re - rb);
  for (int i = first + 1; i < s.rank; ++i) sp.shape.push_back(s[i]);
  return sp;
}

}  // namespace

void SaveModel(const std::string& dir, const ModelConfig& cfg, ModelWeights& w,
               const std::vector<std::pair<std::string, std::string>>& extra_files) {
  io::SafetensorsWriter st;
  w.ForEachTensor([&](const std::string& name, Tensor& t) {
    MOE_CHECK(t.dtype() == DType::kF32, kTag, "tensor '{}' is {}, checkpoints are written from F32", name,
              DTypeName(t.dtype()));
    const float* data = t.view<const float>().data;
    for (const HfPiece& pc : HfNames(cfg, name)) {
      const PieceSpan sp = Span(t, pc);
      st.Add(pc.name, io::StDType::kF32, sp.shape, data + sp.offset, sp.numel * sizeof(float));
    }
  });
  st.SetMetadata("format", "pt");
  const std::string tmp = dir + ".tmp";
  io::RemoveAll(tmp);
  io::MakeDirs(tmp);
  st.Write(tmp + "/model.safetensors");
  io::WriteFileAtomic(tmp + "/config.json", ToHfJson(cfg).dump(2) + "\n");
  for (const auto& [name, bytes] : extra_files) io::WriteFileAtomic(tmp + "/" + name, bytes);
  io::ReplaceDirAtomic(tmp, dir);
}

LoadedModel LoadModel(const std::string& dir, DType dtype) {
  MOE_CHECK(dtype == DType::kF32 || dtype == DType::kF64, kTag, "LoadModel: dtype must be F32 or F64");
  MOE_CHECK(io::IsDirectory(dir), kTag, "{}: not a model folder (expected config.json + model.safetensors)", dir);
  const std::string cfg_path = dir + "/config.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::ReadFile(cfg_path, 16 << 20));
  } catch (const nlohmann::json::exception& e) {
    Fail(kTag, "{}: malformed JSON: {}", cfg_path, e.what());
  }
  LoadedModel out;
  out.config = FromHfJson(j, cfg_path);
  const io::SafetensorsFile file = io::SafetensorsFile::Open(dir + "/model.safetensors");
  out.weights.Allocate(out.config, dtype);
  const ModelConfig& cfg = out.config;
  size_t used = 0;
  out.weights.ForEachTensor([&](const std::string& name, Tensor& t) {
    for (const HfPiece& pc : HfNames(cfg, name)) {
      const PieceSpan sp = Span(t, pc);
      const io::StTensorInfo& info = file.Get(pc.name);
      MOE_CHECK(info.shape == sp.shape, kTag, "{}: tensor '{}' has shape {}, expected [{}]", file.name(),
                pc.name, info.ShapeStr(), fmt::join(sp.shape, ","));
      const Tensor piece = file.Load(pc.name, dtype);
      std::memcpy(static_cast<char*>(t.raw()) + sp.offset * DTypeSize(dtype), piece.raw(), piece.nbytes());
      ++used;
    }
  });
  MOE_CHECK(used == file.tensors().size(), kTag, "{}: has {} tensors, the config needs {} (first unexpected: {})",
            file.name(), file.tensors().size(), used, [&] {
              for (const auto& ti : file.tensors()) {
                bool known = false;
                out.weights.ForEachTensor([&](const std::string& name, Tensor&) {
                  for (const HfPiece& pc : HfNames(cfg, name)) known = known || pc.name == ti.name;
                });
                if (!known) return ti.name;
              }
              return std::string("?");
            }());
  return out;
}

}  // namespace moe::model
