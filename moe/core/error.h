// moe::Error and the check macros.
//
// User-facing problems throw moe::Error whose message starts with a [tag] and names the values:
//   [gguf] tensor 'blk.3.ffn_up_exps' has shape [8,14336,4096], expected [8,4096,14336]
// MOE_CHECK is always on (cheap, at op entry); MOE_DCHECK only in debug builds (inner loops).
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>

namespace moe {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throws Error("[tag] " + formatted message).
template <typename... Args>
[[noreturn]] void Fail(std::string_view tag, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format("[{}] {}", tag, fmt::format(f, std::forward<Args>(args)...)));
}

}  // namespace moe

// MOE_CHECK(cond, "tag", "format {}", args...)
#define MOE_CHECK(cond, tag, ...)                  \
  do {                                             \
    if (!(cond)) [[unlikely]] {                    \
      ::moe::Fail(tag, __VA_ARGS__);               \
    }                                              \
  } while (0)

#ifndef NDEBUG
#define MOE_DCHECK(cond, tag, ...) MOE_CHECK(cond, tag, __VA_ARGS__)
#else
#define MOE_DCHECK(cond, tag, ...) \
  do {                             \
  } while (0)
#endif
