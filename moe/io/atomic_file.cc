#include "moe/io/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "moe/core/error.h"

namespace moe::io {

void WriteFileAtomic(const std::string& path, std::string_view bytes) {
  constexpr std::string_view kTag = "io";
  // A unique name, so two writers of one path cannot interleave in the same temporary file.
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) Fail(kTag, "{}: cannot create a temporary file: {}", path, std::strerror(errno));
  auto fail = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    Fail(kTag, "{}: {} failed: {}", tmp, what, std::strerror(err));
  };
  if (::fchmod(fd, 0644) != 0) fail("fchmod");  // mkstemp creates 0600
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write");
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) fail("fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    Fail(kTag, "{}: close failed: {}", tmp, std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    Fail(kTag, "cannot rename {} to {}: {}", tmp, path, std::strerror(err));
  }
}

}  // namespace moe::io
