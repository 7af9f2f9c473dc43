#include "moe/chat/chat_template.h"

#include <fstream>
#include <optional>
#include <sstream>

#include "moe/core/error.h"

namespace moe::chat {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("chat", "cannot open '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A special token as tokenizer_config.json writes it: "…", {"content": "…", ...} or null.
std::optional<std::string> TokenText(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

ChatTemplate ChatTemplate::FromTokenizerConfig(const std::string& path, const std::string& name) {
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(ReadFile(path));
  } catch (const nlohmann::json::exception& e) {
    Fail("chat", "'{}' is not valid JSON: {}", path, e.what());
  }
  if (!cfg.is_object()) Fail("chat", "'{}' is not a JSON object", path);
  if (!cfg.contains("chat_template") || cfg["chat_template"].is_null()) {
    Fail("chat",
         "'{}' has no chat_template (base models often have none); pass a template file with "
         "--chat-template FILE",
         path);
  }
  const nlohmann::json& ct = cfg["chat_template"];
  std::string source;
  std::string origin = path;
  if (ct.is_string()) {
    if (!name.empty() && name != "default") {
      Fail("chat", "'{}' has a single chat_template, not one named '{}'", path, name);
    }
    source = ct.get<std::string>();
  } else if (ct.is_array()) {
    const std::string want = name.empty() ? "default" : name;
    std::string names;
    bool found = false;
    for (const auto& entry : ct) {
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
          !entry.contains("template") || !entry["template"].is_string()) {
        Fail("chat",
             "'{}': chat_template list entries must be {{\"name\": ..., \"template\": ...}}", path);
      }
      const std::string n = entry["name"].get<std::string>();
      names += (names.empty() ? "" : ", ") + n;
      if (n == want && !found) {
        source = entry["template"].get<std::string>();
        found = true;
      }
    }
    if (!found)
      Fail("chat", "'{}' has no chat_template named '{}' (it has: {})", path, want, names);
    origin = path + "[" + want + "]";
  } else {
    Fail("chat", "'{}': chat_template must be a string or a list of named templates", path);
  }
  ChatTemplate t;
  t.template_ = Template::Parse(source, origin);
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    if (!cfg.contains(key)) continue;
    if (auto text = TokenText(cfg[key])) t.special_tokens_[key] = *text;
  }
  t.bos_token_ = t.special_tokens_.value("bos_token", "");
  t.eos_token_ = t.special_tokens_.value("eos_token", "");
  return t;
}

ChatTemplate ChatTemplate::FromFile(const std::string& path, std::string bos_token,
                                    std::string eos_token) {
  return FromString(ReadFile(path), path, std::move(bos_token), std::move(eos_token));
}

ChatTemplate ChatTemplate::FromString(std::string_view source, std::string origin,
                                      std::string bos_token, std::string eos_token) {
  ChatTemplate t;
  t.template_ = Template::Parse(source, std::move(origin));
  t.bos_token_ = std::move(bos_token);
  t.eos_token_ = std::move(eos_token);
  t.special_tokens_["bos_token"] = t.bos_token_;
  t.special_tokens_["eos_token"] = t.eos_token_;
  return t;
}

std::string ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, const nlohmann::ordered_json& extra,
                                 const RenderOptions& options) const {
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  return RenderJson(msgs, add_generation_prompt, extra, options);
}

std::string ChatTemplate::RenderJson(const nlohmann::ordered_json& messages,
                                     bool add_generation_prompt,
                                     const nlohmann::ordered_json& extra,
                                     const RenderOptions& options) const {
  MOE_CHECK(messages.is_array(), "chat", "messages must be a JSON array");
  MOE_CHECK(extra.is_object() || extra.is_null(), "chat",
            "extra template variables must be a JSON object");
  Dict vars;
  for (auto it = special_tokens_.begin(); it != special_tokens_.end(); ++it) {
    vars.Set(Value::Str(it.key()), Value::FromJson(it.value()));
  }
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it) {
      MOE_CHECK(it.key() != "messages" && it.key() != "add_generation_prompt", "chat",
                "'{}' cannot be passed as an extra template variable", it.key());
      vars.Set(Value::Str(it.key()), Value::FromJson(it.value()));
    }
  }
  vars.Set(Value::Str("messages"), Value::FromJson(messages));
  vars.Set(Value::Str("add_generation_prompt"), Value::Bool(add_generation_prompt));
  return template_.Render(Value::MakeDict(std::move(vars)), options);
}

}  // namespace moe::chat
