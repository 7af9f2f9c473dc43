// `moe chat-template`: renders a conversation with a model's chat template (tokenizer_config.json
// or a --chat-template file), exactly as the prompt that generation would see.
#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "moe/chat/chat_template.h"
#include "moe/core/error.h"
#include "tools/commands.h"

namespace moe::cli {
namespace {

struct ChatTemplateOptions {
  std::string config;         // tokenizer_config.json (or a model folder)
  std::string template_file;  // --chat-template FILE
  std::string name;
  std::string messages_file;
  std::vector<std::string> messages;  // role=content
  std::string vars = "{}";
  bool add_generation_prompt = false;
};

std::string ReadAll(const std::string& path) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("chat", "cannot open '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Run(const ChatTemplateOptions& opt) {
  std::string config = opt.config;
  if (!config.empty() && config.find(".json") == std::string::npos)
    config += "/tokenizer_config.json";
  std::optional<chat::ChatTemplate> t;
  if (!opt.template_file.empty()) {
    std::string bos, eos;
    if (!config.empty()) {  // special tokens still come from the config, when given
      const auto cfg = nlohmann::json::parse(ReadAll(config), nullptr, false);
      auto text = [&](const char* key) -> std::string {
        if (!cfg.is_object() || !cfg.contains(key)) return "";
        const auto& v = cfg[key];
        if (v.is_string()) return v.get<std::string>();
        if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"];
        return "";
      };
      bos = text("bos_token");
      eos = text("eos_token");
    }
    t = chat::ChatTemplate::FromFile(opt.template_file, bos, eos);
  } else {
    if (config.empty()) Fail("chat", "give --config tokenizer_config.json or --chat-template FILE");
    t = chat::ChatTemplate::FromTokenizerConfig(config, opt.name);
  }
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!opt.messages_file.empty()) {
    try {
      messages = nlohmann::ordered_json::parse(ReadAll(opt.messages_file));
    } catch (const nlohmann::json::exception& e) {
      Fail("chat", "'{}' is not valid JSON: {}", opt.messages_file, e.what());
    }
    if (messages.is_object() && messages.contains("messages")) messages = messages["messages"];
    if (!messages.is_array())
      Fail("chat", "'{}' must hold a JSON array of messages", opt.messages_file);
  }
  for (const std::string& m : opt.messages) {
    const size_t eq = m.find('=');
    if (eq == std::string::npos) Fail("chat", "--message expects role=content, got '{}'", m);
    messages.push_back({{"role", m.substr(0, eq)}, {"content", m.substr(eq + 1)}});
  }
  nlohmann::ordered_json vars;
  try {
    vars = nlohmann::ordered_json::parse(opt.vars);
  } catch (const nlohmann::json::exception& e) {
    Fail("chat", "--vars is not valid JSON: {}", e.what());
  }
  if (!vars.is_object()) Fail("chat", "--vars must be a JSON object");
  std::cout << t->RenderJson(messages, opt.add_generation_prompt, vars);
  std::cout.flush();
}

}  // namespace

void AddChatTemplateCommand(CLI::App& root) {
  auto opt = std::make_shared<ChatTemplateOptions>();
  auto* cmd = root.add_subcommand("chat-template", "Render a conversation with a chat template");
  cmd->add_option("--config", opt->config, "tokenizer_config.json, or the model folder holding it");
  cmd->add_option("--chat-template", opt->template_file,
                  "Jinja template file (instead of the config's)");
  cmd->add_option("--name", opt->name, "Which named template of a list (default: 'default')");
  cmd->add_option("--messages", opt->messages_file,
                  "JSON file ('-' = stdin): [{\"role\": ..., \"content\": ...}, ...]");
  cmd->add_option("--message,-m", opt->messages, "role=content (repeatable, after --messages)");
  cmd->add_option("--vars", opt->vars,
                  "Extra template variables as a JSON object, e.g. "
                  "'{\"enable_thinking\": false}'");
  cmd->add_flag("--add-generation-prompt,-g", opt->add_generation_prompt,
                "End with the assistant header");
  cmd->callback([opt] { Run(*opt); });
}

}  // namespace moe::cli
