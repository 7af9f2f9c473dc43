// Hugging Face tokenizer.json -> TokenizerSpec.
//
// Reads exactly the components the supported MoE families use (see docs/TOKENIZERS.md); anything
// else is a moe::Error naming `origin`, the JSON field and, for an unknown "type", the supported
// ones. Regexes are compiled here once so that a bad pattern names its field. The model vocabulary,
// merges and added tokens are checked by Tokenizer::FromSpec (ValidateSpec), with the same field
// names.
#pragma once

#include <string_view>

#include "moe/tokenizer/spec.h"

namespace moe::tokenizer {

TokenizerSpec ParseHfTokenizerJson(std::string_view text, std::string_view origin);

// Checks a spec from any source: vocab ids dense and unique, merges and unk name known tokens,
// scores match the vocab, added tokens agree with the vocab, template ids exist. Errors read
// "[tokenizer] <origin>: <field>: <problem>" with tokenizer.json field names.
void ValidateSpec(const TokenizerSpec& spec, std::string_view origin);

}  // namespace moe::tokenizer
