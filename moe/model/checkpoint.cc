#include "moe/model/checkpoint.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/io/safetensors.h"
#include "moe/model/hf_model.h"

namespace moe::model {

namespace {
constexpr std::string_view kTag = "checkpoint";

}  // namespace

std::vector<HfPiece> HfNames(const ModelConfig& cfg, const std::string& canonical) {
  return LayoutNames(FindArchitecture("MixtralForCausalLM", "checkpoint").layout, cfg, canonical);
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
  const std::string bad = cfg.TrainingUnsupported();
  MOE_CHECK(bad.empty(), kTag, "SaveModel writes the Mixtral layout, which cannot hold: {}", bad);
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
  HfModel m = LoadHfModel(dir, dtype);
  return {std::move(m.config), std::move(m.weights)};
}

}  // namespace moe::model
