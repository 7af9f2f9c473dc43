// The compiled normalizer, pre-tokenizer and decoder of a Tokenizer: the steps of a TokenizerSpec
// with their regexes built once. Semantics follow Hugging Face tokenizers step by step (see the
// comments in pipeline.cc). All text is valid UTF-8 except where a decoder says otherwise.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/tokenizer/regex.h"
#include "moe/tokenizer/spec.h"

namespace moe::tokenizer {

class Normalizer {
 public:
  explicit Normalizer(const std::vector<NormalizerStep>& steps);
  bool empty() const { return steps_.empty(); }
  std::string Apply(std::string text) const;

 private:
  std::vector<NormalizerStep> steps_;
  std::vector<std::optional<Regex>> regex_;
};

class PreTokenizer {
 public:
  explicit PreTokenizer(const std::vector<PreTokenizerStep>& steps);
  // Splits one normalized piece into words, appended to `out`. `at_start`: the piece begins the
  // input text (for Metaspace prepend_scheme "first").
  void Apply(std::string text, bool at_start, std::vector<std::string>& out) const;

 private:
  struct Piece {
    std::string text;
    bool at_start;
  };
  void Step(size_t i, Piece piece, std::vector<Piece>& out) const;

  std::vector<PreTokenizerStep> steps_;
  std::vector<std::optional<Regex>> regex_;  // Split regex, or ByteLevel's GPT-2 regex
};

class Decoder {
 public:
  explicit Decoder(const std::optional<std::vector<DecoderStep>>& steps);
  // Token strings -> text (valid UTF-8).
  std::string Apply(std::vector<std::string> tokens) const;

 private:
  bool joined_with_space_ = false;  // no decoder at all
  std::vector<DecoderStep> steps_;
  std::vector<std::optional<Regex>> regex_;
};

}  // namespace moe::tokenizer
