#include "moe/tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "moe/core/error.h"
#include "moe/tokenizer/hf_json.h"
#include "moe/tokenizer/unicode.h"
#include "moe/testing/compare.h"

namespace moe::tokenizer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Published families' pipelines, and two fixtures for the remaining options (see the generator).
const char* const kFamilies[] = {"gpt2",           "qwen2",         "llama3",  "olmoe",
                                 "deepseek_v3",    "deepseek_v2",   "mixtral", "mistral",
                                 "misc_bytelevel", "misc_metaspace"};

std::string FamilyDir(const std::string& family) {
  return std::string(MOE_TEST_DATA_DIR) + "/tokenizers/" + family;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json Cases(const std::string& family) {
  return json::parse(ReadText(FamilyDir(family) + "/cases.json"));
}

Tokenizer Load(const std::string& family) {
  return Tokenizer::FromFile(FamilyDir(family) + "/tokenizer.json");
}

using moe::testing::ErrorOf;

std::vector<int32_t> Ids(const json& j) { return j.get<std::vector<int32_t>>(); }

// Byte-level BPE with a lossless pipeline (up to NFC).
bool IsByteLevel(const std::string& family) {
  return family != "mixtral" && family != "mistral" && family.rfind("misc_", 0) != 0;
}

// Every Push (and the final Flush) concatenated.
std::string Streamed(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  StreamDecoder sd(tok, skip_special);
  std::string out;
  for (int32_t id : ids) out += sd.Push(id);
  return out + sd.Flush();
}

// ------------------------------------------------------------------------------------------------
// Reference fixtures (scripts/gen_tokenizer_fixtures.mjs, Hugging Face tokenizers).

class FamilyTest : public ::testing::TestWithParam<const char*> {};

TEST_P(FamilyTest, MatchesHuggingFace) {
  const std::string family = GetParam();
  const Tokenizer tok = Load(family);
  const json doc = Cases(family);
  EXPECT_EQ(tok.vocab_size(), doc["vocab_size"].get<int32_t>());
  ASSERT_GE(doc["cases"].size(), 30u);
  for (const json& c : doc["cases"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(family + " text: " + json(text).dump() + " tokens: " + c["tokens"].dump());
    EXPECT_EQ(tok.Encode(text, false), Ids(c["ids"]));
    const auto ids = Ids(c["ids_with_special"]);
    EXPECT_EQ(tok.Encode(text, true), ids);
    EXPECT_EQ(tok.Decode(ids, false), c["decoded"].get<std::string>());
    EXPECT_EQ(tok.Decode(ids, true), c["decoded_skip_special"].get<std::string>());
    // Token strings agree too (Hugging Face reports an lstrip/rstrip added token with the
    // whitespace it absorbed).
    const auto tokens = c["tokens"].get<std::vector<std::string>>();
    ASSERT_EQ(tokens.size(), ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      std::string want = tokens[i];
      for (const AddedToken& t : tok.added_tokens())
        if (t.id == ids[i] && (t.lstrip || t.rstrip)) want = t.content;
      EXPECT_EQ(tok.IdToToken(ids[i]).value_or("<none>"), want);
      EXPECT_EQ(tok.TokenToId(want), ids[i]);
    }
  }
}

TEST_P(FamilyTest, RoundTripsAndStreams) {
  const std::string family = GetParam();
  const Tokenizer tok = Load(family);
  const bool nfc = family == "qwen2" || family == "olmoe";
  const json doc = Cases(family);
  for (const json& c : doc["cases"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(family + " text: " + json(text).dump());
    const auto ids = tok.Encode(text, false);
    // Byte-level BPE is lossless (up to the NFC normalizer, and OLMoE's lstrip/rstrip <mask>
    // token, which absorbs whitespace); SentencePiece style is checked against the reference
    // decodes above.
    if (IsByteLevel(family) && text.find("<mask>") == std::string::npos) {
      EXPECT_EQ(tok.Decode(ids, false), nfc ? Nfc(text) : text);
    }
    const auto with_special = Ids(c["ids_with_special"]);
    EXPECT_EQ(Streamed(tok, with_special, false), c["decoded"].get<std::string>());
    EXPECT_EQ(Streamed(tok, with_special, true), c["decoded_skip_special"].get<std::string>());
  }
}

TEST_P(FamilyTest, InvalidUtf8IsReplacedNotFatal) {
  const Tokenizer tok = Load(GetParam());
  const std::string fffd = "\xEF\xBF\xBD";
  // (input, the valid text it encodes as): maximal ill-formed subparts become one U+FFFD each.
  const std::pair<std::string, std::string> cases[] = {
      {"a\xff"
       "b",
       "a" + fffd + "b"},
      {"\xc0\xaf", fffd + fffd},                        // overlong '/'
      {"\xed\xa0\x80 x", fffd + fffd + fffd + " x"},    // surrogate
      {"end \xe4\xb8", "end " + fffd},                  // truncated 3-byte character
      {"\xf0\x9f\x98", fffd},                           // truncated emoji
      {"\xf4\x90\x80\x80", fffd + fffd + fffd + fffd},  // above U+10FFFF
      {"x\x80\x80y", "x" + fffd + fffd + "y"},          // stray continuation bytes
      {std::string("nul\0byte", 8), std::string("nul\0byte", 8)},
  };
  for (const auto& [bad, good] : cases) {
    SCOPED_TRACE(json(good).dump());
    const auto ids = tok.Encode(bad, true);
    EXPECT_EQ(ids, tok.Encode(good, true));
    EXPECT_TRUE(IsValidUtf8(tok.Decode(ids, false)));
  }
}

TEST_P(FamilyTest, LongRunsAreNotQuadratic) {
  // Quadratic merging or regex scanning would take minutes at these sizes.
  const Tokenizer tok = Load(GetParam());
  const std::string spaces(100'000, ' ');
  const std::string letters(1'000'000, 'a');
  const std::string mixed = std::string(50'000, ' ') + "x" + std::string(50'000, '\n') + "y";
  for (const std::string* s : {&spaces, &letters, &mixed}) {
    const auto ids = tok.Encode(*s, false);
    EXPECT_GT(ids.size(), 0u);
    EXPECT_LT(ids.size(), s->size() + 2);
    if (IsByteLevel(GetParam())) {
      EXPECT_EQ(tok.Decode(ids, false), *s);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyTest, ::testing::ValuesIn(kFamilies),
                         [](const auto& info) { return std::string(info.param); });

// ------------------------------------------------------------------------------------------------

TEST(TokenizerTest, SpecialTokensAndIds) {
  const Tokenizer qwen = Load("qwen2");
  const auto im_start = qwen.SpecialTokenId("<|im_start|>");
  ASSERT_TRUE(im_start.has_value());
  EXPECT_TRUE(qwen.IsSpecial(*im_start));
  EXPECT_EQ(qwen.TokenToId("<|im_start|>"), im_start);
  EXPECT_EQ(qwen.IdToToken(*im_start), "<|im_start|>");
  EXPECT_FALSE(qwen.bos_id().has_value());
  EXPECT_EQ(qwen.eos_id(), qwen.SpecialTokenId("<|endoftext|>"));
  EXPECT_FALSE(qwen.SpecialTokenId("Hello").has_value());
  EXPECT_FALSE(qwen.IdToToken(-1).has_value());
  EXPECT_FALSE(qwen.IdToToken(qwen.vocab_size()).has_value());
  EXPECT_EQ(qwen.Encode("<|im_start|>", false), std::vector<int32_t>{*im_start});
  // Ids with no token are skipped, as Hugging Face does.
  EXPECT_EQ(qwen.Decode(std::vector<int32_t>{-5, qwen.vocab_size() + 3}, false), "");

  const Tokenizer mixtral = Load("mixtral");
  EXPECT_EQ(mixtral.bos_id(), 1);
  EXPECT_EQ(mixtral.eos_id(), 2);
  EXPECT_EQ(mixtral.Encode("", true), std::vector<int32_t>{1});
  const Tokenizer llama3 = Load("llama3");
  EXPECT_EQ(llama3.bos_id(), llama3.SpecialTokenId("<|begin_of_text|>"));
  EXPECT_EQ(llama3.eos_id(), llama3.SpecialTokenId("<|end_of_text|>"));
  const Tokenizer ds = Load("deepseek_v3");
  EXPECT_EQ(ds.bos_id(), ds.SpecialTokenId("<\uff5cbegin\u2581of\u2581sentence\uff5c>"));
  EXPECT_EQ(ds.eos_id(), ds.SpecialTokenId("<\uff5cend\u2581of\u2581sentence\uff5c>"));
}

TEST(TokenizerTest, StreamDecoderHoldsSplitCharacters) {
  // SentencePiece style: a character outside the vocabulary arrives as 4 byte-fallback tokens.
  const Tokenizer sp = Load("mixtral");
  const auto ids = sp.Encode("hi \xF0\x9D\x84\x9E!", false);  // U+1D11E
  StreamDecoder sd(sp);
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(sd.Push(id));
  const size_t n = out.size();
  ASSERT_GE(n, 6u);
  EXPECT_EQ(out[n - 5] + out[n - 4] + out[n - 3], "");  // three partial bytes held back
  EXPECT_EQ(out[n - 2], "\xF0\x9D\x84\x9E");
  EXPECT_EQ(out[n - 1], "!");
  std::string all;
  for (const auto& s : out) all += s;
  EXPECT_EQ(all, "hi \xF0\x9D\x84\x9E!");
  EXPECT_EQ(sd.Flush(), "");

  // Byte-level: an emoji split over byte tokens; spaces between words survive streaming.
  const Tokenizer bl = Load("gpt2");
  const std::string text = "a \xF0\x9F\x98\x80 b \xE4\xB8\xAD";
  std::string streamed;
  StreamDecoder sd2(bl);
  for (int32_t id : bl.Encode(text, false)) {
    const std::string piece = sd2.Push(id);
    EXPECT_TRUE(IsValidUtf8(piece)) << json(piece).dump();
    streamed += piece;
  }
  EXPECT_EQ(streamed + sd2.Flush(), text);

  // A stream cut inside a character: Flush returns the rest as U+FFFD.
  StreamDecoder sd3(sp);
  std::string partial;
  for (int32_t id : sp.Encode("x\xE4\xB8\xAD", false)) {
    if (sp.IdToToken(id) == "<0xAD>") break;
    partial += sd3.Push(id);
  }
  EXPECT_EQ(partial, "x");
  EXPECT_EQ(sd3.Flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");

  // Tokens that add no text (skipped specials; a decoder that folds x+ into X) do not grow the
  // decoding window: quadratic work would take minutes here.
  const Tokenizer qwen = Load("qwen2");
  std::vector<int32_t> specials(50'000, *qwen.SpecialTokenId("<|im_start|>"));
  specials.push_back(*qwen.TokenToId("a"));
  EXPECT_EQ(Streamed(qwen, specials, true), "a");
  const Tokenizer misc = Load("misc_bytelevel");
  const auto xs = misc.Encode(std::string(20'000, 'x'), false);
  EXPECT_EQ(Streamed(misc, xs, false), misc.Decode(xs, false));
}

TEST(TokenizerTest, BytesTokenizer) {
  const Tokenizer plain = Tokenizer::Bytes();
  EXPECT_EQ(plain.vocab_size(), 256);
  EXPECT_FALSE(plain.bos_id().has_value());
  const std::string bytes("a\xff\0<s>\xe4", 7);
  const auto ids = plain.Encode(bytes, true);
  ASSERT_EQ(ids.size(), 7u);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], static_cast<unsigned char>(bytes[i]));
  EXPECT_EQ(plain.Decode(plain.Encode("h\xC3\xA9llo", false), false), "h\xC3\xA9llo");
  EXPECT_EQ(plain.IdToToken(65), "<0x41>");
  EXPECT_EQ(plain.TokenToId("<0x41>"), 65);

  const Tokenizer both = Tokenizer::Bytes(true, true);
  EXPECT_EQ(both.vocab_size(), 258);
  EXPECT_EQ(both.bos_id(), 256);
  EXPECT_EQ(both.eos_id(), 257);
  EXPECT_EQ(both.Encode("<s>", true), (std::vector<int32_t>{256, '<', 's', '>', 257}));
  EXPECT_EQ(both.Decode(std::vector<int32_t>{256, 'h', 'i', 257}, false), "<s>hi</s>");
  EXPECT_EQ(both.Decode(std::vector<int32_t>{256, 'h', 'i', 257}, true), "hi");
  EXPECT_EQ(Tokenizer::Bytes(false, true).eos_id(), 256);
}

// SentencePiece/GGUF-style merging by score: the highest-scoring pair in the vocab merges first.
TEST(TokenizerTest, MergesByScore) {
  auto make = [](float ab, float bc) {
    TokenizerSpec s;
    s.vocab = {"a", "b", "c", "ab", "bc", "abc"};
    s.scores = {0, 0, 0, ab, bc, 5};
    return Tokenizer::FromSpec(s);
  };
  // ab first, then ab+c = abc (in vocab).
  EXPECT_EQ(make(3, 2).Encode("abc", false), std::vector<int32_t>{5});
  // bc first, then a+bc = abc too; "abca" -> abc a.
  EXPECT_EQ(make(2, 3).Encode("abca", false), (std::vector<int32_t>{5, 0}));
  EXPECT_EQ(make(2, 3).Encode("bcb", false), (std::vector<int32_t>{4, 1}));
  EXPECT_EQ(make(3, 2).Encode("bab", false), (std::vector<int32_t>{1, 3}));

  // Unknown characters: byte fallback when the byte tokens exist, else unk (fused).
  TokenizerSpec s;
  s.vocab = {"<unk>", "a", "b", "ab"};
  s.scores = {0, 0, 0, 1};
  s.unk_token = "<unk>";
  s.fuse_unk = true;
  EXPECT_EQ(Tokenizer::FromSpec(s).Encode("ab\xC3\xA9\xC3\xA9"
                                          "a",
                                          false),
            (std::vector<int32_t>{3, 0, 1}));
  for (int b = 0; b < 256; ++b) {
    s.vocab.push_back(fmt::format("<0x{:02X}>", b));
    s.scores.push_back(0);
  }
  s.byte_fallback = true;
  EXPECT_EQ(Tokenizer::FromSpec(s).Encode("\xC3\xA9"
                                          "ab",
                                          false),
            (std::vector<int32_t>{4 + 0xC3, 4 + 0xA9, 3}));
}

TEST(TokenizerTest, AddedTokenFlags) {
  // single_word, lstrip/rstrip, and a normalized added token (the fixtures cover them against
  // the reference too: gpt2 <sw>, olmoe <mask> and |||EMAIL_ADDRESS|||).
  const Tokenizer gpt2 = Load("gpt2");
  const int32_t sw = *gpt2.TokenToId("<sw>");
  const auto inside = gpt2.Encode("x<sw>y", false);
  EXPECT_EQ(std::count(inside.begin(), inside.end(), sw), 0);
  const auto alone = gpt2.Encode("x <sw> y", false);
  EXPECT_EQ(std::count(alone.begin(), alone.end(), sw), 1);

  const Tokenizer olmoe = Load("olmoe");
  const int32_t mask = *olmoe.TokenToId("<mask>");
  EXPECT_EQ(olmoe.Encode("  <mask>  ", false), std::vector<int32_t>{mask});
  EXPECT_FALSE(olmoe.IsSpecial(*olmoe.TokenToId("|||EMAIL_ADDRESS|||")));
  EXPECT_EQ(olmoe.Encode("|||EMAIL_ADDRESS|||", false),
            std::vector<int32_t>{*olmoe.TokenToId("|||EMAIL_ADDRESS|||")});
}

TEST(TokenizerTest, IsThreadSafe) {
  const Tokenizer tok = Load("llama3");
  const json doc = Cases("llama3");
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep)
        for (const json& c : doc["cases"])
          if (tok.Encode(c["text"].get<std::string>(), false) != Ids(c["ids"]))
            ++failures[static_cast<size_t>(t)];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

// ------------------------------------------------------------------------------------------------
// Malformed tokenizer.json: every problem is an Error naming the file and the field.

json MinimalJson() {
  return json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null,
    "added_tokens": [{"id": 3, "content": "<s>", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
    "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [3], "tokens": ["<s>"]}}},
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
              "ignore_merges": false, "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3},
              "merges": ["a b"]}
  })");
}

struct BadCase {
  const char* name;
  std::function<void(json&)> edit;  // applied to MinimalJson()
  const char* expect;               // substring of the message
  const char* raw = nullptr;        // file text instead of an edit
};

std::vector<BadCase> BadCases() {
  return {
      {"not_json", nullptr, "not valid JSON", "{\"model\": "},
      {"top_level_array", nullptr, "top level is a JSON array, expected an object", "[1, 2]"},
      {"duplicate_vocab_key", nullptr, "model.vocab: key 'a' appears twice",
       R"({"model": {"type": "BPE", "vocab": {"a": 0, "a": 1}, "merges": []}})"},
      {"missing_model", [](json& j) { j.erase("model"); }, "(root): missing field 'model'"},
      {"unknown_model", [](json& j) { j["model"]["type"] = "Unigram"; },
       "model.type: unknown model type 'Unigram'; supported: BPE"},
      {"missing_vocab", [](json& j) { j["model"].erase("vocab"); }, "model: missing field 'vocab'"},
      {"missing_merges", [](json& j) { j["model"].erase("merges"); },
       "model: missing field 'merges'"},
      {"empty_vocab",
       [](json& j) {
         j["model"]["vocab"] = json::object();
         j["model"]["merges"] = json::array();
         j["added_tokens"] = json::array();
         j["post_processor"] = nullptr;
       },
       "model.vocab: is empty"},
      {"vocab_id_out_of_range", [](json& j) { j["model"]["vocab"]["b"] = 7; },
       "model.vocab['b']: id 7 is out of range: the vocab has 4 tokens"},
      {"vocab_id_negative", [](json& j) { j["model"]["vocab"]["b"] = -1; },
       "model.vocab['b']: id -1 is out of range"},
      {"vocab_id_duplicate", [](json& j) { j["model"]["vocab"]["b"] = 0; },
       "is also the id of 'a'"},
      {"vocab_id_not_integer", [](json& j) { j["model"]["vocab"]["b"] = "1"; },
       "model.vocab['b']: is a JSON string (\"1\"), expected an integer id"},
      {"merge_unknown_token", [](json& j) { j["model"]["merges"] = {"a z"}; },
       "model.merges[0]: 'a' 'z': 'z' is not in model.vocab"},
      {"merge_result_unknown", [](json& j) { j["model"]["merges"] = {"b a"}; },
       "model.merges[0]: 'b' 'a': the merged token 'ba' is not in model.vocab"},
      {"merge_three_parts", [](json& j) { j["model"]["merges"] = {"a b c"}; },
       "model.merges[0]: is \"a b c\", expected two tokens separated by one space"},
      {"merge_bad_pair", [](json& j) { j["model"]["merges"] = json::parse(R"([["a"]])"); },
       "model.merges[0]: is [\"a\"], expected"},
      {"unk_not_in_vocab", [](json& j) { j["model"]["unk_token"] = "<unk>"; },
       "model.unk_token: '<unk>' is not in model.vocab"},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; },
       "model.dropout: is 0.1; BPE dropout is not supported"},
      {"subword_prefix", [](json& j) { j["model"]["continuing_subword_prefix"] = "##"; },
       "model.continuing_subword_prefix: is \"##\"; only null or \"\" is supported"},
      {"byte_fallback_not_bool", [](json& j) { j["model"]["byte_fallback"] = 1; },
       "model.byte_fallback: is a JSON number (1), expected true or false"},
      {"unknown_normalizer",
       [](json& j) {
         j["normalizer"]["normalizers"].push_back({{"type", "Lowercase"}});
       },
       "normalizer.normalizers[1].type: unknown normalizer type 'Lowercase'; supported: NFC, "
       "Prepend, Replace, Sequence"},
      {"unknown_pre_tokenizer",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "pre_tokenizer.type: unknown pre-tokenizer type 'Whitespace'; supported: Split, ByteLevel, "
       "Digits, Metaspace, Sequence"},
      {"pre_tokenizer_without_type", [](json& j) { j["pre_tokenizer"] = json::object(); },
       "pre_tokenizer: missing field 'type'; supported: Split"},
      {"bad_regex",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}"; },
       "pre_tokenizer.pretokenizers[0].pattern.Regex: invalid regex"},
      {"bad_behavior",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Bogus"; },
       "pre_tokenizer.pretokenizers[0].behavior: unknown behavior 'Bogus'; supported: Removed, "
       "Isolated"},
      {"pattern_neither",
       [](json& j) {
         j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Glob", "*"}};
       },
       "pre_tokenizer.pretokenizers[0].pattern: is {\"Glob\":\"*\"}, expected"},
      {"metaspace_replacement",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "ab"}};
       },
       "pre_tokenizer.replacement: is 'ab', expected exactly one character"},
      {"metaspace_scheme",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Metaspace"}, {"replacement", "_"}, {"prepend_scheme", "sometimes"}};
       },
       "pre_tokenizer.prepend_scheme: unknown prepend_scheme 'sometimes'; supported: first, "
       "always, never"},
      {"unknown_decoder",
       [](json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       "decoder.type: unknown decoder type 'WordPiece'; supported: ByteLevel, Replace, "
       "ByteFallback, Fuse, Strip, Metaspace, Sequence"},
      {"strip_start_negative",
       [](json& j) {
         j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}};
       },
       "decoder.start: is -1, expected an integer in [0, 1048576]"},
      {"unknown_post_processor",
       [](json& j) {
         j["post_processor"] = {{"type", "RobertaProcessing"}};
       },
       "post_processor.type: unknown post-processor type 'RobertaProcessing'; supported: "
       "TemplateProcessing, ByteLevel, Sequence"},
      {"template_unknown_special",
       [](json& j) { j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<x>"; },
       "post_processor.single[0].SpecialToken.id: '<x>' is not in post_processor.special_tokens"},
      {"template_id_out_of_range",
       [](json& j) { j["post_processor"]["special_tokens"]["<s>"]["ids"] = {99}; },
       "post_processor: template token id 99 is not in the vocabulary"},
      {"template_without_a", [](json& j) { j["post_processor"]["single"].erase(1); },
       "post_processor.single: has no $A"},
      {"added_id_conflict", [](json& j) { j["added_tokens"][0]["id"] = 1; },
       "added_tokens[0]: id 1 is 'b' in model.vocab, not '<s>'"},
      {"added_duplicate_id",
       [](json& j) {
         j["added_tokens"].push_back({{"id", 3}, {"content", "<t>"}});
       },
       "added_tokens[1].id: 3 is also the id of added_tokens[0]"},
      {"added_missing_content", [](json& j) { j["added_tokens"][0].erase("content"); },
       "added_tokens[0]: missing field 'content'"},
      {"added_empty_content",
       [](json& j) {
         j["added_tokens"][0]["content"] = "";
         j["model"]["vocab"].erase("<s>");
         j["post_processor"] = nullptr;
         j["added_tokens"][0]["id"] = 4;
       },
       "added_tokens[0].content: is empty"},
      {"added_id_huge", [](json& j) { j["added_tokens"][0]["id"] = 1e20; },
       "added_tokens[0].id: is 1e+20, expected an integer"},
  };
}

class BadFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "moe_tokenizer_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(BadFileTest, MinimalFileIsValid) {
  const Tokenizer tok = Tokenizer::FromJson(MinimalJson().dump(), "minimal");
  EXPECT_EQ(tok.Encode("ab", true), (std::vector<int32_t>{3, 2}));
  EXPECT_EQ(tok.Decode(std::vector<int32_t>{3, 2, 0}, true), "aba");
}

TEST_F(BadFileTest, MalformedFilesNameTheField) {
  const auto cases = BadCases();
  ASSERT_GE(cases.size(), 10u);
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::string text;
    if (c.raw) {
      text = c.raw;
    } else {
      json j = MinimalJson();
      c.edit(j);
      text = j.dump();
    }
    const std::string path = (dir_ / (std::string(c.name) + ".json")).string();
    std::ofstream(path, std::ios::binary) << text;
    const std::string err = ErrorOf([&] { Tokenizer::FromFile(path); });
    EXPECT_EQ(err.rfind("[tokenizer] " + path + ": ", 0), 0u) << err;
    EXPECT_NE(err.find(c.expect), std::string::npos) << "message: " << err;
  }
}

TEST_F(BadFileTest, MissingFileAndDirectory) {
  const std::string p = (dir_ / "absent.json").string();
  EXPECT_NE(ErrorOf([&] { Tokenizer::FromFile(p); }).find(p + ": cannot open"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { Tokenizer::FromFile(dir_.string()); }).find("not a regular file"),
            std::string::npos);
}

TEST(SpecTest, ValidateSpecChecksOtherSources) {
  TokenizerSpec s;
  s.vocab = {"a", "b"};
  s.scores = {0.0f};
  EXPECT_NE(ErrorOf([&] {
              Tokenizer::FromSpec(s, "gguf");
            }).find("[tokenizer] gguf: model.scores: has 1 entries for 2 vocab tokens"),
            std::string::npos);
  s.scores = {0, 0};
  s.merges = {{"a", "b"}};
  EXPECT_NE(ErrorOf([&] { Tokenizer::FromSpec(s, "gguf"); }).find("has both merges and scores"),
            std::string::npos);
  s.merges.clear();
  s.bos_id = 9;
  EXPECT_NE(
      ErrorOf([&] { Tokenizer::FromSpec(s, "gguf"); }).find("bos_id: 9 is not in the vocabulary"),
      std::string::npos);
}

}  // namespace
}  // namespace moe::tokenizer
