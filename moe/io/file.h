// Small file helpers with clear errors: atomic writes (temp file + fsync + rename, so a reader or a
// crash never sees a partial file), bounded whole-file reads, and directory operations used by
// checkpoints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace moe::io {

// A regular file mapped read-only (the descriptor is closed at once): data is nullptr for an empty
// file; the mapping lives as long as `storage`. Errors are tagged `tag` and name the file.
struct MappedFile {
  std::shared_ptr<const void> storage;
  const uint8_t* data = nullptr;
  size_t size = 0;
};
MappedFile MapFileReadOnly(const std::string& path, std::string_view tag);

// Writes `path.tmp`, fsyncs it, renames it over `path` and fsyncs the directory.
void WriteFileAtomic(const std::string& path, std::string_view bytes);

// The same, streamed: Append() writes to `path.tmp` as it goes, Commit() fsyncs it and renames it
// over `path`. Destroying the writer before Commit() (an exception on the way) removes the
// temporary file, so `path` is either the old file or the complete new one.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void Append(const void* data, size_t n);
  void Append(std::string_view bytes) { Append(bytes.data(), bytes.size()); }
  uint64_t written() const { return written_; }
  void Commit();

 private:
  [[noreturn]] void Abort(const char* what);

  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
};
// The whole file; Error naming the file when it is missing, unreadable or larger than max_bytes.
std::string ReadFile(const std::string& path, uint64_t max_bytes = uint64_t{1} << 30);
bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);
// mkdir -p; Error when a component exists and is not a directory.
void MakeDirs(const std::string& path);
// rm -rf (no error when absent).
void RemoveAll(const std::string& path);
// rename(2) with an Error naming both paths, then fsync of the destination's directory.
void RenameDurable(const std::string& from, const std::string& to);

// Puts the finished folder `tmp` in place of `dir`: an atomic exchange (renameat2 RENAME_EXCHANGE)
// when `dir` exists, then removes the old contents. Readers see either the old or the new folder.
void ReplaceDirAtomic(const std::string& tmp, const std::string& dir);

}  // namespace moe::io
