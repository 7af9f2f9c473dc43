// A model folder ready to generate with: config + weights, the tokenizer (tokenizer.json, or the
// byte tokenizer of models trained by `moe train`), the ids that end generation, and the sampling
// defaults of generation_config.json. The CLI's run / chat / perplexity / bench start here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moe/generate/sampler.h"
#include "moe/model/config.h"
#include "moe/model/weights.h"
#include "moe/tokenizer/tokenizer.h"

namespace moe::generate {

struct ModelDir {
  std::string path;
  model::ModelConfig config;
  model::ModelWeights weights;
  tokenizer::Tokenizer tokenizer = tokenizer::Tokenizer::Bytes();
  bool byte_level = false;        // no tokenizer.json: a `moe train` model (bytes + separator)
  std::vector<int32_t> stop_ids;  // end-of-sequence ids (generation_config, config, tokenizer)
  SamplerOptions sampling;        // generation_config.json defaults (greedy when absent)
  std::string tokenizer_config;   // path of tokenizer_config.json ("" when absent)
  std::string chat_template;      // tokenizer.chat_template of a GGUF file ("" when absent)

  // Prompt text -> ids: the tokenizer's special tokens (BOS) for Hugging Face models, the
  // separator for byte-level ones.
  std::vector<int32_t> EncodePrompt(const std::string& text, bool add_special_tokens = true) const;
};

// Loads `path`: a model folder, a `moe train` run folder (its newest checkpoint) or a .gguf file
// (moe/model/gguf_model.h; its embedded tokenizer, else the byte tokenizer). Errors name the file
// and the field.
ModelDir OpenModelDir(const std::string& path);

// A Hugging Face folder runs as f32 in memory (4 bytes per parameter): an Error, naming the sizes
// and `moe quantize` as the way out, when that is more than ram_bytes (OpenModelDir passes the
// machine's physical memory) and the files are consistent with the config. Exposed for tests.
void CheckFolderFitsInMemory(const std::string& path, double ram_bytes);

// generation_config.json: eos_token_id (int or list) and the sampling fields (do_sample,
// temperature, top_k, top_p, min_p, repetition_penalty) into `so`/`eos`. Exposed for tests.
void ReadGenerationConfig(const std::string& json_text, const std::string& origin,
                          SamplerOptions& so, std::vector<int32_t>& eos);

}  // namespace moe::generate
