// Regex: Oniguruma (Ruby syntax, UTF-8), the engine Hugging Face tokenizers uses, so the
// pre-tokenizer patterns of published tokenizer.json files (\p{L}, (?i:...), \s+(?!\S), ...)
// mean exactly what they mean there. Input must be valid UTF-8.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::tokenizer {

class Regex {
 public:
  // Error (tagged "tokenizer", prefixed with `where`) when the pattern does not compile.
  Regex(std::string_view pattern, std::string_view where);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping leftmost matches [begin, end) of `text`, scanning left to right; empty matches
  // are skipped. Thread-safe (each call has its own match state).
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::tokenizer
