// Byte-level training data: token streams labelled with a domain per token, packed into
// fixed-length rows [B, T+1] (inputs are [:, :T], targets [:, 1:]). Both the built-in corpus
// (corpus.h) and user text files (LoadTextFiles) produce a Dataset, so training and evaluation see
// one format.
//
// Tokens are bytes 0..255 plus two specials. Every sample (or file part) is followed by kSepToken,
// labelled with the sample's domain: predicting the end of a sample is part of that domain, and at
// a separator the model has just read that sample. Tokens that belong to no sample (the padding of
// PackSequential's last row) are kPadToken with domain kNoDomain; losses and routing tables skip
// them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/rng.h"

namespace moe::train {

inline constexpr int32_t kSepToken = 256;   // ends every sample; a prompt starts with it
inline constexpr int32_t kPadToken = 257;   // fills the tail of the last PackSequential row
inline constexpr int32_t kVocabSize = 258;  // V
inline constexpr int32_t kNoDomain = -1;    // label of kPadToken

struct TokenStream {
  std::vector<int32_t> tokens;   // [N] bytes 0..255 and kSepToken
  std::vector<int32_t> domains;  // [N] domain of each token

  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
  // Appends the bytes and then kSepToken, all labelled `domain`.
  void Append(int32_t domain, std::string_view bytes);
};

struct Dataset {
  std::vector<std::string> domain_names;  // label d names domain_names[d]
  TokenStream train;
  TokenStream val;
};

// Rows of byte tokens with per-token domain labels. Loss at input position t predicts
// tokens[b, t+1]; per-domain loss uses that target's label domains[b, t+1]; routing tables use the
// input's label domains[b, t].
struct TokenBatch {
  int64_t batch = 0;             // B
  int64_t seq_len = 0;           // T
  std::vector<int32_t> tokens;   // [B, T+1]
  std::vector<int32_t> domains;  // [B, T+1]

  const int32_t* row(int64_t b) const { return tokens.data() + b * (seq_len + 1); }
  const int32_t* row_domains(int64_t b) const { return domains.data() + b * (seq_len + 1); }
};

// Training rows: B windows of T+1 consecutive tokens at uniformly random offsets of the stream
// (windows cross sample boundaries, as packed training does). Needs stream.size() >= T+1.
TokenBatch SampleBatch(const TokenStream& stream, int64_t batch, int64_t seq_len, Rng& rng);

// Evaluation rows: row r holds tokens [r*T, r*T + T] (consecutive rows share one token), so every
// token after the first is a target exactly once; the last row is padded with kPadToken/kNoDomain.
// max_rows > 0 keeps only the first max_rows rows. Needs stream.size() >= 2.
TokenBatch PackSequential(const TokenStream& stream, int64_t seq_len, int64_t max_rows = 0);

// User text files as a dataset (`--data a.txt b.txt`): each file is one domain named by its file
// name (without folders); the last val_fraction of each file's bytes is held out (exact byte split,
// so the cut may fall inside a line or a UTF-8 sequence; byte-level training does not mind).
struct TextDataOptions {
  double val_fraction = 0.1;                     // in [0, 1); 0 leaves val empty
  uint64_t max_file_bytes = uint64_t{64} << 20;  // larger files are an error, not truncated
  uint64_t max_total_bytes = uint64_t{256} << 20;
};

// Throws moe::Error naming the file when one is missing, not a regular file, unreadable, empty,
// over a limit, contains NUL bytes (not text), is too small to split, or when two files share a
// name (domain names must be unique).
Dataset LoadTextFiles(std::span<const std::string> paths, const TextDataOptions& opts = {});

}  // namespace moe::train
