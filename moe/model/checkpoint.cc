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
      const HfPieceSpan sp = SpanOf(t, pc);
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
