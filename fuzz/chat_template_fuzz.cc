// Fuzzes the chat-template interpreter: the input is a template source. It is parsed, then
// rendered with a fixed conversation (system/user/assistant with a tool call/tool/user), tools,
// special tokens and add_generation_prompt both ways, under small limits.
// Properties checked beyond "no crash, no sanitizer report, no hang":
//   - every problem is a moe::Error (anything else escapes and is reported as a crash);
//   - the output respects max_output_bytes.
// Seeds in fuzz/corpus/chat_template/ are the family templates of tests/data/chat.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "moe/chat/jinja.h"
#include "moe/core/error.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

const moe::chat::Value& Vars(bool add_generation_prompt) {
  static const auto make = [](bool agp) {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(R"({
      "bos_token": "<s>", "eos_token": "</s>",
      "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  Hi <think>x</think> é ✓ "},
        {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello", "reasoning_content": null,
         "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": [1, 2.5, true]}}}]},
        {"role": "tool", "content": "{\"ok\": 1}"},
        {"role": "user", "content": ""}],
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
      "enable_thinking": false})");
    j["add_generation_prompt"] = agp;
    return moe::chat::Value::FromJson(j);
  };
  static const moe::chat::Value with = make(true);
  static const moe::chat::Value without = make(false);
  return add_generation_prompt ? with : without;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  moe::chat::RenderOptions options;
  options.max_output_bytes = 1 << 20;
  options.max_steps = 200'000;
  options.max_call_depth = 32;
  std::tm tm{};
  tm.tm_year = 124;
  tm.tm_mday = 1;
  options.now = tm;
  try {
    const moe::chat::Template t = moe::chat::Template::Parse(source, "fuzz");
    for (bool agp : {false, true}) {
      try {
        const std::string out = t.Render(Vars(agp), options);
        Check(out.size() <= options.max_output_bytes);
      } catch (const moe::Error&) {
      }
    }
  } catch (const moe::Error&) {
  }
  return 0;
}
