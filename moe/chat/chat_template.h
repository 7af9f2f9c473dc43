// Chat templates as models ship them: the Jinja2 `chat_template` of tokenizer_config.json,
// rendered the way Hugging Face's apply_chat_template does (docs/CHAT.md).
//
//   ChatTemplate t = ChatTemplate::FromTokenizerConfig("model/tokenizer_config.json");
//   std::string prompt = t.Render({{"system", "Be brief."}, {"user", "Hi"}}, true);
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/chat/jinja.h"

namespace moe::chat {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool", ...
  std::string content;
};

class ChatTemplate {
 public:
  // Reads `chat_template` (a string, or a list of {name, template}: `name` picks one, default
  // "default") and the special tokens (bos_token, eos_token, unk_token, pad_token: strings or
  // {"content": ...} objects) from a tokenizer_config.json. A missing template is an Error that
  // names the file and suggests --chat-template.
  static ChatTemplate FromTokenizerConfig(const std::string& path, const std::string& name = "");
  // A template file (e.g. --chat-template FILE); special tokens given by the caller.
  static ChatTemplate FromFile(const std::string& path, std::string bos_token = "",
                               std::string eos_token = "");
  static ChatTemplate FromString(std::string_view source, std::string origin,
                                 std::string bos_token = "", std::string eos_token = "");

  // Variables as transformers passes them: messages, add_generation_prompt, bos_token,
  // eos_token (and the other special tokens of the config), then `extra` (e.g. tools,
  // enable_thinking), which may override the special tokens.
  std::string Render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object(),
                     const RenderOptions& options = {}) const;
  // Messages as JSON objects (for tool_calls, reasoning_content, ... beyond role/content).
  std::string RenderJson(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                         const nlohmann::ordered_json& extra = nlohmann::ordered_json::object(),
                         const RenderOptions& options = {}) const;

  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  const Template& jinja() const { return template_; }

 private:
  Template template_;
  std::string bos_token_;
  std::string eos_token_;
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();  // name -> string
};

}  // namespace moe::chat
