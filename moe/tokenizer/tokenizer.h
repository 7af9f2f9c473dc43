// Tokenizer: text <-> token ids for the tokenizers of published MoE checkpoints (Hugging Face
// tokenizer.json: byte-level BPE of GPT-2 / Qwen2 / Qwen3 / OLMoE / DeepSeek-V2/V3 / Llama-3, and
// SentencePiece-style BPE with byte fallback of Llama 2 / Mistral / Mixtral), built from a
// TokenizerSpec that a GGUF loader can fill too. Encode/Decode match Hugging Face tokenizers
// exactly on valid UTF-8 (tests/data/tokenizers holds the reference outputs).
//
// Invalid UTF-8 input: Encode first replaces each maximal ill-formed subsequence by U+FFFD (as
// Rust's String::from_utf8_lossy / Python's errors="replace" do), so the pipeline only sees valid
// text; Decode always returns valid UTF-8. The exception is Tokenizer::Bytes(), whose ids are the
// raw bytes: it encodes any byte string losslessly.
//
// A Tokenizer is immutable after construction, cheap to copy (shared state) and safe to use from
// several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/tokenizer/spec.h"

namespace moe::tokenizer {

class Tokenizer {
 public:
  // Parses a Hugging Face tokenizer.json. Errors name the file and the field.
  static Tokenizer FromFile(const std::string& path);
  static Tokenizer FromJson(std::string_view json_text, std::string_view origin = "<json>");
  // Validates the spec (ValidateSpec) and compiles it.
  static Tokenizer FromSpec(TokenizerSpec spec, std::string_view origin = "<spec>");
  // Plain byte-level tokenizer for training: ids 0..255 are the bytes; optional BOS (id 256,
  // "<s>") and EOS (next id, "</s>") added by Encode(add_special_tokens = true). Special tokens
  // are not matched inside the text, so every byte string round-trips.
  static Tokenizer Bytes(bool add_bos = false, bool add_eos = false);

  // Text -> ids. add_special_tokens applies the post-processor (e.g. BOS for Llama / Mixtral /
  // DeepSeek); special tokens written in the text are always recognised (except for Bytes()).
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  // Ids -> text. skip_special drops special added tokens. Ids with no token are skipped.
  std::string Decode(std::span<const int32_t> ids, bool skip_special) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  std::optional<std::string_view> IdToToken(int32_t id) const;
  // One past the largest id (model vocab and added tokens).
  int32_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // The id of a special added token with this content ("<|im_end|>"), else nullopt.
  std::optional<int32_t> SpecialTokenId(std::string_view content) const;
  bool IsSpecial(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;
  const TokenizerSpec& spec() const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Incremental decoding for streaming generation: Push returns the text that the new token
// completes, holding back output (at most 8 tokens) while it would end in an incomplete UTF-8
// character (e.g. a character split across byte-fallback or byte-level tokens). Concatenating
// every Push and the final Flush gives Decode(all ids) (for any ids a model emits short of
// invalid byte sequences longer than the hold); spaces that decoders strip at the start of a text
// (Llama's leading '▁') are kept between tokens, because each step decodes with the previously
// emitted tokens as context (the scheme of Hugging Face's DecodeStream).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true);
  std::string Push(int32_t id);
  // Whatever is still held back (an incomplete character comes out as U+FFFD).
  std::string Flush();
  void Reset();

 private:
  Tokenizer tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;  // context tokens (already emitted) + pending ones
  size_t context_ = 0;        // ids_[0, context_) were emitted
  std::string prefix_;        // Decode(ids_[0, context_))
};

}  // namespace moe::tokenizer
