// TokenizerSpec: everything a tokenizer is, as plain data. Hugging Face tokenizer.json is parsed
// into it (hf_json.h); a GGUF loader can fill the same fields (vocab + scores or merges, token
// types as added/special tokens, BOS/EOS) and build a Tokenizer from it.
//
// The steps are those of the Hugging Face pipeline, in its order:
//   added tokens split out -> normalizer -> pre-tokenizer -> model (BPE) -> post-processor
//   ids -> tokens -> decoder -> text
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moe::tokenizer {

enum class ModelKind : uint8_t {
  kBpe,    // byte-pair encoding over `vocab` with ranked `merges` or per-token `scores`
  kBytes,  // ids 0..255 are the raw bytes (Tokenizer::Bytes); no merges, no pipeline
};

// A token matched in the text before the model runs (tokenizer.json "added_tokens").
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = true;       // skipped by Decode(skip_special = true)
  bool single_word = false;  // only matches when not inside a word
  bool lstrip = false;       // absorbs the whitespace on its left
  bool rstrip = false;       // absorbs the whitespace on its right
  bool normalized = false;   // matched against the normalized text (else the raw text)
};

struct NormalizerStep {
  enum class Kind : uint8_t {
    kNfc,      // Unicode NFC
    kPrepend,  // content + text, for non-empty text
    kReplace,  // every match of pattern -> content
  };
  Kind kind = Kind::kNfc;
  std::string pattern;  // kReplace
  bool pattern_is_regex = false;
  std::string content;  // kPrepend: the prefix; kReplace: the replacement
};

// How a Split keeps the pieces its pattern matches (Hugging Face SplitDelimiterBehavior).
enum class SplitBehavior : uint8_t {
  kRemoved,
  kIsolated,
  kMergedWithPrevious,
  kMergedWithNext,
  kContiguous,
};

// When Metaspace adds the replacement character in front of a piece.
enum class PrependScheme : uint8_t {
  kAlways,  // every piece
  kFirst,   // only the piece that starts the text
  kNever,
};

struct PreTokenizerStep {
  enum class Kind : uint8_t {
    kSplit,      // split on pattern matches, keeping them as `behavior` says
    kByteLevel,  // (GPT-2 regex split,) then bytes -> printable byte-level characters
    kDigits,     // split out digits (runs, or each digit)
    kMetaspace,  // ' ' -> replacement, prepend per scheme, split before each replacement
  };
  Kind kind = Kind::kSplit;
  // kSplit
  std::string pattern;
  bool pattern_is_regex = true;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  // kByteLevel
  bool add_prefix_space = false;
  bool use_regex = true;
  // kDigits
  bool individual_digits = false;
  // kMetaspace
  std::string replacement = "\u2581";
  PrependScheme prepend_scheme = PrependScheme::kAlways;
  bool split = true;
};

struct DecoderStep {
  enum class Kind : uint8_t {
    kByteLevel,     // byte-level characters -> bytes -> UTF-8 (invalid bytes -> U+FFFD)
    kReplace,       // every match of pattern -> content, in each token
    kByteFallback,  // runs of <0xXX> tokens -> their bytes as UTF-8 (invalid run: U+FFFD per byte)
    kFuse,          // all tokens -> one
    kStrip,         // remove up to `start` / `stop` copies of `content` at each token's ends
    kMetaspace,     // replacement -> ' '; the first token loses a leading ' ' unless kNever
  };
  Kind kind = Kind::kFuse;
  std::string pattern;  // kReplace
  bool pattern_is_regex = false;
  std::string content;                 // kReplace: replacement; kStrip: the character stripped
  int32_t start = 0, stop = 0;         // kStrip
  std::string replacement = "\u2581";  // kMetaspace
  PrependScheme prepend_scheme = PrependScheme::kAlways;  // kMetaspace
};

struct TokenizerSpec {
  ModelKind model = ModelKind::kBpe;

  // Model vocabulary: vocab[id] is the token string (byte-level characters for byte-level BPE,
  // "▁" for spaces and "<0xXX>" byte tokens for SentencePiece style).
  std::vector<std::string> vocab;
  // Exactly one of these drives BPE: ranked merges (rank = index; Hugging Face), or per-token
  // scores (llama.cpp / GGUF SentencePiece: repeatedly merge the adjacent pair whose concatenation
  // is in vocab with the highest score).
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<float> scores;             // empty, or one per vocab entry
  bool byte_fallback = false;            // unknown characters -> <0xXX> tokens
  std::optional<std::string> unk_token;  // unknown characters -> this token (when no fallback)
  bool fuse_unk = false;                 // consecutive unknowns -> one unk token
  bool ignore_merges = false;            // a word that is itself in vocab is one token

  std::vector<AddedToken> added_tokens;  // ids may extend past vocab.size()
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  // nullopt: no decoder (tokens are joined with ' ', as Hugging Face does without one).
  std::optional<std::vector<DecoderStep>> decoder = std::vector<DecoderStep>{};
  // Post-processor for a single sequence with add_special_tokens (TemplateProcessing "single").
  std::vector<int32_t> prefix_ids;
  std::vector<int32_t> suffix_ids;

  // tokenizer.json does not name BOS/EOS; the parser guesses them (template prefix, well-known
  // end-of-text tokens), and a caller with tokenizer_config.json or GGUF metadata may set them.
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
};

}  // namespace moe::tokenizer
