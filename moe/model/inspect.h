// `moe inspect MODEL`: what a model holds, from its headers only (no weights are read or
// dequantised): architecture, attention, per-layer FFN kind, parameters total vs active per token,
// and memory by part. MODEL is a Hugging Face folder (config.json + safetensors headers) or a .gguf
// file (metadata + tensor infos; the file is mapped, so only the pages of the header are touched).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/model/config.h"

namespace moe::model {

// The report as text; Error (naming the file) for folders that would not load and for .gguf files
// that do not parse or describe no supported model.
std::string InspectModel(const std::string& path);

// What a GGUF file holds, from its header alone.
struct GgufReport {
  std::string architecture;  // general.architecture
  std::string name;          // general.name ("" when absent)
  ModelConfig config;        // GgufModelConfig: what LoadGgufModel would build
  uint32_t version = 0;      // GGUF version
  uint64_t file_bytes = 0;
  uint64_t data_offset = 0;   // where the tensor data section starts
  uint64_t tensor_bytes = 0;  // the tensors' bytes (without alignment padding)
  int64_t tensors = 0;
  // Every tensor is counted in exactly one part, in this order: embeddings, attention, router,
  // routed experts, shared experts, dense ffn, norms, head, other (rope_freqs, unknown names).
  // `params` are element counts, so they match CountParams(config) part by part.
  struct Part {
    std::string name;
    double params = 0;
    uint64_t bytes = 0;
    int64_t tensors = 0;
  };
  std::vector<Part> parts;
  // Bytes one token reads: everything but the routed experts, plus K of E of each MoE layer's.
  double active_bytes = 0;
  struct TypeUse {
    std::string name;  // "Q4_K"
    int64_t tensors = 0;
    double params = 0;
    uint64_t bytes = 0;
    bool supported = false;  // moe has kernels for it (the loader dequantises it)
  };
  std::vector<TypeUse> types;   // most bytes first
  int64_t file_type = -1;       // general.file_type (-1 when absent)
  std::string tokenizer_model;  // tokenizer.ggml.model ("" when absent)
  std::string tokenizer_pre;    // tokenizer.ggml.pre
  int64_t tokenizer_tokens = 0, tokenizer_merges = 0;
  std::string tokenizer_problem;     // why moe cannot read the embedded tokenizer ("" when it can)
  int64_t chat_template_bytes = -1;  // tokenizer.chat_template (-1 when absent)
};
GgufReport ReadGgufReport(const std::string& path);
std::string InspectGguf(const std::string& path);

}  // namespace moe::model
