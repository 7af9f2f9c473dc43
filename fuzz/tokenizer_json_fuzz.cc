// Fuzzes the tokenizer. The first byte picks what the rest is:
//   0: a tokenizer.json (parsed; an accepted one then encodes and decodes a few texts);
//   1: a byte choosing a fixture tokenizer (tests/data/tokenizers, or Bytes()), then text that it
//      encodes and decodes;
//   2: a byte choosing a fixture tokenizer, then token ids (little-endian int32) that it decodes
//      (also streamed).
// Properties checked beyond "no crash, no sanitizer report":
//   - every problem is a moe::Error (anything else escapes and is reported as a crash);
//   - Encode gives ids in [0, vocab_size); Decode and StreamDecoder give valid UTF-8;
//   - byte-level BPE without a normalizer round-trips the (U+FFFD-repaired) text exactly.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/error.h"
#include "moe/tokenizer/tokenizer.h"
#include "moe/tokenizer/unicode.h"

namespace {

using moe::tokenizer::StreamDecoder;
using moe::tokenizer::Tokenizer;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

struct Fixture {
  Tokenizer tok;
  bool lossless;  // byte-level, no normalizer
};

const std::vector<Fixture>& Fixtures() {
  static const std::vector<Fixture> all = [] {
    std::vector<Fixture> v;
    for (const char* family : {"gpt2", "llama3", "deepseek_v3", "deepseek_v2", "qwen2", "olmoe",
                               "mixtral", "mistral", "misc_bytelevel", "misc_metaspace"}) {
      const std::string path = std::string(MOE_FUZZ_DATA_DIR) + "/" + family + "/tokenizer.json";
      Tokenizer tok = Tokenizer::FromFile(path);
      const std::string_view f = family;
      const bool lossless = tok.spec().normalizer.empty() && f != "mixtral" && f != "mistral" &&
                            f.substr(0, 5) != "misc_";
      v.push_back({std::move(tok), lossless});
    }
    v.push_back({Tokenizer::Bytes(true, true), false});
    return v;
  }();
  return all;
}

void DecodeAll(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (bool skip : {false, true}) {
    Check(moe::tokenizer::IsValidUtf8(tok.Decode(ids, skip)));
    StreamDecoder sd(tok, skip);
    for (int32_t id : ids) Check(moe::tokenizer::IsValidUtf8(sd.Push(id)));
    Check(moe::tokenizer::IsValidUtf8(sd.Flush()));
  }
}

void Exercise(const Tokenizer& tok, std::string_view text, bool lossless) {
  std::vector<int32_t> ids;
  try {
    ids = tok.Encode(text, true);
  } catch (const moe::Error&) {
    return;  // e.g. a regex from a fuzzed file that exceeds the backtracking limit
  }
  for (int32_t id : ids) Check(id >= 0 && id < tok.vocab_size());
  DecodeAll(tok, ids);
  if (lossless) {
    const std::vector<int32_t> plain = tok.Encode(text, false);
    Check(tok.Decode(plain, false) == moe::tokenizer::ToValidUtf8(text));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      std::optional<Tokenizer> tok;
      try {
        tok.emplace(Tokenizer::FromJson(rest, "fuzz"));
      } catch (const moe::Error&) {
        return 0;
      }
      for (std::string_view text : {"Hello world, it's 2024!", "  \t\n\n x",
                                    "\xE4\xB8\xAD\xF0\x9F\x98\x80 \xFF", "<s>a</s><|endoftext|>"})
        Exercise(*tok, text, false);
      std::vector<int32_t> ids;
      for (int32_t id = -2; id < tok->vocab_size() + 2 && id < 600; ++id) ids.push_back(id);
      DecodeAll(*tok, ids);
      break;
    }
    case 1:
    case 2: {
      if (rest.empty()) return 0;
      const Fixture& f = Fixtures()[static_cast<uint8_t>(rest[0]) % Fixtures().size()];
      const std::string_view payload = rest.substr(1);
      if (data[0] % 3 == 1) {
        Exercise(f.tok, payload, f.lossless);
        break;
      }
      std::vector<int32_t> ids(payload.size() / 4);
      if (!ids.empty()) std::memcpy(ids.data(), payload.data(), ids.size() * 4);
      for (int32_t& id : ids)  // mostly valid ids, some out of range
        if (id >= 0) id %= (f.tok.vocab_size() + 4);
      DecodeAll(f.tok, ids);
      break;
    }
  }
  return 0;
}
