#include "moe/train/dataset.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "moe/core/error.h"

namespace moe::train {
namespace {

constexpr std::string_view kTag = "data";
namespace fs = std::filesystem;

void CheckShape(int64_t batch, int64_t seq_len) {
  MOE_CHECK(batch >= 1 && seq_len >= 1, kTag, "batch {} and seq_len {} must be >= 1", batch,
            seq_len);
  MOE_CHECK(batch <= (int64_t{1} << 31) / (seq_len + 1), kTag, "batch {} x seq_len {} is too large",
            batch, seq_len);
}

// Reads a whole regular file of at most max_bytes bytes; every problem names the file.
std::string ReadTextFile(const std::string& path, uint64_t max_bytes) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) Fail(kTag, "{}: no such file", path);
  if (ec) Fail(kTag, "{}: cannot open: {}", path, ec.message());
  if (!fs::is_regular_file(st)) Fail(kTag, "{}: not a regular file", path);
  const uint64_t size = fs::file_size(path, ec);
  if (ec) Fail(kTag, "{}: cannot read its size: {}", path, ec.message());
  if (size == 0) Fail(kTag, "{}: file is empty", path);
  if (size > max_bytes) {
    Fail(kTag, "{}: file is {} bytes, over the limit of {} bytes", path, size, max_bytes);
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) Fail(kTag, "{}: cannot open: {}", path, std::strerror(errno));
  std::string data(size, '\0');
  const size_t got = std::fread(data.data(), 1, data.size(), f);
  const bool error = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (error) Fail(kTag, "{}: read failed: {}", path, std::strerror(err));
  if (got != size) Fail(kTag, "{}: read {} bytes, expected {} (file changed?)", path, got, size);
  if (const void* nul = std::memchr(data.data(), '\0', data.size())) {
    Fail(kTag, "{}: NUL byte at offset {}; expected a text file", path,
         static_cast<const char*>(nul) - data.data());
  }
  return data;
}

}  // namespace

void TokenStream::Append(int32_t domain, std::string_view bytes) {
  tokens.reserve(tokens.size() + bytes.size() + 1);
  domains.reserve(domains.size() + bytes.size() + 1);
  for (const char c : bytes) tokens.push_back(static_cast<unsigned char>(c));
  tokens.push_back(kSepToken);
  domains.insert(domains.end(), bytes.size() + 1, domain);
}

TokenBatch SampleBatch(const TokenStream& stream, int64_t batch, int64_t seq_len, Rng& rng) {
  CheckShape(batch, seq_len);
  const int64_t n = stream.size();
  MOE_CHECK(n >= seq_len + 1, kTag, "stream has {} tokens, fewer than seq_len + 1 = {}", n,
            seq_len + 1);
  TokenBatch out;
  out.batch = batch;
  out.seq_len = seq_len;
  out.tokens.reserve(static_cast<size_t>(batch * (seq_len + 1)));
  out.domains.reserve(out.tokens.capacity());
  const uint64_t starts = static_cast<uint64_t>(n - seq_len);  // offsets 0 .. n-T-1
  for (int64_t b = 0; b < batch; ++b) {
    const auto s = static_cast<ptrdiff_t>(rng.Below(starts));
    out.tokens.insert(out.tokens.end(), stream.tokens.begin() + s,
                      stream.tokens.begin() + s + seq_len + 1);
    out.domains.insert(out.domains.end(), stream.domains.begin() + s,
                       stream.domains.begin() + s + seq_len + 1);
  }
  return out;
}

TokenBatch PackSequential(const TokenStream& stream, int64_t seq_len, int64_t max_rows) {
  const int64_t n = stream.size();
  MOE_CHECK(n >= 2, kTag, "stream has {} tokens; packing needs at least 2", n);
  MOE_CHECK(seq_len >= 1 && max_rows >= 0, kTag, "bad seq_len {} or max_rows {}", seq_len,
            max_rows);
  int64_t rows = (n - 1 + seq_len - 1) / seq_len;
  if (max_rows > 0 && rows > max_rows) rows = max_rows;
  CheckShape(rows, seq_len);
  TokenBatch out;
  out.batch = rows;
  out.seq_len = seq_len;
  out.tokens.assign(static_cast<size_t>(rows * (seq_len + 1)), kPadToken);
  out.domains.assign(out.tokens.size(), kNoDomain);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t begin = r * seq_len;
    const int64_t end = std::min(begin + seq_len + 1, n);
    const auto dst = static_cast<ptrdiff_t>(r * (seq_len + 1));
    std::copy(stream.tokens.begin() + begin, stream.tokens.begin() + end, out.tokens.begin() + dst);
    std::copy(stream.domains.begin() + begin, stream.domains.begin() + end,
              out.domains.begin() + dst);
  }
  return out;
}

Dataset LoadTextFiles(std::span<const std::string> paths, const TextDataOptions& opts) {
  MOE_CHECK(!paths.empty(), kTag, "no data files given");
  MOE_CHECK(opts.val_fraction >= 0 && opts.val_fraction < 1, kTag,
            "val_fraction {} must be in [0, 1)", opts.val_fraction);
  Dataset ds;
  std::set<std::string> names;
  uint64_t total = 0;
  for (const std::string& path : paths) {
    const std::string name = fs::path(path).filename().string();
    if (!names.insert(name).second) {
      Fail(kTag, "{}: another data file is also named '{}'; each file names one domain", path,
           name);
    }
    const std::string text = ReadTextFile(path, opts.max_file_bytes);
    total += text.size();
    if (total > opts.max_total_bytes) {
      Fail(kTag, "{}: data files total more than the limit of {} bytes", path,
           opts.max_total_bytes);
    }
    const auto val_bytes =
        static_cast<size_t>(static_cast<double>(text.size()) * opts.val_fraction);
    if (opts.val_fraction > 0 && (val_bytes == 0 || val_bytes == text.size())) {
      Fail(kTag, "{}: {} bytes are too few to hold out {} for validation", path, text.size(),
           opts.val_fraction);
    }
    const auto d = static_cast<int32_t>(ds.domain_names.size());
    ds.domain_names.push_back(name);
    const std::string_view all(text);
    ds.train.Append(d, all.substr(0, text.size() - val_bytes));
    if (val_bytes > 0) ds.val.Append(d, all.substr(text.size() - val_bytes));
  }
  return ds;
}

}  // namespace moe::train
