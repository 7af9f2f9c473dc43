#include "moe/tokenizer/regex.h"

#include <oniguruma.h>

#include <mutex>

#include "moe/core/error.h"
#include "moe/tokenizer/unicode.h"

namespace moe::tokenizer {

namespace {

// Backtracking steps allowed for one match attempt (Oniguruma's default, set explicitly): real
// patterns such as \s*[\r\n]+ backtrack once per character of a whitespace run, so this bounds
// runs to ~10M characters, while a pathological pattern from a malformed file becomes an Error.
constexpr unsigned long kRetryLimitInMatch = 10'000'000;

void InitOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encs[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encs, 1);
  });
}

std::string OnigMessage(int code, OnigErrorInfo* info) {
  OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
  const int n = info ? onig_error_code_to_str(buf, code, info) : onig_error_code_to_str(buf, code);
  return std::string(reinterpret_cast<const char*>(buf), n > 0 ? static_cast<size_t>(n) : 0);
}

}  // namespace

struct Regex::Impl {
  OnigRegex re = nullptr;
  ~Impl() {
    if (re) onig_free(re);
  }
};

Regex::Regex(std::string_view pattern, std::string_view where) : impl_(std::make_unique<Impl>()) {
  InitOnce();
  if (!IsValidUtf8(pattern)) Fail("tokenizer", "{}: regex is not valid UTF-8", where);
  OnigErrorInfo info{};
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  const int r = onig_new(&impl_->re, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                         ONIG_SYNTAX_DEFAULT, &info);
  if (r != ONIG_NORMAL) {
    impl_->re = nullptr;
    Fail("tokenizer", "{}: invalid regex: {}", where, OnigMessage(r, &info));
  }
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

std::vector<std::pair<size_t, size_t>> Regex::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  const auto* begin = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = begin + text.size();
  OnigRegion* region = onig_region_new();
  OnigMatchParam* mp = onig_new_match_param();
  onig_initialize_match_param(mp);
  onig_set_retry_limit_in_match_of_match_param(mp, kRetryLimitInMatch);
  size_t pos = 0;
  int failure = 0;
  while (pos <= text.size()) {
    const int r = onig_search_with_param(impl_->re, begin, end, begin + pos, end, region,
                                         ONIG_OPTION_NONE, mp);
    if (r == ONIG_MISMATCH) break;
    if (r < 0) {
      failure = r;
      break;
    }
    const auto s = static_cast<size_t>(region->beg[0]);
    const auto e = static_cast<size_t>(region->end[0]);
    if (e > s) {
      out.emplace_back(s, e);
      pos = e;
    } else {
      // Empty match: step over one character.
      if (s >= text.size()) break;
      pos = s + DecodeUtf8(text, s).len;
    }
  }
  onig_region_free(region, 1);
  onig_free_match_param(mp);
  if (failure) Fail("tokenizer", "regex search failed: {}", OnigMessage(failure, nullptr));
  return out;
}

}  // namespace moe::tokenizer
