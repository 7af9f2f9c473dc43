#include "moe/tokenizer/hf_json.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "moe/core/error.h"
#include "moe/tokenizer/bpe.h"
#include "moe/tokenizer/regex.h"
#include "moe/tokenizer/unicode.h"

namespace moe::tokenizer {

using nlohmann::json;

namespace {

constexpr std::string_view kTag = "tokenizer";

// A JSON value as a short string for messages (long values are cut).
std::string Brief(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Quotes a token for messages, cutting long ones.
std::string Quote(std::string_view s) {
  std::string out = "'";
  out += ToValidUtf8(s.substr(0, 40));
  if (s.size() > 40) out += "...";
  out += '\'';
  return out;
}

class Parser {
 public:
  explicit Parser(std::string_view origin) : origin_(origin) {}

  template <typename... Args>
  [[noreturn]] void Fail(std::string_view field, fmt::format_string<Args...> f,
                         Args&&... args) const {
    moe::Fail(kTag, "{}: {}: {}", origin_, field, fmt::format(f, std::forward<Args>(args)...));
  }

  // obj[key] or nullptr when absent (or null when null_is_absent).
  const json* Find(const json& obj, std::string_view key, bool null_is_absent = true) const {
    auto it = obj.find(key);
    if (it == obj.end() || (null_is_absent && it->is_null())) return nullptr;
    return &*it;
  }
  const json& Require(const json& obj, std::string_view key, const std::string& path) const {
    auto it = obj.find(key);
    if (it == obj.end()) Fail(path, "missing field '{}'", key);
    return *it;
  }
  void ExpectObject(const json& v, const std::string& path) const {
    if (!v.is_object())
      Fail(path, "is a JSON {} ({}), expected an object", v.type_name(), Brief(v));
  }
  void ExpectArray(const json& v, const std::string& path) const {
    if (!v.is_array()) Fail(path, "is a JSON {} ({}), expected an array", v.type_name(), Brief(v));
  }
  std::string String(const json& v, const std::string& path) const {
    if (!v.is_string()) Fail(path, "is a JSON {} ({}), expected a string", v.type_name(), Brief(v));
    return v.get<std::string>();
  }
  std::string String(const json& obj, std::string_view key, const std::string& path) const {
    return String(Require(obj, key, path), path + "." + std::string(key));
  }
  bool Bool(const json& obj, std::string_view key, const std::string& path, bool dflt) const {
    const json* v = Find(obj, key);
    if (!v) return dflt;
    if (!v->is_boolean())
      Fail(path + "." + std::string(key), "is a JSON {} ({}), expected true or false",
           v->type_name(), Brief(*v));
    return v->get<bool>();
  }
  int64_t Int(const json& v, const std::string& path, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(hi)) ||
        v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      Fail(path, "is {}, expected an integer in [{}, {}]", Brief(v), lo, hi);
    return v.get<int64_t>();
  }
  std::string Type(const json& v, const std::string& path, std::string_view supported) const {
    ExpectObject(v, path);
    auto it = v.find("type");
    if (it == v.end()) Fail(path, "missing field 'type'; supported: {}", supported);
    return String(*it, path + ".type");
  }
  [[noreturn]] void Unknown(const std::string& path, std::string_view what, const std::string& type,
                            std::string_view supported) const {
    Fail(path + ".type", "unknown {} type {}; supported: {}", what, Quote(type), supported);
  }
  // {"String": s} or {"Regex": r}; a regex is compiled to check it. Empty patterns are refused.
  std::pair<std::string, bool> Pattern(const json& obj, const std::string& path) const {
    const std::string p = path + ".pattern";
    const json& v = Require(obj, "pattern", path);
    ExpectObject(v, p);
    if (const json* s = Find(v, "String")) {
      std::string str = String(*s, p + ".String");
      if (str.empty()) Fail(p + ".String", "is empty");
      return {str, false};
    }
    if (const json* r = Find(v, "Regex")) {
      std::string re = String(*r, p + ".Regex");
      if (re.empty()) Fail(p + ".Regex", "is empty");
      Regex(re, fmt::format("{}: {}.Regex", origin_, p));
      return {re, true};
    }
    Fail(p, "is {}, expected {{\"String\": ...}} or {{\"Regex\": ...}}", Brief(v));
  }
  // Exactly one character (Metaspace replacement, Strip content).
  std::string OneChar(const json& obj, std::string_view key, const std::string& path) const {
    const std::string s = String(obj, key, path);
    if (s.empty() || !IsValidUtf8(s) || DecodeUtf8(s, 0).len != s.size())
      Fail(path + "." + std::string(key), "is {}, expected exactly one character", Quote(s));
    return s;
  }
  PrependScheme Scheme(const json& v, const std::string& path) const {
    const std::string s = String(v, path);
    if (s == "first") return PrependScheme::kFirst;
    if (s == "always") return PrependScheme::kAlways;
    if (s == "never") return PrependScheme::kNever;
    Fail(path, "unknown prepend_scheme {}; supported: first, always, never", Quote(s));
  }
  // Metaspace: prepend_scheme, or the older add_prefix_space (true = always).
  PrependScheme MetaspaceScheme(const json& obj, const std::string& path) const {
    if (const json* v = Find(obj, "prepend_scheme")) return Scheme(*v, path + ".prepend_scheme");
    return Bool(obj, "add_prefix_space", path, true) ? PrependScheme::kAlways
                                                     : PrependScheme::kNever;
  }

  void Normalizer(const json& v, const std::string& path, std::vector<NormalizerStep>& out) const {
    constexpr std::string_view kSupported = "NFC, Prepend, Replace, Sequence";
    const std::string type = Type(v, path, kSupported);
    NormalizerStep s;
    if (type == "Sequence") {
      const json& list = Require(v, "normalizers", path);
      ExpectArray(list, path + ".normalizers");
      for (size_t i = 0; i < list.size(); ++i)
        Normalizer(list[i], fmt::format("{}.normalizers[{}]", path, i), out);
      return;
    } else if (type == "NFC") {
      s.kind = NormalizerStep::Kind::kNfc;
    } else if (type == "Prepend") {
      s.kind = NormalizerStep::Kind::kPrepend;
      s.content = String(v, "prepend", path);
    } else if (type == "Replace") {
      s.kind = NormalizerStep::Kind::kReplace;
      std::tie(s.pattern, s.pattern_is_regex) = Pattern(v, path);
      s.content = String(v, "content", path);
    } else {
      Unknown(path, "normalizer", type, kSupported);
    }
    out.push_back(std::move(s));
  }

  void PreTokenizer(const json& v, const std::string& path,
                    std::vector<PreTokenizerStep>& out) const {
    constexpr std::string_view kSupported = "Split, ByteLevel, Digits, Metaspace, Sequence";
    const std::string type = Type(v, path, kSupported);
    PreTokenizerStep s;
    if (type == "Sequence") {
      const json& list = Require(v, "pretokenizers", path);
      ExpectArray(list, path + ".pretokenizers");
      for (size_t i = 0; i < list.size(); ++i)
        PreTokenizer(list[i], fmt::format("{}.pretokenizers[{}]", path, i), out);
      return;
    } else if (type == "Split") {
      s.kind = PreTokenizerStep::Kind::kSplit;
      std::tie(s.pattern, s.pattern_is_regex) = Pattern(v, path);
      const std::string b = String(v, "behavior", path);
      static constexpr std::pair<std::string_view, SplitBehavior> kBehaviors[] = {
          {"Removed", SplitBehavior::kRemoved},
          {"Isolated", SplitBehavior::kIsolated},
          {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
          {"MergedWithNext", SplitBehavior::kMergedWithNext},
          {"Contiguous", SplitBehavior::kContiguous},
      };
      auto it = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                             [&](const auto& kv) { return kv.first == b; });
      if (it == std::end(kBehaviors))
        Fail(path + ".behavior",
             "unknown behavior {}; supported: Removed, Isolated, MergedWithPrevious, "
             "MergedWithNext, Contiguous",
             Quote(b));
      s.behavior = it->second;
      s.invert = Bool(v, "invert", path, false);
    } else if (type == "ByteLevel") {
      s.kind = PreTokenizerStep::Kind::kByteLevel;
      s.add_prefix_space = Bool(v, "add_prefix_space", path, true);
      s.use_regex = Bool(v, "use_regex", path, true);
    } else if (type == "Digits") {
      s.kind = PreTokenizerStep::Kind::kDigits;
      s.individual_digits = Bool(v, "individual_digits", path, false);
    } else if (type == "Metaspace") {
      s.kind = PreTokenizerStep::Kind::kMetaspace;
      s.replacement = OneChar(v, "replacement", path);
      s.prepend_scheme = MetaspaceScheme(v, path);
      s.split = Bool(v, "split", path, true);
    } else {
      Unknown(path, "pre-tokenizer", type, kSupported);
    }
    out.push_back(std::move(s));
  }

  void Decoder(const json& v, const std::string& path, std::vector<DecoderStep>& out) const {
    constexpr std::string_view kSupported =
        "ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence";
    const std::string type = Type(v, path, kSupported);
    DecoderStep s;
    if (type == "Sequence") {
      const json& list = Require(v, "decoders", path);
      ExpectArray(list, path + ".decoders");
      for (size_t i = 0; i < list.size(); ++i)
        Decoder(list[i], fmt::format("{}.decoders[{}]", path, i), out);
      return;
    } else if (type == "ByteLevel") {
      s.kind = DecoderStep::Kind::kByteLevel;
    } else if (type == "Replace") {
      s.kind = DecoderStep::Kind::kReplace;
      std::tie(s.pattern, s.pattern_is_regex) = Pattern(v, path);
      s.content = String(v, "content", path);
    } else if (type == "ByteFallback") {
      s.kind = DecoderStep::Kind::kByteFallback;
    } else if (type == "Fuse") {
      s.kind = DecoderStep::Kind::kFuse;
    } else if (type == "Strip") {
      s.kind = DecoderStep::Kind::kStrip;
      s.content = OneChar(v, "content", path);
      s.start = static_cast<int32_t>(Int(Require(v, "start", path), path + ".start", 0, 1 << 20));
      s.stop = static_cast<int32_t>(Int(Require(v, "stop", path), path + ".stop", 0, 1 << 20));
    } else if (type == "Metaspace") {
      s.kind = DecoderStep::Kind::kMetaspace;
      s.replacement = OneChar(v, "replacement", path);
      s.prepend_scheme = MetaspaceScheme(v, path);
    } else {
      Unknown(path, "decoder", type, kSupported);
    }
    out.push_back(std::move(s));
  }

  // TemplateProcessing "single": special tokens before and after $A.
  void Template(const json& v, const std::string& path, TokenizerSpec& spec,
                bool& have_template) const {
    if (have_template) Fail(path, "a second TemplateProcessing; only one is supported");
    have_template = true;
    const json& tokens = Require(v, "special_tokens", path);
    ExpectObject(tokens, path + ".special_tokens");
    const json& single = Require(v, "single", path);
    ExpectArray(single, path + ".single");
    bool seen_a = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string p = fmt::format("{}.single[{}]", path, i);
      const json& piece = single[i];
      ExpectObject(piece, p);
      if (const json* seq = Find(piece, "Sequence")) {
        ExpectObject(*seq, p + ".Sequence");
        const std::string id = String(*seq, "id", p + ".Sequence");
        if (id != "A")
          Fail(p + ".Sequence.id", "is {}, expected 'A' in a single template", Quote(id));
        if (seen_a) Fail(p, "$A appears twice");
        seen_a = true;
      } else if (const json* st = Find(piece, "SpecialToken")) {
        ExpectObject(*st, p + ".SpecialToken");
        const std::string name = String(*st, "id", p + ".SpecialToken");
        auto it = tokens.find(name);
        if (it == tokens.end())
          Fail(p + ".SpecialToken.id", "{} is not in {}.special_tokens", Quote(name), path);
        const std::string tp = path + ".special_tokens." + name;
        ExpectObject(*it, tp);
        const json& ids = Require(*it, "ids", tp);
        ExpectArray(ids, tp + ".ids");
        auto& dst = seen_a ? spec.suffix_ids : spec.prefix_ids;
        for (size_t k = 0; k < ids.size(); ++k)
          dst.push_back(static_cast<int32_t>(Int(ids[k], fmt::format("{}.ids[{}]", tp, k), 0,
                                                 std::numeric_limits<int32_t>::max())));
      } else {
        Fail(p, "is {}, expected {{\"Sequence\": ...}} or {{\"SpecialToken\": ...}}", Brief(piece));
      }
    }
    if (!seen_a) Fail(path + ".single", "has no $A");
  }

  void PostProcessor(const json& v, const std::string& path, TokenizerSpec& spec,
                     bool& have_template) const {
    constexpr std::string_view kSupported = "TemplateProcessing, ByteLevel, Sequence";
    const std::string type = Type(v, path, kSupported);
    if (type == "Sequence") {
      const json& list = Require(v, "processors", path);
      ExpectArray(list, path + ".processors");
      for (size_t i = 0; i < list.size(); ++i)
        PostProcessor(list[i], fmt::format("{}.processors[{}]", path, i), spec, have_template);
    } else if (type == "TemplateProcessing") {
      Template(v, path, spec, have_template);
    } else if (type != "ByteLevel") {  // ByteLevel only trims offsets: nothing to do for ids
      Unknown(path, "post-processor", type, kSupported);
    }
  }

  void Model(const json& m, TokenizerSpec& spec) const {
    const std::string type = Type(m, "model", "BPE");
    if (type != "BPE") Unknown("model", "model", type, "BPE");
    spec.model = ModelKind::kBpe;

    const json& vocab = Require(m, "vocab", "model");
    ExpectObject(vocab, "model.vocab");
    const int64_t n = static_cast<int64_t>(vocab.size());
    spec.vocab.assign(static_cast<size_t>(n), std::string());
    std::vector<bool> used(static_cast<size_t>(n), false);
    std::vector<const std::string*> owner(static_cast<size_t>(n), nullptr);
    for (const auto& [tok, idv] : vocab.items()) {
      const std::string p = "model.vocab[" + Quote(tok) + "]";
      if (!idv.is_number_integer())
        Fail(p, "is a JSON {} ({}), expected an integer id", idv.type_name(), Brief(idv));
      if (idv.is_number_unsigned() ? idv.get<uint64_t>() >= uint64_t(n)
                                   : idv.get<int64_t>() < 0 || idv.get<int64_t>() >= n)
        Fail(p, "id {} is out of range: the vocab has {} tokens, so ids are 0..{}", Brief(idv), n,
             n - 1);
      const auto id = static_cast<size_t>(idv.get<int64_t>());
      if (used[id]) Fail(p, "id {} is also the id of {}", id, Quote(*owner[id]));
      used[id] = true;
      owner[id] = &tok;
      if (!IsValidUtf8(tok)) Fail(p, "token is not valid UTF-8");
      spec.vocab[id] = tok;
    }

    const json& merges = Require(m, "merges", "model");
    ExpectArray(merges, "model.merges");
    spec.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& e = merges[i];
      const std::string p = fmt::format("model.merges[{}]", i);
      if (e.is_string()) {  // legacy "a b"
        const std::string& s = e.get_ref<const std::string&>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          Fail(p, "is {}, expected two tokens separated by one space", Brief(e));
        spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        spec.merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        Fail(p, "is {}, expected \"a b\" or [\"a\", \"b\"]", Brief(e));
      }
    }

    if (const json* d = Find(m, "dropout")) {
      if (!d->is_number() || d->get<double>() != 0.0)
        Fail("model.dropout",
             "is {}; BPE dropout is not supported (encoding must be deterministic)", Brief(*d));
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (const json* v = Find(m, key))
        if (!String(*v, std::string("model.") + key).empty())
          Fail(std::string("model.") + key, "is {}; only null or \"\" is supported", Brief(*v));
    if (const json* u = Find(m, "unk_token")) spec.unk_token = String(*u, "model.unk_token");
    spec.fuse_unk = Bool(m, "fuse_unk", "model", false);
    spec.byte_fallback = Bool(m, "byte_fallback", "model", false);
    spec.ignore_merges = Bool(m, "ignore_merges", "model", false);
  }

  void AddedTokens(const json& list, TokenizerSpec& spec) const {
    ExpectArray(list, "added_tokens");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string p = fmt::format("added_tokens[{}]", i);
      const json& t = list[i];
      ExpectObject(t, p);
      AddedToken a;
      a.id = static_cast<int32_t>(
          Int(Require(t, "id", p), p + ".id", 0, std::numeric_limits<int32_t>::max() - 1));
      a.content = String(t, "content", p);
      a.special = Bool(t, "special", p, false);
      a.single_word = Bool(t, "single_word", p, false);
      a.lstrip = Bool(t, "lstrip", p, false);
      a.rstrip = Bool(t, "rstrip", p, false);
      a.normalized = Bool(t, "normalized", p, !a.special);
      spec.added_tokens.push_back(std::move(a));
    }
  }

 private:
  std::string_view origin_;
};

// Guesses BOS/EOS: the template's single prefix/suffix token, else well-known names.
void GuessBosEos(TokenizerSpec& spec) {
  auto find = [&](std::initializer_list<std::string_view> names) -> std::optional<int32_t> {
    for (std::string_view name : names)
      for (const AddedToken& t : spec.added_tokens)
        if (t.special && t.content == name) return t.id;
    return std::nullopt;
  };
  if (spec.prefix_ids.size() == 1)
    spec.bos_id = spec.prefix_ids[0];
  else
    spec.bos_id =
        find({"<s>", "<|begin_of_text|>", "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<bos>"});
  if (spec.suffix_ids.size() == 1)
    spec.eos_id = spec.suffix_ids[0];
  else
    spec.eos_id = find({"</s>", "<|end_of_text|>", "<|endoftext|>",
                        "<\uff5cend\u2581of\u2581sentence\uff5c>", "<eos>"});
}

}  // namespace

TokenizerSpec ParseHfTokenizerJson(std::string_view text, std::string_view origin) {
  const Parser P(origin);
  // nlohmann keeps the last of duplicate keys; a tokenizer.json with two entries for one vocab
  // token (or field) is malformed, so duplicates are caught while parsing, with their path.
  std::vector<std::set<std::string>> seen;
  std::vector<std::string> path;
  std::string duplicate;
  const json::parser_callback_t on_event = [&](int depth, json::parse_event_t ev, json& parsed) {
    const auto d = static_cast<size_t>(depth);
    if (ev == json::parse_event_t::object_start || ev == json::parse_event_t::array_start) {
      if (seen.size() < d + 2) seen.resize(d + 2);
      if (path.size() < d + 2) path.resize(d + 2);
      seen[d + 1].clear();
      path[d + 1] = ev == json::parse_event_t::array_start ? "[]" : "";
    } else if (ev == json::parse_event_t::key && duplicate.empty() && d < seen.size()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen[d].insert(k).second) {
        std::string where;
        for (size_t i = 1; i < d; ++i)
          where += (path[i] == "[]" || where.empty() ? "" : ".") + path[i];
        duplicate =
            fmt::format("{}: key {} appears twice", where.empty() ? "(root)" : where, Quote(k));
      }
      path[d] = k;
    }
    return true;
  };
  json root;
  try {
    root = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    Fail(kTag, "{}: not valid JSON: {}", origin, e.what());
  }
  if (!duplicate.empty()) Fail(kTag, "{}: {}", origin, duplicate);
  if (!root.is_object())
    Fail(kTag, "{}: top level is a JSON {}, expected an object", origin, root.type_name());

  TokenizerSpec spec;
  P.Model(P.Require(root, "model", "(root)"), spec);
  if (const json* a = P.Find(root, "added_tokens")) P.AddedTokens(*a, spec);
  if (const json* n = P.Find(root, "normalizer")) P.Normalizer(*n, "normalizer", spec.normalizer);
  if (const json* p = P.Find(root, "pre_tokenizer"))
    P.PreTokenizer(*p, "pre_tokenizer", spec.pre_tokenizer);
  if (const json* d = P.Find(root, "decoder")) {
    spec.decoder.emplace();
    P.Decoder(*d, "decoder", *spec.decoder);
  } else {
    spec.decoder.reset();
  }
  bool have_template = false;
  if (const json* pp = P.Find(root, "post_processor"))
    P.PostProcessor(*pp, "post_processor", spec, have_template);
  GuessBosEos(spec);
  return spec;
}

void ValidateSpec(const TokenizerSpec& spec, std::string_view origin) {
  auto fail = [&](std::string_view field, const std::string& msg) {
    Fail(kTag, "{}: {}: {}", origin, field, msg);
  };
  if (spec.model == ModelKind::kBytes) {
    if (spec.vocab.size() != 256) fail("model.vocab", "a bytes model has exactly 256 tokens");
  } else if (spec.vocab.empty()) {
    fail("model.vocab", "is empty");
  }
  if (spec.vocab.size() > size_t{std::numeric_limits<int32_t>::max()})
    fail("model.vocab", fmt::format("has {} tokens, more than int32 ids allow", spec.vocab.size()));
  StringMap<int32_t> index;
  index.reserve(spec.vocab.size());
  for (size_t i = 0; i < spec.vocab.size(); ++i)
    index.emplace(spec.vocab[i], static_cast<int32_t>(i));

  if (!spec.merges.empty() && !spec.scores.empty())
    fail("model", "has both merges and scores; a BPE model uses one of them");
  if (!spec.scores.empty() && spec.scores.size() != spec.vocab.size())
    fail("model.scores",
         fmt::format("has {} entries for {} vocab tokens", spec.scores.size(), spec.vocab.size()));
  for (size_t i = 0; i < spec.merges.size(); ++i) {
    const auto& [a, b] = spec.merges[i];
    const std::string p = fmt::format("model.merges[{}]", i);
    for (const std::string* t : {&a, &b})
      if (!index.count(*t))
        fail(p, fmt::format("{} {}: {} is not in model.vocab", Quote(a), Quote(b), Quote(*t)));
    if (!index.count(a + b))
      fail(p, fmt::format("{} {}: the merged token {} is not in model.vocab", Quote(a), Quote(b),
                          Quote(a + b)));
  }
  if (spec.unk_token && !index.count(*spec.unk_token))
    fail("model.unk_token", fmt::format("{} is not in model.vocab", Quote(*spec.unk_token)));

  std::unordered_map<int32_t, size_t> added_ids;
  std::unordered_set<std::string> added_contents;
  int64_t size = static_cast<int64_t>(spec.vocab.size());
  for (size_t i = 0; i < spec.added_tokens.size(); ++i) {
    const AddedToken& t = spec.added_tokens[i];
    const std::string p = fmt::format("added_tokens[{}]", i);
    if (t.id < 0 || t.id == std::numeric_limits<int32_t>::max())
      fail(p + ".id", fmt::format("{} is out of range", t.id));
    if (t.content.empty()) fail(p + ".content", "is empty");
    if (!IsValidUtf8(t.content)) fail(p + ".content", "is not valid UTF-8");
    if (auto [it, fresh] = added_ids.emplace(t.id, i); !fresh)
      fail(p + ".id", fmt::format("{} is also the id of added_tokens[{}]", t.id, it->second));
    if (!added_contents.insert(t.content).second)
      fail(p + ".content", fmt::format("{} appears twice in added_tokens", Quote(t.content)));
    if (static_cast<size_t>(t.id) < spec.vocab.size() &&
        spec.vocab[static_cast<size_t>(t.id)] != t.content)
      fail(p, fmt::format("id {} is {} in model.vocab, not {}", t.id,
                          Quote(spec.vocab[static_cast<size_t>(t.id)]), Quote(t.content)));
    if (auto it = index.find(t.content); it != index.end() && it->second != t.id)
      fail(p,
           fmt::format("{} is id {} in model.vocab, not {}", Quote(t.content), it->second, t.id));
    size = std::max<int64_t>(size, int64_t{t.id} + 1);
  }
  // Steps from any source: the parser refuses these already, a hand-built spec may not.
  for (size_t i = 0; i < spec.normalizer.size(); ++i)
    if (spec.normalizer[i].kind == NormalizerStep::Kind::kReplace &&
        spec.normalizer[i].pattern.empty())
      fail(fmt::format("normalizer[{}]", i), "Replace has an empty pattern");
  for (size_t i = 0; i < spec.pre_tokenizer.size(); ++i) {
    const PreTokenizerStep& s = spec.pre_tokenizer[i];
    if (s.kind == PreTokenizerStep::Kind::kSplit && s.pattern.empty())
      fail(fmt::format("pre_tokenizer[{}]", i), "Split has an empty pattern");
    if (s.kind == PreTokenizerStep::Kind::kMetaspace && s.replacement.empty())
      fail(fmt::format("pre_tokenizer[{}]", i), "Metaspace has an empty replacement");
  }
  if (spec.decoder) {
    for (size_t i = 0; i < spec.decoder->size(); ++i) {
      const DecoderStep& s = (*spec.decoder)[i];
      if ((s.kind == DecoderStep::Kind::kReplace && s.pattern.empty()) ||
          (s.kind == DecoderStep::Kind::kStrip &&
           (s.content.empty() || s.start < 0 || s.stop < 0)) ||
          (s.kind == DecoderStep::Kind::kMetaspace && s.replacement.empty()))
        fail(fmt::format("decoder[{}]", i),
             "has an empty pattern, content or replacement, or a negative count");
    }
  }
  auto known = [&](int32_t id) {
    return (id >= 0 && static_cast<size_t>(id) < spec.vocab.size()) || added_ids.count(id);
  };
  for (const auto* ids : {&spec.prefix_ids, &spec.suffix_ids})
    for (int32_t id : *ids)
      if (!known(id))
        fail("post_processor",
             fmt::format("template token id {} is not in the vocabulary (size {})", id, size));
  if (spec.bos_id && !known(*spec.bos_id))
    fail("bos_id", fmt::format("{} is not in the vocabulary", *spec.bos_id));
  if (spec.eos_id && !known(*spec.eos_id))
    fail("eos_id", fmt::format("{} is not in the vocabulary", *spec.eos_id));
}

}  // namespace moe::tokenizer
