#include "moe/io/file.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "moe/core/error.h"

namespace moe::io {

namespace {
constexpr std::string_view kTag = "io";

std::string ParentDir(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

void FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some filesystems do not allow it
  (void)::fsync(fd);
  ::close(fd);
}
}  // namespace

void WriteFileAtomic(const std::string& path, std::string_view bytes) {
  AtomicFileWriter w(path);
  w.Append(bytes);
  w.Commit();
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) Fail(kTag, "{}: cannot create: {}", tmp_, std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::Abort(const char* what) {
  const int err = errno;
  ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  Fail(kTag, "{}: {} failed: {}", tmp_, what, std::strerror(err));
}

void AtomicFileWriter::Append(const void* data, size_t n) {
  MOE_CHECK(fd_ >= 0, kTag, "{}: append after commit or failure", tmp_);
  const auto* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd_, p + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      Abort("write");
    }
    done += static_cast<size_t>(w);
  }
  written_ += n;
}

void AtomicFileWriter::Commit() {
  MOE_CHECK(fd_ >= 0, kTag, "{}: commit after commit or failure", tmp_);
  if (::fsync(fd_) != 0) Abort("fsync");
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    Fail(kTag, "{}: close failed: {}", tmp_, std::strerror(err));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    Fail(kTag, "cannot rename {} to {}: {}", tmp_, path_, std::strerror(err));
  }
  FsyncDir(ParentDir(path_));
}

std::string ReadFile(const std::string& path, uint64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(kTag, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    Fail(kTag, "{}: not a regular file", path);
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    Fail(kTag, "{}: {} bytes is more than the limit of {} bytes", path, st.st_size, max_bytes);
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t r = ::read(fd, out.data() + done, out.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int err = errno;
      ::close(fd);
      Fail(kTag, "{}: read failed after {} of {} bytes: {}", path, done, out.size(),
           r == 0 ? "unexpected end of file" : std::strerror(err));
    }
    done += static_cast<size_t>(r);
  }
  ::close(fd);
  return out;
}

bool PathExists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

bool IsDirectory(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}

void MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  MOE_CHECK(!ec && IsDirectory(path), kTag, "cannot create directory {}: {}", path,
            ec ? ec.message() : "a file of that name exists");
}

void RemoveAll(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  MOE_CHECK(!ec, kTag, "cannot remove {}: {}", path, ec.message());
}

void RenameDurable(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    Fail(kTag, "cannot rename {} to {}: {}", from, to, std::strerror(errno));
  FsyncDir(ParentDir(to));
}

void ReplaceDirAtomic(const std::string& tmp, const std::string& dir) {
  if (!PathExists(dir)) {
    RenameDurable(tmp, dir);
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    FsyncDir(ParentDir(dir));
    RemoveAll(tmp);  // now holds the old folder
    return;
  }
  // Filesystems without RENAME_EXCHANGE: move the old folder aside first (a crash in between
  // leaves it under `dir.old`).
  const std::string old = dir + ".old";
  RemoveAll(old);
  RenameDurable(dir, old);
  RenameDurable(tmp, dir);
  RemoveAll(old);
}

MappedFile MapFileReadOnly(const std::string& path, std::string_view tag) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(tag, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) {
    const int err = errno;
    ::close(fd);
    Fail(tag, "{}: cannot stat: {}", path, std::strerror(err));
  }
  if (!S_ISREG(sb.st_mode)) {
    ::close(fd);
    Fail(tag, "{}: not a regular file", path);
  }
  MappedFile m;
  m.size = static_cast<size_t>(sb.st_size);
  if (m.size == 0) {
    ::close(fd);
    return m;
  }
  void* p = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) Fail(tag, "{}: cannot map {} bytes: {}", path, m.size, std::strerror(err));
  const size_t size = m.size;
  m.storage = std::shared_ptr<const void>(
      p, [size](const void* q) { ::munmap(const_cast<void*>(q), size); });
  m.data = static_cast<const uint8_t*>(p);
  return m;
}

}  // namespace moe::io
