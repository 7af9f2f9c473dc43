#include "moe/tokenizer/gguf_vocab.h"

#include <map>
#include <string_view>
#include <vector>

#include "moe/core/error.h"

namespace moe::tokenizer {

namespace {
constexpr std::string_view kTag = "tokenizer";
using io::GgufValue;

enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUser = 4,
  kUnused = 5,
  kByte = 6
};

// The regexes of the Hugging Face tokenizer.json files of these families.
const std::string kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kDeepseekV3Regex =
    std::string(R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^)") + "\r\n" +
    R"(\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[)" + "\r\n" + R"(]*|\s*[)" + "\r\n" +
    R"(]+|\s+(?!\S)|\s+)";

struct Family {
  std::string_view pre;  // tokenizer.ggml.pre
  bool nfc = false;
  std::vector<std::string> splits;  // Split(Isolated) patterns before a regex-free ByteLevel
  bool ignore_merges = false;
};

const std::vector<Family>& Families() {
  static const std::vector<Family> f = {
      {"default", false, {}, false},
      {"gpt2", false, {}, false},
      {"olmo", true, {}, false},
      {"llama-bpe", false, {kLlama3Regex}, true},
      {"qwen2", true, {kQwen2Regex}, false},
      {"deepseek-v3",
       false,
       {R"(\p{N}{1,3})", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", kDeepseekV3Regex},
       false},
  };
  return f;
}

void BuildPipeline(const Family& fam, TokenizerSpec& s) {
  if (fam.nfc) s.normalizer.push_back({NormalizerStep::Kind::kNfc, "", false, ""});
  for (const std::string& p : fam.splits) {
    PreTokenizerStep st;
    st.kind = PreTokenizerStep::Kind::kSplit;
    st.pattern = p;
    st.pattern_is_regex = true;
    st.behavior = SplitBehavior::kIsolated;
    s.pre_tokenizer.push_back(st);
  }
  PreTokenizerStep bl;
  bl.kind = PreTokenizerStep::Kind::kByteLevel;
  bl.add_prefix_space = false;
  bl.use_regex = fam.splits.empty();
  s.pre_tokenizer.push_back(bl);
  s.ignore_merges = fam.ignore_merges;
  DecoderStep d;
  d.kind = DecoderStep::Kind::kByteLevel;
  s.decoder = std::vector<DecoderStep>{d};
}

// Llama 2 / Mixtral: "▁" prefix and spaces in the normalizer, byte fallback in the decoder.
void BuildSentencePiece(bool add_space_prefix, TokenizerSpec& s) {
  if (add_space_prefix)
    s.normalizer.push_back({NormalizerStep::Kind::kPrepend, "", false, "\u2581"});
  s.normalizer.push_back({NormalizerStep::Kind::kReplace, " ", false, "\u2581"});
  std::vector<DecoderStep> d(4);
  d[0].kind = DecoderStep::Kind::kReplace;
  d[0].pattern = std::string("\u2581");
  d[0].content = std::string(" ");
  d[1].kind = DecoderStep::Kind::kByteFallback;
  d[2].kind = DecoderStep::Kind::kFuse;
  d[3].kind = DecoderStep::Kind::kStrip;
  d[3].content = std::string(" ");
  d[3].start = 1;
  d[3].stop = 0;
  s.decoder = d;
  s.byte_fallback = true;
}

bool SameNormalizer(const std::vector<NormalizerStep>& a, const std::vector<NormalizerStep>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].kind != b[i].kind || a[i].pattern != b[i].pattern ||
        a[i].pattern_is_regex != b[i].pattern_is_regex || a[i].content != b[i].content)
      return false;
  return true;
}

bool SamePre(const std::vector<PreTokenizerStep>& a, const std::vector<PreTokenizerStep>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const PreTokenizerStep &x = a[i], &y = b[i];
    if (x.kind != y.kind) return false;
    if (x.kind == PreTokenizerStep::Kind::kSplit &&
        (x.pattern != y.pattern || x.pattern_is_regex != y.pattern_is_regex ||
         x.behavior != y.behavior || x.invert != y.invert))
      return false;
    if (x.kind == PreTokenizerStep::Kind::kByteLevel &&
        (x.add_prefix_space != y.add_prefix_space || x.use_regex != y.use_regex))
      return false;
    if (x.kind != PreTokenizerStep::Kind::kSplit && x.kind != PreTokenizerStep::Kind::kByteLevel)
      return false;
  }
  return true;
}

bool IsByteToken(const std::string& t) {
  return t.size() == 6 && t.starts_with("<0x") && t.back() == '>';
}

}  // namespace

std::string GgufPreTokenizerNames() {
  std::string out;
  for (const Family& f : Families()) out += (out.empty() ? "" : ", ") + std::string(f.pre);
  return out;
}

std::optional<TokenizerSpec> TokenizerSpecFromGguf(const io::GgufFile& f) {
  if (!f.Has("tokenizer.ggml.model")) return std::nullopt;
  const std::string& model = f.GetString("tokenizer.ggml.model");
  const std::string origin = f.name();
  TokenizerSpec s;
  s.vocab = f.GetStrings("tokenizer.ggml.tokens");
  std::vector<int64_t> types;
  if (f.Has("tokenizer.ggml.token_type")) {
    types = f.GetInts("tokenizer.ggml.token_type");
    MOE_CHECK(types.size() == s.vocab.size(), kTag,
              "{}: tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {}", origin,
              types.size(), s.vocab.size());
  }
  bool add_bos = false;
  if (model == "gpt2") {
    const std::string pre = f.GetString("tokenizer.ggml.pre", "default");
    const Family* fam = nullptr;
    for (const Family& x : Families())
      if (x.pre == pre) fam = &x;
    MOE_CHECK(fam != nullptr, kTag,
              "{}: tokenizer.ggml.pre = '{}' is not supported (supported: {})", origin, pre,
              GgufPreTokenizerNames());
    for (const std::string& m : f.GetStrings("tokenizer.ggml.merges")) {
      const size_t sp = m.find(' ', 1);
      MOE_CHECK(sp != std::string::npos, kTag, "{}: tokenizer.ggml.merges entry '{}' has no space",
                origin, m);
      s.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
    BuildPipeline(*fam, s);
  } else if (model == "llama") {
    s.scores = f.GetF32s("tokenizer.ggml.scores");
    MOE_CHECK(s.scores.size() == s.vocab.size(), kTag,
              "{}: tokenizer.ggml.scores has {} entries, tokenizer.ggml.tokens {}", origin,
              s.scores.size(), s.vocab.size());
    BuildSentencePiece(f.GetBool("tokenizer.ggml.add_space_prefix", true), s);
    add_bos = true;
  } else {
    Fail(kTag, "{}: tokenizer.ggml.model = '{}' is not supported (supported: gpt2, llama)", origin,
         model);
  }
  for (size_t i = 0; i < types.size(); ++i) {
    const int32_t id = static_cast<int32_t>(i);
    if (types[i] == kUnknown) s.unk_token = s.vocab[i];
    if (types[i] == kControl || types[i] == kUser) {
      AddedToken a;
      a.id = id;
      a.content = s.vocab[i];
      a.special = types[i] == kControl;
      a.normalized = !a.special;
      s.added_tokens.push_back(a);
    }
  }
  if (f.Has("tokenizer.ggml.bos_token_id"))
    s.bos_id = static_cast<int32_t>(f.GetI64("tokenizer.ggml.bos_token_id"));
  if (f.Has("tokenizer.ggml.eos_token_id"))
    s.eos_id = static_cast<int32_t>(f.GetI64("tokenizer.ggml.eos_token_id"));
  if (f.GetBool("tokenizer.ggml.add_bos_token", add_bos) && s.bos_id) s.prefix_ids = {*s.bos_id};
  if (f.GetBool("tokenizer.ggml.add_eos_token", false) && s.eos_id) s.suffix_ids = {*s.eos_id};
  return s;
}

bool AddTokenizerToGguf(const TokenizerSpec& spec, int32_t model_bos, int32_t model_eos,
                        io::GgufWriter& w, std::string* why) {
  auto no = [&](std::string m) {
    if (why != nullptr) *why = std::move(m);
    return false;
  };
  if (spec.model != ModelKind::kBpe) return no("not a BPE tokenizer");
  // Which family?
  std::string model, pre;
  for (const Family& fam : Families()) {
    TokenizerSpec probe;
    BuildPipeline(fam, probe);
    if (SameNormalizer(probe.normalizer, spec.normalizer) &&
        SamePre(probe.pre_tokenizer, spec.pre_tokenizer) &&
        probe.ignore_merges == spec.ignore_merges && !spec.byte_fallback) {
      model = "gpt2";
      pre = std::string(fam.pre);
      break;
    }
  }
  bool space_prefix = true;
  if (model.empty() && spec.byte_fallback && spec.pre_tokenizer.empty()) {
    for (bool sp : {true, false}) {
      TokenizerSpec probe;
      BuildSentencePiece(sp, probe);
      if (SameNormalizer(probe.normalizer, spec.normalizer)) {
        model = "llama";
        space_prefix = sp;
      }
    }
  }
  if (model.empty())
    return no(fmt::format(
        "its normalizer / pre-tokenizer is not one GGUF can name (byte-level BPE families: {}; "
        "SentencePiece with a '\u2581' normalizer and byte fallback)",
        GgufPreTokenizerNames()));
  if (!spec.suffix_ids.empty() &&
      !(spec.suffix_ids.size() == 1 && spec.eos_id && spec.suffix_ids[0] == *spec.eos_id))
    return no("its post-processor appends tokens other than EOS");
  if (!spec.prefix_ids.empty() &&
      !(spec.prefix_ids.size() == 1 && spec.bos_id && spec.prefix_ids[0] == *spec.bos_id))
    return no("its post-processor prepends tokens other than BOS");

  // Dense token list: vocab, then added tokens (gaps filled with unused placeholders).
  std::vector<std::string> tokens = spec.vocab;
  std::vector<int32_t> types(tokens.size(), kNormal);
  for (size_t i = 0; i < tokens.size(); ++i)
    if (model == "llama" && IsByteToken(tokens[i])) types[i] = kByte;
  if (spec.unk_token)
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] == *spec.unk_token) types[i] = kUnknown;
  for (const AddedToken& a : spec.added_tokens) {
    const auto id = static_cast<size_t>(a.id);
    while (tokens.size() <= id) {
      tokens.push_back(fmt::format("[PAD{}]", tokens.size()));
      types.push_back(kUnused);
    }
    tokens[id] = a.content;
    types[id] = a.special ? kControl : kUser;
  }
  w.AddMetadata("tokenizer.ggml.model", GgufValue::String(model));
  if (model == "gpt2") w.AddMetadata("tokenizer.ggml.pre", GgufValue::String(pre));
  if (model == "llama") {
    std::vector<float> scores(tokens.size(), 0.0f);
    if (!spec.scores.empty()) {
      for (size_t i = 0; i < spec.scores.size(); ++i) scores[i] = spec.scores[i];
    } else {
      // Merge rank -> score of the token it creates (earlier merges score higher).
      std::map<std::string, size_t> index;
      for (size_t i = 0; i < tokens.size(); ++i) index.emplace(tokens[i], i);
      for (size_t r = spec.merges.size(); r-- > 0;) {
        const auto it = index.find(spec.merges[r].first + spec.merges[r].second);
        if (it != index.end()) scores[it->second] = -static_cast<float>(r);
      }
    }
    w.AddMetadata("tokenizer.ggml.scores", GgufValue::Array(scores));
    if (!space_prefix) w.AddMetadata("tokenizer.ggml.add_space_prefix", GgufValue::Bool(false));
  }
  w.AddMetadata("tokenizer.ggml.tokens", GgufValue::Strings(tokens));
  w.AddMetadata("tokenizer.ggml.token_type", GgufValue::Array(types));
  if (model == "gpt2") {
    std::vector<std::string> merges;
    merges.reserve(spec.merges.size());
    for (const auto& [a, b] : spec.merges) merges.push_back(a + " " + b);
    w.AddMetadata("tokenizer.ggml.merges", GgufValue::Strings(merges));
  }
  if (model_bos < 0 && spec.bos_id)
    w.AddMetadata("tokenizer.ggml.bos_token_id",
                  GgufValue::U32(static_cast<uint32_t>(*spec.bos_id)));
  if (model_eos < 0 && spec.eos_id)
    w.AddMetadata("tokenizer.ggml.eos_token_id",
                  GgufValue::U32(static_cast<uint32_t>(*spec.eos_id)));
  w.AddMetadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(!spec.prefix_ids.empty()));
  w.AddMetadata("tokenizer.ggml.add_eos_token", GgufValue::Bool(!spec.suffix_ids.empty()));
  return true;
}

}  // namespace moe::tokenizer
