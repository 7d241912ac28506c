#include "common/util/fd.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace derpd {

Result<std::string> readAllAndClose(int fd, size_t maxBytes, const std::string& what) {
  std::string data;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || data.size() + size_t(std::max<ssize_t>(n, 0)) > maxBytes) {
      const std::string err = n < 0 ? std::strerror(errno) : "more than " + std::to_string(maxBytes) + " bytes";
      ::close(fd);
      std::fill(data.begin(), data.end(), '\0');
      return makeError(what + ": " + err);
    }
    if (n == 0) break;
    data.append(buf, size_t(n));
  }
  ::close(fd);
  return data;
}

static Result<void> writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return makeError(std::string("write: ") + std::strerror(errno));
    }
    data.remove_prefix(size_t(n));
  }
  return okResult();
}

// As Go's atomicfile.WriteFile: a temp file in the same directory, synced,
// chmod'ed, then renamed over the target.
Result<void> writeFileAtomic(const std::string& path, std::string_view data, mode_t mode) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::string tmpl = (dir / (target.filename().string() + ".tmpXXXXXX")).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return makeError("create temp file in " + dir.string() + ": " + std::strerror(errno));
  auto fail = [&](const std::string& what) -> Result<void> {
    int saved = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    return makeError(what + ": " + std::strerror(saved));
  };
  if (::fchmod(fd, mode) != 0) return fail("chmod " + tmpl);
  if (auto r = writeAll(fd, data); !r) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    return makeError(tmpl + ": " + r.error());
  }
  if (::fsync(fd) != 0) return fail("fsync " + tmpl);
  if (::close(fd) != 0) {
    int saved = errno;
    ::unlink(tmpl.c_str());
    return makeError("close " + tmpl + ": " + std::strerror(saved));
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(tmpl.c_str());
    return makeError("rename " + tmpl + " -> " + path + ": " + std::strerror(saved));
  }
  return okResult();
}

Result<std::string> readFileLimited(const std::string& path, size_t maxBytes, bool* missing) {
  if (missing) *missing = false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT && missing) *missing = true;
    return makeError(path + ": " + std::strerror(errno));
  }
  return readAllAndClose(fd, maxBytes, path);
}

}  // namespace derpd
