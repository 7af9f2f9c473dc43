// GGUF tokenizer metadata (tokenizer.ggml.*) <-> TokenizerSpec.
//
//   tokenizer.ggml.model = "gpt2": byte-level BPE with tokenizer.ggml.merges ("a b" strings); the
//     pre-tokenizer comes from tokenizer.ggml.pre: "default"/"gpt2" (GPT-2 regex), "olmo" (NFC +
//     GPT-2 regex), "llama-bpe" (Llama 3 regex, whole-word vocabulary hits), "qwen2" (NFC + Qwen2
//     regex), "deepseek-v3" (digit runs, CJK runs, DeepSeek-V3 regex).
//   tokenizer.ggml.model = "llama": SentencePiece-style BPE over tokenizer.ggml.scores with
//     <0xNN> byte fallback, "▁" for spaces (prefixed unless tokenizer.ggml.add_space_prefix is
//     false), as Llama 2 / Mistral / Mixtral.
// tokenizer.ggml.token_type: 1 normal, 2 unknown, 3 control (special added token), 4 user-defined
// (added token), 5 unused, 6 byte. bos/eos ids and add_bos_token / add_eos_token set the
// single-sequence template.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "moe/io/gguf.h"
#include "moe/tokenizer/spec.h"

namespace moe::tokenizer {

// nullopt when the file has no tokenizer.ggml.model. Unknown model or pre -> Error listing the
// supported ones.
std::optional<TokenizerSpec> TokenizerSpecFromGguf(const io::GgufFile& f);

// Adds the tokenizer.ggml.* keys for `spec` (bos/eos keys only when model_bos/model_eos < 0, i.e.
// when the model metadata did not already write them). Returns false with `why` when the spec is
// not one of the families above (nothing is added then).
bool AddTokenizerToGguf(const TokenizerSpec& spec, int32_t model_bos, int32_t model_eos,
                        io::GgufWriter& w, std::string* why);

// "default, gpt2, olmo, llama-bpe, qwen2, deepseek-v3"
std::string GgufPreTokenizerNames();

}  // namespace moe::tokenizer
