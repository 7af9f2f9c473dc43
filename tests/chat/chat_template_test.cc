// The real chat templates of the supported families (tests/data/chat/<family>.jinja) rendered
// exactly as Python jinja2 renders them with Hugging Face's settings
// (tests/data/chat/<family>.cases.json, written by scripts/gen_chat_goldens.py).
#include "moe/chat/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "moe/core/error.h"
#include "moe/testing/compare.h"

namespace moe::chat {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

const char* const kFamilies[] = {"mixtral",     "qwen2",       "qwen3",  "olmoe",
                                 "deepseek_v2", "deepseek_v3", "llama2", "llama3"};

std::string DataPath(const std::string& name) {
  return std::string(MOE_TEST_DATA_DIR) + "/chat/" + name;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

using moe::testing::ErrorOf;

class FamilyTest : public ::testing::TestWithParam<const char*> {};

TEST_P(FamilyTest, MatchesJinja2Goldens) {
  const std::string family = GetParam();
  const json doc = json::parse(ReadText(DataPath(family + ".cases.json")));
  const ChatTemplate t =
      ChatTemplate::FromFile(DataPath(family + ".jinja"), doc["bos_token"], doc["eos_token"]);
  ASSERT_GE(doc["cases"].size(), 4u);
  for (const json& c : doc["cases"]) {
    SCOPED_TRACE(family + " " + c["name"].get<std::string>());
    const bool agp = c["add_generation_prompt"].get<bool>();
    if (c.contains("expected")) {
      EXPECT_EQ(t.RenderJson(c["messages"], agp, c["extra"]), c["expected"].get<std::string>());
    } else {
      const std::string err = ErrorOf([&] { t.RenderJson(c["messages"], agp, c["extra"]); });
      EXPECT_NE(err.find(c["error"].get<std::string>()), std::string::npos) << err;
      EXPECT_NE(err.find("raise_exception"), std::string::npos) << err;
      EXPECT_NE(err.find(family + ".jinja:"), std::string::npos) << err;
    }
  }
}

TEST_P(FamilyTest, PlainMessagesApi) {
  // The role/content API gives the same text as the JSON one for the 4-message chat.
  const std::string family = GetParam();
  const json doc = json::parse(ReadText(DataPath(family + ".cases.json")));
  const ChatTemplate t =
      ChatTemplate::FromFile(DataPath(family + ".jinja"), doc["bos_token"], doc["eos_token"]);
  for (const json& c : doc["cases"]) {
    if (c["name"] != "chat/gen" && c["name"] != "chat/nogen") continue;
    std::vector<ChatMessage> msgs;
    for (const json& m : c["messages"]) msgs.push_back({m["role"], m["content"]});
    EXPECT_EQ(t.Render(msgs, c["add_generation_prompt"].get<bool>()),
              c["expected"].get<std::string>());
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyTest, ::testing::ValuesIn(kFamilies));

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("moe_chat_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
             "_" + std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& text) const {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }

 private:
  fs::path path_;
};

TEST(ChatTemplate, FromTokenizerConfigStringAndAddedTokenObjects) {
  TempDir dir;
  json cfg;
  cfg["chat_template"] = ReadText(DataPath("llama2.jinja"));
  cfg["bos_token"] = {{"__type", "AddedToken"}, {"content", "<s>"}, {"lstrip", false}};
  cfg["eos_token"] = "</s>";
  cfg["unk_token"] = {{"content", "<unk>"}};
  cfg["pad_token"] = nullptr;
  const ChatTemplate t =
      ChatTemplate::FromTokenizerConfig(dir.Write("tokenizer_config.json", cfg.dump()));
  EXPECT_EQ(t.bos_token(), "<s>");
  EXPECT_EQ(t.eos_token(), "</s>");
  EXPECT_EQ(t.Render({{"system", "S"}, {"user", "Hi"}, {"assistant", "Yo"}, {"user", "Bye"}}, true),
            "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST] Yo </s><s>[INST] Bye [/INST]");
}

TEST(ChatTemplate, FromTokenizerConfigNamedList) {
  TempDir dir;
  json cfg;
  cfg["chat_template"] = json::array({{{"name", "default"}, {"template", "D{{ messages|length }}"}},
                                      {{"name", "tool_use"}, {"template", "T{{ tools|length }}"}}});
  const std::string path = dir.Write("tokenizer_config.json", cfg.dump());
  EXPECT_EQ(ChatTemplate::FromTokenizerConfig(path).Render({{"user", "x"}}, false), "D1");
  EXPECT_EQ(
      ChatTemplate::FromTokenizerConfig(path, "tool_use").Render({}, false, {{"tools", {1, 2}}}),
      "T2");
  const std::string err = ErrorOf([&] { ChatTemplate::FromTokenizerConfig(path, "rag"); });
  EXPECT_NE(err.find("no chat_template named 'rag' (it has: default, tool_use)"), std::string::npos)
      << err;
}

TEST(ChatTemplate, MissingTemplateNamesTheFile) {
  TempDir dir;
  const std::string path = dir.Write("tokenizer_config.json", R"({"bos_token": "<s>"})");
  const std::string err = ErrorOf([&] { ChatTemplate::FromTokenizerConfig(path); });
  EXPECT_NE(err.find("[chat] '" + path + "' has no chat_template"), std::string::npos) << err;
  EXPECT_NE(err.find("--chat-template"), std::string::npos) << err;
  EXPECT_NE(ErrorOf([&] {
              ChatTemplate::FromTokenizerConfig(dir.Write("bad.json", "{"));
            }).find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(
      ErrorOf([&] { ChatTemplate::FromTokenizerConfig(path + ".missing"); }).find("cannot open"),
      std::string::npos);
  EXPECT_NE(ErrorOf([&] {
              ChatTemplate::FromTokenizerConfig(dir.Write("n.json", R"({"chat_template": 3})"));
            }).find("must be a string or a list"),
            std::string::npos);
}

TEST(ChatTemplate, ParseErrorNamesConfigLineAndColumn) {
  TempDir dir;
  json cfg;
  cfg["chat_template"] = "{% for m in messages %}\n  {{ m.content | nosuchfilter }}\n{% endfor %}";
  const std::string path = dir.Write("tokenizer_config.json", cfg.dump());
  const ChatTemplate t = ChatTemplate::FromTokenizerConfig(path);
  const std::string err = ErrorOf([&] { t.Render({{"user", "x"}}, false); });
  EXPECT_NE(err.find("[chat] " + path + ":2:16: unknown filter 'nosuchfilter'"), std::string::npos)
      << err;
  cfg["chat_template"] = "{% if x %}\nno end";
  const std::string err2 =
      ErrorOf([&] { ChatTemplate::FromTokenizerConfig(dir.Write("b.json", cfg.dump())); });
  EXPECT_NE(err2.find("unexpected end of template, expected 'elif' or 'else' or 'endif'"),
            std::string::npos)
      << err2;
}

TEST(ChatTemplate, ExtraVariablesOverrideSpecialTokens) {
  const ChatTemplate t = ChatTemplate::FromString("{{ bos_token }}|{{ eos_token }}|{{ foo }}",
                                                  "inline", "<s>", "</s>");
  EXPECT_EQ(t.Render({}, false), "<s>|</s>|");
  EXPECT_EQ(t.Render({}, false, {{"bos_token", "B"}, {"foo", 1.5}}), "B|</s>|1.5");
  EXPECT_NE(ErrorOf([&] {
              t.Render({}, false, {{"messages", 1}});
            }).find("cannot be passed"),
            std::string::npos);
}

}  // namespace
}  // namespace moe::chat
