// Fuzzes the safetensors parser. Properties checked beyond "no crash, no sanitizer report":
//   - every problem is a moe::Error (anything else escapes and is reported as a crash);
//   - every byte of every accepted tensor is readable (ASan sees out-of-bounds reads);
//   - an accepted file re-serialises through the writer and parses back to the same tensors
//     and metadata (a failure there traps).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "moe/core/error.h"
#include "moe/io/safetensors.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void RoundTrip(const moe::io::SafetensorsFile& f) {
  moe::io::SafetensorsWriter w;
  for (const auto& t : f.tensors()) w.Add(t.name, t.dtype, t.shape, t.data, t.nbytes);
  for (const auto& [k, v] : f.metadata()) w.SetMetadata(k, v);
  const std::vector<uint8_t> bytes = w.Serialize();
  const auto g = moe::io::SafetensorsFile::FromBytes("roundtrip", bytes.data(), bytes.size());
  Check(g.tensors().size() == f.tensors().size());
  Check(g.metadata() == f.metadata());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const auto& a = f.tensors()[i];
    const auto& b = g.tensors()[i];
    Check(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.nbytes == b.nbytes);
    Check(a.nbytes == 0 || std::memcmp(a.data, b.data, a.nbytes) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<moe::io::SafetensorsFile> file;
  try {
    file.emplace(moe::io::SafetensorsFile::FromBytes("fuzz", data, size));
  } catch (const moe::Error&) {
    return 0;
  }
  volatile uint8_t sink = 0;
  for (const auto& t : file->tensors()) {
    Check(file->Find(t.name) == &t);
    for (size_t i = 0; i < t.nbytes; ++i) sink = sink ^ t.data[i];
    try {
      (void)file->Load(t.name, moe::DType::kF32);
      (void)file->Load(t.name, moe::DType::kF64);
    } catch (const moe::Error&) {
    }
    try {
      (void)file->LoadIntegers(t.name);
    } catch (const moe::Error&) {
    }
  }
  RoundTrip(*file);  // must not throw for an accepted file
  return 0;
}
