#include "moe/tokenizer/pipeline.h"

#include <algorithm>
#include <tuple>

#include "moe/tokenizer/unicode.h"

namespace moe::tokenizer {

namespace {

// The regex ByteLevel(use_regex = true) splits with (GPT-2's).
constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

using Ranges = std::vector<std::pair<size_t, size_t>>;

// Non-overlapping occurrences of a non-empty literal, left to right.
Ranges FindLiteral(std::string_view text, std::string_view lit) {
  Ranges out;
  for (size_t pos = text.find(lit); pos != std::string_view::npos;
       pos = text.find(lit, pos + lit.size()))
    out.emplace_back(pos, pos + lit.size());
  return out;
}

Ranges FindPattern(std::string_view text, std::string_view pattern,
                   const std::optional<Regex>& re) {
  return re ? re->FindAll(text) : FindLiteral(text, pattern);
}

std::string ReplaceAll(std::string_view text, const Ranges& matches, std::string_view content) {
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    out.append(text.substr(prev, b - prev));
    out.append(content);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

// Hugging Face SplitDelimiterBehavior over the matches of a pattern in a text of n bytes: the
// pieces to keep, in order (possibly empty ones, which callers drop).
Ranges ApplyBehavior(size_t n, const Ranges& matches, SplitBehavior behavior, bool invert) {
  std::vector<std::tuple<size_t, size_t, bool>> parts;  // (begin, end, is_match) covering [0, n)
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev < b) parts.emplace_back(prev, b, false);
    parts.emplace_back(b, e, true);
    prev = e;
  }
  if (prev < n) parts.emplace_back(prev, n, false);
  if (invert)
    for (auto& p : parts) std::get<2>(p) = !std::get<2>(p);

  Ranges out;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& [b, e, m] : parts)
        if (!m) out.emplace_back(b, e);
      break;
    case SplitBehavior::kIsolated:
      for (const auto& [b, e, m] : parts) out.emplace_back(b, e);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const auto& [b, e, m] : parts) {
        if (m && !prev_match && !out.empty())
          out.back().second = e;
        else
          out.emplace_back(b, e);
        prev_match = m;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool next_match = false;  // walking backwards
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        const auto& [b, e, m] = *it;
        if (m && !next_match && !out.empty())
          out.back().first = b;
        else
          out.emplace_back(b, e);
        next_match = m;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool prev_match = false;
      for (const auto& [b, e, m] : parts) {
        if (m == prev_match && !out.empty())
          out.back().second = e;
        else
          out.emplace_back(b, e);
        prev_match = m;
      }
      break;
    }
  }
  return out;
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// p + t (built by appending: GCC 12 warns falsely (-Wrestrict) on string::insert(0, ...)).
std::string Prepended(std::string_view p, std::string_view t) {
  std::string out;
  out.reserve(p.size() + t.size());
  out.append(p);
  out.append(t);
  return out;
}

// Each character of `text` for which pred holds, as one match.
template <typename Pred>
Ranges CharMatches(std::string_view text, Pred pred) {
  Ranges out;
  for (size_t i = 0; i < text.size();) {
    const Utf8Char c = DecodeUtf8(text, i);
    if (pred(c.cp)) out.emplace_back(i, i + c.len);
    i += c.len;
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------------

Normalizer::Normalizer(const std::vector<NormalizerStep>& steps) : steps_(steps) {
  for (const NormalizerStep& s : steps_)
    regex_.emplace_back(s.kind == NormalizerStep::Kind::kReplace && s.pattern_is_regex
                            ? std::optional<Regex>(std::in_place, s.pattern, "normalizer")
                            : std::nullopt);
}

std::string Normalizer::Apply(std::string text) const {
  for (size_t i = 0; i < steps_.size(); ++i) {
    const NormalizerStep& s = steps_[i];
    switch (s.kind) {
      case NormalizerStep::Kind::kNfc:
        text = Nfc(text);
        break;
      case NormalizerStep::Kind::kPrepend:
        if (!text.empty()) text = Prepended(s.content, text);
        break;
      case NormalizerStep::Kind::kReplace:
        text = ReplaceAll(text, FindPattern(text, s.pattern, regex_[i]), s.content);
        break;
    }
  }
  return text;
}

// ------------------------------------------------------------------------------------------------

PreTokenizer::PreTokenizer(const std::vector<PreTokenizerStep>& steps) : steps_(steps) {
  for (const PreTokenizerStep& s : steps_) {
    if (s.kind == PreTokenizerStep::Kind::kSplit && s.pattern_is_regex)
      regex_.emplace_back(std::in_place, s.pattern, "pre_tokenizer");
    else if (s.kind == PreTokenizerStep::Kind::kByteLevel && s.use_regex)
      regex_.emplace_back(std::in_place, kGpt2Pattern, "pre_tokenizer");
    else
      regex_.emplace_back(std::nullopt);
  }
}

void PreTokenizer::Step(size_t i, Piece piece, std::vector<Piece>& out) const {
  const PreTokenizerStep& s = steps_[i];
  std::string& text = piece.text;
  auto emit = [&](const Ranges& ranges) {
    for (const auto& [b, e] : ranges)
      if (e > b) out.push_back({text.substr(b, e - b), piece.at_start && b == 0});
  };
  switch (s.kind) {
    case PreTokenizerStep::Kind::kSplit:
      emit(ApplyBehavior(text.size(), FindPattern(text, s.pattern, regex_[i]), s.behavior,
                         s.invert));
      return;
    case PreTokenizerStep::Kind::kDigits:
      emit(ApplyBehavior(
          text.size(), CharMatches(text, IsNumeric),
          s.individual_digits ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false));
      return;
    case PreTokenizerStep::Kind::kMetaspace: {
      text = ReplaceAll(text, FindLiteral(text, " "), s.replacement);
      const bool prepend = s.prepend_scheme == PrependScheme::kAlways ||
                           (s.prepend_scheme == PrependScheme::kFirst && piece.at_start);
      if (prepend && !StartsWith(text, s.replacement)) text = Prepended(s.replacement, text);
      if (s.split)
        emit(ApplyBehavior(text.size(), FindLiteral(text, s.replacement),
                           SplitBehavior::kMergedWithNext, false));
      else
        emit({{0, text.size()}});
      return;
    }
    case PreTokenizerStep::Kind::kByteLevel: {
      if (s.add_prefix_space && !StartsWith(text, " ")) text = Prepended(" ", text);
      const Ranges ranges = s.use_regex ? ApplyBehavior(text.size(), regex_[i]->FindAll(text),
                                                        SplitBehavior::kIsolated, false)
                                        : Ranges{{0, text.size()}};
      const auto& chars = ByteLevelChars();
      for (const auto& [b, e] : ranges) {
        if (e == b) continue;
        std::string mapped;
        mapped.reserve(2 * (e - b));
        for (size_t k = b; k < e; ++k) mapped += chars[static_cast<unsigned char>(text[k])];
        out.push_back({std::move(mapped), piece.at_start && b == 0});
      }
      return;
    }
  }
}

void PreTokenizer::Apply(std::string text, bool at_start, std::vector<std::string>& out) const {
  if (text.empty()) return;
  std::vector<Piece> pieces, next;
  pieces.push_back({std::move(text), at_start});
  for (size_t i = 0; i < steps_.size(); ++i) {
    next.clear();
    for (Piece& p : pieces) Step(i, std::move(p), next);
    std::swap(pieces, next);
  }
  for (Piece& p : pieces) out.push_back(std::move(p.text));
}

// ------------------------------------------------------------------------------------------------

Decoder::Decoder(const std::optional<std::vector<DecoderStep>>& steps)
    : joined_with_space_(!steps.has_value()), steps_(steps.value_or(std::vector<DecoderStep>{})) {
  for (const DecoderStep& s : steps_)
    regex_.emplace_back(s.kind == DecoderStep::Kind::kReplace && s.pattern_is_regex
                            ? std::optional<Regex>(std::in_place, s.pattern, "decoder")
                            : std::nullopt);
}

namespace {

// "<0xAB>" -> 0xAB, else -1.
int ByteToken(std::string_view t) {
  if (t.size() != 6 || !StartsWith(t, "<0x") || t[5] != '>') return -1;
  int v = 0;
  for (char c : t.substr(3, 2)) {
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= c - '0';
    else if (c >= 'A' && c <= 'F')
      v |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f')
      v |= c - 'a' + 10;
    else
      return -1;
  }
  return v;
}

}  // namespace

std::string Decoder::Apply(std::vector<std::string> tokens) const {
  if (joined_with_space_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return ToValidUtf8(out);
  }
  for (size_t i = 0; i < steps_.size(); ++i) {
    const DecoderStep& s = steps_[i];
    switch (s.kind) {
      case DecoderStep::Kind::kByteLevel: {
        // Each token's characters back to bytes (a token with a character outside the byte-level
        // alphabet, e.g. an added token, keeps its own bytes); then lossy UTF-8 over the whole.
        std::string bytes;
        for (const std::string& t : tokens) {
          std::string tb;
          bool all = true;
          for (size_t k = 0; k < t.size() && all;) {
            const Utf8Char c = DecodeUtf8(t, k);
            const int b = ByteLevelByte(c.cp);
            if (!c.valid || b < 0)
              all = false;
            else
              tb += static_cast<char>(b);
            k += c.len;
          }
          bytes += all ? tb : t;
        }
        tokens.assign(1, ToValidUtf8(bytes));
        break;
      }
      case DecoderStep::Kind::kReplace:
        for (std::string& t : tokens)
          t = ReplaceAll(t, FindPattern(t, s.pattern, regex_[i]), s.content);
        break;
      case DecoderStep::Kind::kByteFallback: {
        // Runs of byte tokens become their bytes when those are valid UTF-8, else one U+FFFD per
        // byte (the whole run), as Hugging Face does.
        std::vector<std::string> out;
        std::string run;
        size_t run_len = 0;
        auto flush = [&] {
          if (run_len == 0) return;
          if (IsValidUtf8(run)) {
            out.push_back(run);
          } else {
            for (size_t k = 0; k < run_len; ++k) out.emplace_back("\xEF\xBF\xBD");
          }
          run.clear();
          run_len = 0;
        };
        for (std::string& t : tokens) {
          const int b = ByteToken(t);
          if (b >= 0) {
            run += static_cast<char>(b);
            ++run_len;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case DecoderStep::Kind::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderStep::Kind::kStrip:
        for (std::string& t : tokens) {
          size_t b = 0, e = t.size();
          for (int32_t k = 0; k < s.start && StartsWith(std::string_view(t).substr(b), s.content);
               ++k)
            b += s.content.size();
          for (int32_t k = 0;
               k < s.stop && e >= b + s.content.size() &&
               std::string_view(t).substr(e - s.content.size(), s.content.size()) == s.content;
               ++k)
            e -= s.content.size();
          t = t.substr(b, e - b);
        }
        break;
      case DecoderStep::Kind::kMetaspace:
        // The replacement becomes ' '; in the first token it is dropped (unless kNever).
        for (size_t k = 0; k < tokens.size(); ++k) {
          const bool drop = k == 0 && s.prepend_scheme != PrependScheme::kNever;
          tokens[k] = ReplaceAll(tokens[k], FindLiteral(tokens[k], s.replacement), drop ? "" : " ");
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return ToValidUtf8(out);
}

}  // namespace moe::tokenizer
