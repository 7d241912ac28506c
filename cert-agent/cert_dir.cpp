#include "cert_dir.hpp"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "common/util/fd.hpp"

namespace derpd::certagent {

Result<CertDir> CertDir::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return makeError("-certdir " + path + ": " + std::strerror(errno));
  return CertDir(path, fd);
}

CertDir::CertDir(CertDir&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_), inotifyFd_(o.inotifyFd_) {
  o.fd_ = -1;
  o.inotifyFd_ = -1;
}

CertDir::~CertDir() {
  if (fd_ >= 0) ::close(fd_);
  if (inotifyFd_ >= 0) ::close(inotifyFd_);
}

Result<std::string> CertDir::read(std::string_view name, size_t maxBytes, bool* missing) const {
  if (missing) *missing = false;
  const std::string n(name);
  int fd = ::openat(fd_, n.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT && missing) *missing = true;
    std::string msg = pathOf(name) + ": " + std::strerror(e);
    if (e == EACCES) msg += " (cert-agent runs as uid " + std::to_string(::geteuid()) + ": make it readable by that user)";
    return makeError(msg);
  }
  return readAllAndClose(fd, maxBytes, pathOf(name));
}

Result<void> CertDir::writeAtomic(std::string_view name, std::string_view data, mode_t mode) const {
  std::random_device rd;
  const std::string tmp = "." + std::string(name) + ".tmp" + std::to_string(rd());
  int fd = ::openat(fd_, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    const int e = errno;
    std::string msg = "cannot write in " + path_ + ": " + std::strerror(e);
    if (e == EACCES) msg += " (cert-agent runs as uid " + std::to_string(::geteuid()) + ": make the directory writable by it)";
    return makeError(msg);
  }
  auto fail = [&](const char* what) -> Result<void> {
    const int e = errno;
    ::close(fd);
    ::unlinkat(fd_, tmp.c_str(), 0);
    return makeError(std::string(what) + " " + pathOf(tmp) + ": " + std::strerror(e));
  };
  if (::fchmod(fd, mode) != 0) return fail("chmod");
  while (!data.empty()) {
    ssize_t w = ::write(fd, data.data(), data.size());
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return fail("write");
    data.remove_prefix(size_t(w));
  }
  if (::fsync(fd) != 0) return fail("fsync");
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlinkat(fd_, tmp.c_str(), 0);
    return makeError("close " + pathOf(tmp) + ": " + std::strerror(e));
  }
  const std::string n(name);
  if (::renameat(fd_, tmp.c_str(), fd_, n.c_str()) != 0) {
    const int e = errno;
    ::unlinkat(fd_, tmp.c_str(), 0);
    return makeError("rename to " + pathOf(name) + ": " + std::strerror(e));
  }
  return okResult();
}

Result<int> CertDir::watch() {
  int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (in < 0) return makeError(std::string("inotify_init1: ") + std::strerror(errno));
  // By path: inotify has no *at() form. Called while derpd's privileges apply.
  if (::inotify_add_watch(in, path_.c_str(),
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB |
                              IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
    const int e = errno;
    ::close(in);
    return makeError("inotify watch on " + path_ + ": " + std::strerror(e));
  }
  inotifyFd_ = in;
  return in;
}

bool CertDir::drainEvents(std::initializer_list<std::string_view> names) {
  bool hit = false;
  alignas(inotify_event) char buf[8192];
  for (;;) {
    ssize_t n = ::read(inotifyFd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return hit;
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW)) hit = true;
      if (ev->len > 0) {
        std::string_view evName(ev->name);
        for (std::string_view want : names) {
          if (evName == want) hit = true;
        }
      }
      p += sizeof(inotify_event) + ev->len;
    }
  }
}

}  // namespace derpd::certagent
