#include "moe/tokenizer/tokenizer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "moe/core/error.h"
#include "moe/tokenizer/bpe.h"
#include "moe/tokenizer/hf_json.h"
#include "moe/tokenizer/pipeline.h"
#include "moe/tokenizer/unicode.h"

namespace moe::tokenizer {

namespace {

constexpr std::string_view kTag = "tokenizer";

// Byte trie over added-token contents: leftmost-longest matching (as Hugging Face's Aho-Corasick
// with MatchKind::LeftmostLongest).
class Trie {
 public:
  void Add(std::string_view s, int32_t value) {
    int32_t node = 0;
    for (char c : s) {
      const uint64_t key = Key(node, c);
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        it = edges_.emplace(key, static_cast<int32_t>(value_.size())).first;
        value_.push_back(-1);
      }
      node = it->second;
    }
    if (value_[static_cast<size_t>(node)] < 0) value_[static_cast<size_t>(node)] = value;
  }
  bool empty() const { return value_.size() == 1; }
  // Longest entry starting at text[pos]: (value, length), or value -1.
  std::pair<int32_t, size_t> LongestAt(std::string_view text, size_t pos) const {
    int32_t node = 0, best = -1;
    size_t best_len = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      auto it = edges_.find(Key(node, text[i]));
      if (it == edges_.end()) break;
      node = it->second;
      if (value_[static_cast<size_t>(node)] >= 0) {
        best = value_[static_cast<size_t>(node)];
        best_len = i + 1 - pos;
      }
    }
    return {best, best_len};
  }

 private:
  static uint64_t Key(int32_t node, char c) {
    return (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
  }
  std::unordered_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> value_ = {-1};
};

// A piece of text: [begin, end) and the added token it is (index into added_tokens), or -1.
struct Span {
  size_t begin, end;
  int32_t added;
};

uint32_t LastChar(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return DecodeUtf8(s, i).cp;
}

}  // namespace

struct Tokenizer::Impl {
  TokenizerSpec spec;
  std::string origin;
  std::optional<BpeModel> model;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  Decoder decoder;
  Trie raw_trie, normalized_trie;  // values: index into spec.added_tokens
  std::unordered_map<int32_t, size_t> added_by_id;
  StringMap<size_t> added_by_content;
  std::unordered_set<std::string, StringHash, std::equal_to<>> special_contents;
  int32_t vocab_size = 0;

  explicit Impl(TokenizerSpec s, std::string_view o)
      : spec(std::move(s)),
        origin(o),
        normalizer(spec.normalizer),
        pre_tokenizer(spec.pre_tokenizer),
        decoder(spec.decoder) {
    if (spec.model == ModelKind::kBpe) model.emplace(spec);
    int64_t size = static_cast<int64_t>(spec.vocab.size());
    for (size_t i = 0; i < spec.added_tokens.size(); ++i) {
      const AddedToken& t = spec.added_tokens[i];
      added_by_id.emplace(t.id, i);
      added_by_content.emplace(t.content, i);
      if (t.special) special_contents.insert(t.content);
      if (t.normalized) {
        const std::string n = normalizer.Apply(t.content);
        if (!n.empty()) normalized_trie.Add(n, static_cast<int32_t>(i));
      } else {
        raw_trie.Add(t.content, static_cast<int32_t>(i));
      }
      size = std::max<int64_t>(size, int64_t{t.id} + 1);
    }
    vocab_size = static_cast<int32_t>(size);
  }

  // Splits `text` at added-token matches (Hugging Face AddedVocabulary::find_matches).
  std::vector<Span> FindAdded(std::string_view text, const Trie& trie) const {
    std::vector<Span> out;
    size_t start_offset = 0;
    if (!trie.empty()) {
      for (size_t pos = 0; pos < text.size();) {
        const auto [idx, len] = trie.LongestAt(text, pos);
        if (idx < 0) {
          ++pos;
          continue;
        }
        size_t start = pos, stop = pos + len;
        pos = stop;
        const AddedToken& t = spec.added_tokens[static_cast<size_t>(idx)];
        if (t.single_word) {
          const bool start_ok = start == 0 || !IsWordChar(LastChar(text.substr(0, start)));
          const bool stop_ok = stop == text.size() || !IsWordChar(DecodeUtf8(text, stop).cp);
          if (!start_ok || !stop_ok) continue;
        }
        if (t.lstrip) {
          size_t s = start;
          while (s > start_offset && IsWhitespace(LastChar(text.substr(0, s)))) {
            --s;
            while (s > 0 && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
          }
          start = std::max(s, start_offset);
        }
        if (t.rstrip) {
          while (stop < text.size()) {
            const Utf8Char c = DecodeUtf8(text, stop);
            if (!IsWhitespace(c.cp)) break;
            stop += c.len;
          }
        }
        if (start < start_offset) continue;  // inside what a previous rstrip absorbed
        if (start_offset < start) out.push_back({start_offset, start, -1});
        out.push_back({start, stop, idx});
        start_offset = stop;
        pos = std::max(pos, stop);
      }
    }
    if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
    return out;
  }

  void EncodeBpe(std::string_view text, std::vector<int32_t>& ids) const {
    std::vector<std::string> words;
    for (const Span& raw : FindAdded(text, raw_trie)) {
      if (raw.added >= 0) {
        ids.push_back(spec.added_tokens[static_cast<size_t>(raw.added)].id);
        continue;
      }
      const std::string normalized =
          normalizer.Apply(std::string(text.substr(raw.begin, raw.end - raw.begin)));
      for (const Span& sub : FindAdded(normalized, normalized_trie)) {
        if (sub.added >= 0) {
          ids.push_back(spec.added_tokens[static_cast<size_t>(sub.added)].id);
          continue;
        }
        words.clear();
        pre_tokenizer.Apply(normalized.substr(sub.begin, sub.end - sub.begin),
                            raw.begin == 0 && sub.begin == 0, words);
        for (const std::string& w : words) model->Tokenize(w, ids);
      }
    }
  }

  std::optional<std::string_view> Token(int32_t id) const {
    if (auto it = added_by_id.find(id); it != added_by_id.end())
      return spec.added_tokens[it->second].content;
    if (id >= 0 && static_cast<size_t>(id) < spec.vocab.size())
      return spec.vocab[static_cast<size_t>(id)];
    return std::nullopt;
  }
};

Tokenizer Tokenizer::FromFile(const std::string& path) {
  struct stat sb {};
  if (::stat(path.c_str(), &sb) != 0) Fail(kTag, "{}: cannot open: {}", path, std::strerror(errno));
  if (!S_ISREG(sb.st_mode)) Fail(kTag, "{}: not a regular file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail(kTag, "{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) Fail(kTag, "{}: read failed", path);
  return FromJson(ss.str(), path);
}

Tokenizer Tokenizer::FromJson(std::string_view json_text, std::string_view origin) {
  return FromSpec(ParseHfTokenizerJson(json_text, origin), origin);
}

Tokenizer Tokenizer::FromSpec(TokenizerSpec spec, std::string_view origin) {
  ValidateSpec(spec, origin);
  return Tokenizer(std::make_shared<const Impl>(std::move(spec), origin));
}

Tokenizer Tokenizer::Bytes(bool add_bos, bool add_eos) {
  TokenizerSpec spec;
  spec.model = ModelKind::kBytes;
  for (int b = 0; b < 256; ++b) spec.vocab.push_back(fmt::format("<0x{:02X}>", b));
  int32_t next = 256;
  if (add_bos) {
    spec.added_tokens.push_back({next, "<s>", true, false, false, false, false});
    spec.bos_id = next;
    spec.prefix_ids = {next++};
  }
  if (add_eos) {
    spec.added_tokens.push_back({next, "</s>", true, false, false, false, false});
    spec.eos_id = next;
    spec.suffix_ids = {next++};
  }
  return FromSpec(std::move(spec), "<bytes>");
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  const Impl& im = *impl_;
  if (text.size() > size_t{std::numeric_limits<int32_t>::max()})
    Fail(kTag, "{}: input of {} bytes is too long (limit 2 GiB)", im.origin, text.size());
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = im.spec.prefix_ids;
  if (im.spec.model == ModelKind::kBytes) {
    ids.reserve(ids.size() + text.size() + 1);
    for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  } else if (IsValidUtf8(text)) {
    im.EncodeBpe(text, ids);
  } else {
    im.EncodeBpe(ToValidUtf8(text), ids);
  }
  if (add_special_tokens)
    ids.insert(ids.end(), im.spec.suffix_ids.begin(), im.spec.suffix_ids.end());
  return ids;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& im = *impl_;
  if (im.spec.model == ModelKind::kBytes) {
    std::string bytes;
    for (int32_t id : ids) {
      if (id >= 0 && id < 256) {
        bytes += static_cast<char>(id);
      } else if (auto t = im.Token(id); t && !(skip_special && IsSpecial(id))) {
        bytes += *t;
      }
    }
    return ToValidUtf8(bytes);
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const auto t = im.Token(id);
    if (!t) continue;
    if (skip_special && im.special_contents.find(*t) != im.special_contents.end()) continue;
    tokens.emplace_back(*t);
  }
  return im.decoder.Apply(std::move(tokens));
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end())
    return impl_->spec.added_tokens[it->second].id;
  if (impl_->model) return impl_->model->Find(token);
  for (size_t i = 0; i < impl_->spec.vocab.size(); ++i)
    if (impl_->spec.vocab[i] == token) return static_cast<int32_t>(i);
  return std::nullopt;
}

std::optional<std::string_view> Tokenizer::IdToToken(int32_t id) const { return impl_->Token(id); }
int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->spec.bos_id; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->spec.eos_id; }

std::optional<int32_t> Tokenizer::SpecialTokenId(std::string_view content) const {
  auto it = impl_->added_by_content.find(content);
  if (it == impl_->added_by_content.end() || !impl_->spec.added_tokens[it->second].special)
    return std::nullopt;
  return impl_->spec.added_tokens[it->second].id;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->spec.added_tokens[it->second].special;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->spec.added_tokens; }
const TokenizerSpec& Tokenizer::spec() const { return impl_->spec; }

// ------------------------------------------------------------------------------------------------

namespace {

// Tokens held back at most: an incomplete character spans at most 4 tokens, so text that still
// ends in U+FFFD after 8 holds a genuine replacement character (or garbage) and goes out.
constexpr size_t kMaxPending = 8;

bool EndsWithReplacement(std::string_view s) {
  return s.size() >= 3 && s.substr(s.size() - 3) == "\xEF\xBF\xBD";
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string StreamDecoder::Push(int32_t id) {
  ids_.push_back(id);
  const std::string text = tok_.Decode(ids_, skip_special_);
  const size_t pending = ids_.size() - context_;
  // Wait while nothing new is complete; but never for more than kMaxPending tokens, so the
  // window (and the cost of each Push) stays bounded whatever the ids are.
  const bool ready = text.size() > prefix_.size() && !EndsWithReplacement(text);
  if (!ready && pending < kMaxPending) return {};
  std::string out;
  if (text.compare(0, prefix_.size(), prefix_) == 0) {
    out = text.substr(prefix_.size());
  } else {
    // The new token changed earlier text (a byte run turning invalid): emit the pending part alone.
    out = tok_.Decode(std::span<const int32_t>(ids_).subspan(context_), skip_special_);
  }
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<ptrdiff_t>(context_));
  context_ = ids_.size();
  prefix_ = tok_.Decode(ids_, skip_special_);
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out;
  if (context_ < ids_.size()) {
    const std::string text = tok_.Decode(ids_, skip_special_);
    if (text.size() > prefix_.size() && text.compare(0, prefix_.size(), prefix_) == 0)
      out = text.substr(prefix_.size());
    else if (text.compare(0, prefix_.size(), prefix_) != 0)
      out = tok_.Decode(std::span<const int32_t>(ids_).subspan(context_), skip_special_);
  }
  Reset();
  return out;
}

void StreamDecoder::Reset() {
  ids_.clear();
  context_ = 0;
  prefix_.clear();
}

}  // namespace moe::tokenizer
