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
  int64_t repacked_bytes = 0;     // GGUF matrices regrouped for decode (see OpenModelDir)

  // Prompt text -> ids: the tokenizer's special tokens (BOS) for Hugging Face models, the
  // separator for byte-level ones.
  std::vector<int32_t> EncodePrompt(const std::string& text, bool add_special_tokens = true) const;
};

// Loads `path`: a model folder, a `moe train` run folder (its newest checkpoint) or a .gguf file
// (moe/model/gguf_model.h; its embedded tokenizer, else the byte tokenizer). Errors name the file
// and the field. A .gguf is mapped; its Q8_0, Q4_0, Q4_K, Q5_K and Q6_K matrices are then regrouped
// in 16-row tiles (Q8_0x16, Q4_0x16, Q4_Kx16, ...) for the faster decode kernels
// (model::RepackForDecode: copies in memory, the same bytes) when this CPU runs them, MOE_REPACK is
// not 0 and the copies take at most half of the memory available; otherwise (a file larger than
// RAM) they stay mapped.
ModelDir OpenModelDir(const std::string& path);

// Whether OpenModelDir regroups `bytes` of matrices: MOE_REPACK (0 = never, unset or 1 =
// when they fit; anything else is an Error) and bytes <= available / 2. Exposed for tests.
bool ShouldRepack(int64_t bytes, double available_bytes);

// A Hugging Face folder runs as f32 in memory (4 bytes per parameter): an Error, naming the sizes
// and `moe quantize` as the way out, when that is more than ram_bytes (OpenModelDir passes the
// machine's physical memory) and the files are consistent with the config. Exposed for tests.
void CheckFolderFitsInMemory(const std::string& path, double ram_bytes);

// generation_config.json: eos_token_id (int or list) and the sampling fields (do_sample,
// temperature, top_k, top_p, min_p, repetition_penalty) into `so`/`eos`. Exposed for tests.
void ReadGenerationConfig(const std::string& json_text, const std::string& origin,
                          SamplerOptions& so, std::vector<int32_t>& eos);

}  // namespace moe::generate
