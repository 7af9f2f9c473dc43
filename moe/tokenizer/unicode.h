// UTF-8 and Unicode helpers for the tokenizer: decoding with the "maximal subpart" rule for
// ill-formed input (what Rust's String::from_utf8_lossy and Python's errors="replace" do), the
// GPT-2 byte-level alphabet, character classes, and NFC (ICU).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moe::tokenizer {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

struct Utf8Char {
  uint32_t cp = kReplacementChar;  // the code point, or U+FFFD when !valid
  uint32_t len = 1;  // bytes consumed: the sequence, or the maximal ill-formed subpart
  bool valid = false;
  bool truncated = false;  // ill-formed only because the input ends inside a valid prefix
};

// Decodes the character at s[pos] (pos < s.size()).
Utf8Char DecodeUtf8(std::string_view s, size_t pos);
void AppendUtf8(uint32_t cp, std::string& out);
bool IsValidUtf8(std::string_view s);
// s with each maximal ill-formed subsequence replaced by U+FFFD.
std::string ToValidUtf8(std::string_view s);

// GPT-2 byte-level alphabet: byte b <-> one printable code point (as UTF-8).
const std::array<std::string, 256>& ByteLevelChars();
// The byte a byte-level code point stands for, or -1.
int ByteLevelByte(uint32_t cp);

// Character classes as Rust (and so Hugging Face tokenizers) define them.
bool IsWhitespace(uint32_t cp);  // char::is_whitespace: White_Space
bool IsNumeric(uint32_t cp);     // char::is_numeric: Nd, Nl, No
bool IsWordChar(uint32_t cp);    // regex \w: Alphabetic, M, Nd, Pc, Join_Control

// Unicode NFC of valid UTF-8 (ICU).
std::string Nfc(std::string_view s);

}  // namespace moe::tokenizer
