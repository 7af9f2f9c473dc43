// Fuzzes the GGUF reader. Properties checked beyond "no crash, no sanitizer report":
//   - every problem is a moe::Error (anything else escapes and is reported as a crash);
//   - every byte of every accepted tensor is readable (ASan sees out-of-bounds reads), and every
//     accessor either answers or throws moe::Error;
//   - an accepted file re-serialises through the writer and parses back to the same metadata and
//     tensors, and writing that again gives the same bytes (a failure there traps).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "moe/core/error.h"
#include "moe/io/gguf.h"

namespace {

using moe::io::GgufFile;
using moe::io::GgufValue;
using moe::io::GgufValueType;
using moe::io::GgufWriter;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

template <typename Fn>
void Try(Fn&& fn) {
  try {
    fn();
  } catch (const moe::Error&) {
  }
}

void TouchValue(const GgufValue& v) {
  (void)v.ToString();
  (void)v.AsI64();
  (void)v.AsU64();
  (void)v.AsF64();
  if (!v.is_array()) return;
  if (v.array_type() == GgufValueType::kArray) {
    Check(v.items().size() == v.size());
    for (const GgufValue& item : v.items()) TouchValue(item);
  } else if (v.array_type() == GgufValueType::kString) {
    Check(v.strings().size() == v.size());
  } else {
    for (uint64_t i = 0; i < v.size(); ++i) (void)v.At(i).ToString();
  }
}

void RoundTrip(const GgufFile& f) {
  GgufWriter w;
  for (const auto& [k, v] : f.metadata()) {
    if (k == "general.alignment" && v.type() != GgufValueType::kU32) {
      w.AddMetadata(k, GgufValue::U32(static_cast<uint32_t>(f.alignment())));  // writer: u32 only
    } else {
      w.AddMetadata(k, v);
    }
  }
  for (const auto& t : f.tensors()) w.AddTensorView(t.name, t.type, t.dims, t.data, t.nbytes);
  const std::vector<uint8_t> bytes = w.Serialize();
  const GgufFile g = GgufFile::FromBytes("roundtrip", bytes.data(), bytes.size());
  Check(g.version() == 3 && g.alignment() == f.alignment());
  Check(g.metadata().size() == f.metadata().size());
  for (size_t i = 0; i < f.metadata().size(); ++i) {
    Check(g.metadata()[i].first == f.metadata()[i].first);
    Check(g.metadata()[i].first == "general.alignment" ||
          g.metadata()[i].second == f.metadata()[i].second);
  }
  Check(g.tensors().size() == f.tensors().size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const auto& a = f.tensors()[i];
    const auto& b = g.tensors()[i];
    Check(a.name == b.name && a.type == b.type && a.dims == b.dims && a.nbytes == b.nbytes);
    Check(std::memcmp(a.data, b.data, a.nbytes) == 0);
  }
  GgufWriter w2;
  for (const auto& [k, v] : g.metadata()) w2.AddMetadata(k, v);
  for (const auto& t : g.tensors()) w2.AddTensorView(t.name, t.type, t.dims, t.data, t.nbytes);
  Check(w2.Serialize() == bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<GgufFile> file;
  try {
    file.emplace(GgufFile::FromBytes("fuzz", data, size));
  } catch (const moe::Error&) {
    return 0;
  }
  const GgufFile& f = *file;
  Check(f.data_offset() % f.alignment() == 0);
  for (const auto& kv : f.metadata()) {
    const std::string& k = kv.first;  // (clang 14 lambdas cannot capture structured bindings)
    const GgufValue& v = kv.second;
    Check(f.Find(k) == &v);
    TouchValue(v);
    Try([&] { (void)f.GetU32(k); });
    Try([&] { (void)f.GetI64(k); });
    Try([&] { (void)f.GetF32(k); });
    Try([&] { (void)f.GetBool(k); });
    Try([&] { (void)f.GetString(k); });
    Try([&] { (void)f.GetStrings(k); });
    Try([&] { (void)f.GetInts(k); });
    Try([&] { (void)f.GetF32s(k); });
  }
  volatile uint8_t sink = 0;
  for (const auto& t : f.tensors()) {
    Check(f.FindTensor(t.name) == &t);
    Check(t.offset % f.alignment() == 0);
    Check(f.data_offset() + t.offset + t.nbytes <= f.file_size());
    for (uint64_t i = 0; i < t.nbytes; ++i) sink = sink ^ t.data[i];
    Try([&] { f.RequireSupported(t); });
  }
  RoundTrip(f);  // must not throw for an accepted file
  return 0;
}
