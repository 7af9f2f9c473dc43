// Loading Hugging Face model folders of any supported architecture (moe/model/arch/):
//   config.json
//   model.safetensors                                  one file, or
//   model.safetensors.index.json + model-XXXXX-of-YYYYY.safetensors   shards named by the index
//   tokenizer.json                                     (optional; its path is returned)
// Tensors of any float type (F32, F16, BF16, F64) are converted once, at load, to the requested
// compute dtype (F32 for inference); memory is therefore 4 bytes per parameter.
//
// Everything is checked before it is used and every problem is a moe::Error naming the file and
// tensor: a missing shard, a tensor the index lists but its shard lacks, missing or unexpected
// tensors, shapes, and a config whose sizes describe more parameters than the files can hold
// (checked before anything is allocated).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "moe/io/safetensors.h"
#include "moe/model/arch/arch.h"
#include "moe/model/config.h"
#include "moe/model/weights.h"

namespace moe::model {

// The safetensors files of a folder (one file or index + shards), tensors looked up by name.
class HfTensorFiles {
 public:
  static HfTensorFiles Open(const std::string& dir);

  // nullptr when no file holds the tensor.
  const io::StTensorInfo* Find(const std::string& name) const;
  // Loads (and converts) a tensor; Error naming the file when absent.
  Tensor Load(const std::string& name, DType dtype) const;
  // File name (inside the folder) holding a tensor.
  const std::string& FileOf(const std::string& name) const;
  // Every tensor name, sorted.
  std::vector<std::string> Names() const;
  // Total bytes of tensor data in all files.
  uint64_t DataBytes() const { return data_bytes_; }
  const std::vector<std::string>& files() const { return file_names_; }
  // "model.safetensors" or "model.safetensors.index.json" (for messages).
  const std::string& origin() const { return origin_; }

 private:
  std::string dir_, origin_;
  std::vector<std::string> file_names_;
  std::vector<std::shared_ptr<io::SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor -> index into files_
  uint64_t data_bytes_ = 0;
};

// config.json of a folder parsed through its architecture.
ModelConfig ReadHfConfig(const std::string& dir, const Architecture** arch = nullptr);

struct HfModel {
  ModelConfig config;
  ModelWeights weights;
  std::string architecture;
  std::string tokenizer_path;  // dir/tokenizer.json when present, else empty
};

// The canonical tensors of a folder (ModelWeights::ForEachTensor names), loaded one at a time:
// what LoadHfModel fills a whole model from, and what `moe quantize` streams a model larger than
// memory through. Open checks the config, the shards, the presence and shape of every tensor the
// architecture's layout needs and that none is left over, before any tensor data is read.
class HfWeightReader {
 public:
  static HfWeightReader Open(const std::string& dir, DType dtype = DType::kF32);
  const ModelConfig& config() const { return config_; }
  std::string_view architecture() const;
  // Fills t, of the canonical shape and the reader's dtype (shape-only tensors get storage here),
  // with the canonical tensor `name`, converted from the file's float type.
  void Fill(const std::string& name, Tensor& t) const;

 private:
  std::string dir_;
  const Architecture* arch_ = nullptr;
  ModelConfig config_;
  DType dtype_ = DType::kF32;
  std::shared_ptr<const HfTensorFiles> files_;
};

// Loads a folder; dtype F32 (inference, training) or F64 (gradient checks).
HfModel LoadHfModel(const std::string& dir, DType dtype = DType::kF32);

}  // namespace moe::model
