#include "common/util/fd.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

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

}  // namespace derpd
