// BPE model: one pre-tokenized word -> ids.
//
// Characters not in the vocabulary become <0xXX> byte tokens (byte_fallback) or the unknown token
// (consecutive ones fused when fuse_unk), or are dropped, as in Hugging Face. Merging uses a
// priority queue over a linked list of symbols, O(n log n) in the word length:
//   - ranked merges (Hugging Face): the lowest-ranked applicable merge, leftmost first;
//   - scores (llama.cpp SentencePiece / GGUF): the adjacent pair whose concatenation is in the
//     vocabulary with the highest score, leftmost first.
// Results for words up to kMaxCachedWord bytes are cached (thread-safe).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moe/tokenizer/spec.h"

namespace moe::tokenizer {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  static constexpr size_t kMaxCachedWord = 256;
  static constexpr size_t kMaxCacheEntries = 1 << 16;

  // The spec must already be validated (Tokenizer does it).
  explicit BpeModel(const TokenizerSpec& spec);
  BpeModel(const BpeModel& other);

  // Appends the ids of `word` (non-empty, valid UTF-8).
  void Tokenize(std::string_view word, std::vector<int32_t>& out) const;
  std::optional<int32_t> Find(std::string_view token) const;

 private:
  struct Symbol {
    int32_t id;      // -1: not in vocab (scores mode, resolved at the end)
    uint32_t begin;  // byte span in the word
    uint32_t len;
    int32_t prev, next;
  };
  void Merge(std::string_view word, std::vector<Symbol>& syms) const;
  void Emit(std::string_view word, const std::vector<Symbol>& syms,
            std::vector<int32_t>& out) const;
  // Ids for an unknown character: byte tokens, or false when byte fallback cannot cover it.
  bool ByteFallback(std::string_view ch, std::vector<int32_t>& out) const;

  StringMap<int32_t> vocab_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a<<32|b) -> (rank, id)
  std::vector<float> scores_;
  bool use_scores_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  int32_t byte_ids_[256];

  mutable std::mutex cache_mu_;
  mutable StringMap<std::vector<int32_t>> cache_;
};

}  // namespace moe::tokenizer
