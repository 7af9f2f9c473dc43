// A Jinja2-subset template engine for the chat templates that models ship in
// tokenizer_config.json (see docs/CHAT.md for the supported subset).
//
//   Template t = Template::Parse(source, "tokenizer_config.json");
//   std::string text = t.Render(vars);   // vars: a dict Value
//
// Parsing follows Jinja2 as Hugging Face configures it: trim_blocks and lstrip_blocks on, a
// single trailing newline of the source dropped, "\r\n" and "\r" read as "\n". Every problem
// (malformed template, unknown filter, wrong type, raise_exception, limits) is a moe::Error:
//   [chat] tokenizer_config.json:12:8: unknown filter 'frobnicate'
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "moe/chat/value.h"

namespace moe::chat {

namespace detail {
struct Program;
}

struct RenderOptions {
  size_t max_output_bytes = 64u << 20;  // the rendered text
  int max_call_depth = 64;              // nested macro calls
  int64_t max_steps = 10'000'000;       // loop iterations + macro calls + output writes
  // The time strftime_now() formats (local time); unset: the current time.
  std::optional<std::tm> now;
};

class Template {
 public:
  // Throws moe::Error "[chat] origin:line:col: ..." for a malformed template.
  static Template Parse(std::string_view source, std::string origin);

  // vars: a dict of global variables (or undefined for none). Throws moe::Error.
  std::string Render(const Value& vars, const RenderOptions& options = {}) const;

  const std::string& origin() const;

 private:
  std::shared_ptr<const detail::Program> program_;
};

}  // namespace moe::chat
