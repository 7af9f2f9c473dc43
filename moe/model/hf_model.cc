#include "moe/model/hf_model.h"

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "moe/core/error.h"
#include "moe/io/file.h"

namespace moe::model {

namespace {
constexpr std::string_view kTag = "load";

nlohmann::json ReadJson(const std::string& path) {
  try {
    return nlohmann::json::parse(io::ReadFile(path, 64 << 20));
  } catch (const nlohmann::json::exception& e) {
    Fail(kTag, "{}: malformed JSON: {}", path, e.what());
  }
}

}  // namespace

HfTensorFiles HfTensorFiles::Open(const std::string& dir) {
  HfTensorFiles out;
  out.dir_ = dir;
  const std::string index = dir + "/model.safetensors.index.json";
  auto add_file = [&](const std::string& name) {
    out.file_names_.push_back(name);
    out.files_.push_back(
        std::make_shared<io::SafetensorsFile>(io::SafetensorsFile::Open(dir + "/" + name)));
    for (const io::StTensorInfo& t : out.files_.back()->tensors()) out.data_bytes_ += t.nbytes;
    return out.files_.size() - 1;
  };
  if (io::PathExists(index)) {
    out.origin_ = "model.safetensors.index.json";
    const nlohmann::json j = ReadJson(index);
    MOE_CHECK(j.is_object() && j.contains("weight_map") && j.at("weight_map").is_object(), kTag,
              "{}: needs a 'weight_map' object (tensor name -> shard file)", index);
    std::map<std::string, size_t> shard_index;
    for (const auto& [tensor, file] : j.at("weight_map").items()) {
      MOE_CHECK(file.is_string(), kTag, "{}: weight_map['{}'] is not a file name", index, tensor);
      const std::string shard = file.get<std::string>();
      MOE_CHECK(
          !shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
          kTag, "{}: weight_map['{}'] = '{}' is not a file name inside the folder", index, tensor,
          shard);
      auto it = shard_index.find(shard);
      if (it == shard_index.end()) {
        MOE_CHECK(io::PathExists(dir + "/" + shard), kTag,
                  "{}: shard '{}' (holding '{}') is missing from {}", index, shard, tensor, dir);
        it = shard_index.emplace(shard, add_file(shard)).first;
      }
      MOE_CHECK(out.files_[it->second]->Has(tensor), kTag,
                "{}: lists tensor '{}' in shard '{}', but that file does not hold it", index,
                tensor, shard);
      out.where_[tensor] = it->second;
    }
    MOE_CHECK(!out.files_.empty(), kTag, "{}: weight_map is empty", index);
    // Tensors a shard holds that the index does not list still count (as unexpected, if unused).
    for (size_t f = 0; f < out.files_.size(); ++f)
      for (const io::StTensorInfo& t : out.files_[f]->tensors()) out.where_.emplace(t.name, f);
    return out;
  }
  out.origin_ = "model.safetensors";
  MOE_CHECK(io::PathExists(dir + "/model.safetensors"), kTag,
            "{}: no model.safetensors or model.safetensors.index.json in this folder", dir);
  const size_t f = add_file("model.safetensors");
  for (const io::StTensorInfo& t : out.files_[f]->tensors()) out.where_[t.name] = f;
  return out;
}

const io::StTensorInfo* HfTensorFiles::Find(const std::string& name) const {
  const auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second]->Find(name);
}

const std::string& HfTensorFiles::FileOf(const std::string& name) const {
  const auto it = where_.find(name);
  MOE_CHECK(it != where_.end(), kTag, "{}/{}: tensor '{}' is missing", dir_, origin_, name);
  return file_names_[it->second];
}

Tensor HfTensorFiles::Load(const std::string& name, DType dtype) const {
  const auto it = where_.find(name);
  MOE_CHECK(it != where_.end(), kTag, "{}/{}: tensor '{}' is missing", dir_, origin_, name);
  return files_[it->second]->Load(name, dtype);
}

std::vector<std::string> HfTensorFiles::Names() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : where_) out.push_back(name);
  return out;
}

ModelConfig ReadHfConfig(const std::string& dir, const Architecture** arch) {
  MOE_CHECK(io::IsDirectory(dir), kTag,
            "{}: not a model folder (expected config.json + model.safetensors)", dir);
  const std::string path = dir + "/config.json";
  MOE_CHECK(io::PathExists(path), kTag, "{}: not a model folder (no config.json)", dir);
  return ParseHfConfig(ReadJson(path), path, arch);
}

HfWeightReader HfWeightReader::Open(const std::string& dir, DType dtype) {
  MOE_CHECK(dtype == DType::kF32 || dtype == DType::kF64, kTag,
            "loading {}: dtype must be F32 or F64", dir);
  HfWeightReader r;
  r.dir_ = dir;
  r.dtype_ = dtype;
  r.config_ = ReadHfConfig(dir, &r.arch_);
  const ModelConfig& cfg = r.config_;
  r.files_ = std::make_shared<const HfTensorFiles>(HfTensorFiles::Open(dir));
  const HfTensorFiles& files = *r.files_;

  // Sizes first: every parameter takes at least 2 bytes in the files (F16/BF16), so a config that
  // describes more than that is wrong, and nothing is allocated for it.
  const double params = CountParams(cfg).total();
  const double need = params * static_cast<double>(DTypeSize(dtype));
  MOE_CHECK(params * 2 <= static_cast<double>(files.DataBytes()) &&
                need <= static_cast<double>(kMaxAllocBytes),
            kTag,
            "{}/config.json describes {:.4g} parameters ({:.3g} GB as {}), but the weight files "
            "hold {} bytes of "
            "tensors (2+ bytes per parameter needed): a size in config.json is wrong (vocab_size "
            "{}, hidden_size {}, "
            "num_hidden_layers {}, heads {}, experts {} of width {}, dense width {})",
            dir, params, need / 1e9, DTypeName(dtype), files.DataBytes(), cfg.vocab_size,
            cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.moe.n_experts, cfg.moe.d_ff,
            cfg.dense_d_ff);

  // Every tensor the layout needs is present with its shape, and none is left over: checked on
  // the shapes alone, before any data is read.
  ModelWeights shapes;
  shapes.Allocate(cfg, dtype, /*storage=*/false);
  std::set<std::string> used;
  shapes.ForEachTensor([&](const std::string& name, Tensor& t) {
    for (const HfPiece& pc : LayoutNames(r.arch_->layout, cfg, name)) {
      const HfPieceSpan sp = SpanOf(t, pc);
      const io::StTensorInfo* info = files.Find(pc.name);
      MOE_CHECK(info != nullptr, kTag, "{}/{}: tensor '{}' is missing ({} needs it for '{}')", dir,
                files.origin(), pc.name, r.arch_->name, name);
      MOE_CHECK(info->shape == sp.shape, kTag, "{}/{}: tensor '{}' has shape {}, expected [{}]",
                dir, files.FileOf(pc.name), pc.name, info->ShapeStr(), fmt::join(sp.shape, ","));
      used.insert(pc.name);
    }
  });
  std::vector<std::string> unexpected;
  const std::vector<std::string> names = files.Names();
  for (const std::string& n : names)
    if (!used.contains(n) && !(r.arch_->skippable != nullptr && r.arch_->skippable(cfg, n)))
      unexpected.push_back(n);
  MOE_CHECK(
      unexpected.empty(), kTag, "{}/{}: has {} tensors, the config needs {} (first unexpected: {})",
      dir, files.origin(), names.size(), used.size(), unexpected.empty() ? "" : unexpected.front());
  return r;
}

std::string_view HfWeightReader::architecture() const { return arch_->name; }

void HfWeightReader::Fill(const std::string& name, Tensor& t) const {
  MOE_CHECK(t.dtype() == dtype_, kTag, "{}: '{}' is {}, the reader loads {}", dir_, name,
            DTypeName(t.dtype()), DTypeName(dtype_));
  if (t.shape_only()) t.Resize(t.dtype(), t.shape());
  for (const HfPiece& pc : LayoutNames(arch_->layout, config_, name)) {
    const HfPieceSpan sp = SpanOf(t, pc);
    const Tensor piece = files_->Load(pc.name, dtype_);
    MOE_CHECK(piece.nbytes() == sp.numel * DTypeSize(dtype_), kTag,
              "{}/{}: tensor '{}' does not fit '{}'", dir_, files_->FileOf(pc.name), pc.name, name);
    std::memcpy(static_cast<char*>(t.raw()) + sp.offset * DTypeSize(dtype_), piece.raw(),
                piece.nbytes());
  }
}

HfModel LoadHfModel(const std::string& dir, DType dtype) {
  const HfWeightReader reader = HfWeightReader::Open(dir, dtype);
  HfModel out;
  out.config = reader.config();
  out.architecture = std::string(reader.architecture());
  out.weights.Allocate(out.config, dtype);
  out.weights.ForEachTensor(
      [&](const std::string& name, Tensor& t) { reader.Fill(name, t); });
  if (dtype == DType::kF32) DeriveInferenceWeights(out.config, out.weights);
  out.tokenizer_path = io::PathExists(dir + "/tokenizer.json") ? dir + "/tokenizer.json" : "";
  return out;
}

}  // namespace moe::model
