#include "common/net/listener.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace derpd::net {

Result<HostPort> splitHostPort(const std::string& addr) {
  HostPort hp;
  std::string portStr;
  if (!addr.empty() && addr[0] == '[') {
    auto close = addr.find(']');
    if (close == std::string::npos || close + 1 >= addr.size() || addr[close + 1] != ':')
      return makeError("bad address \"" + addr + "\"");
    hp.host = addr.substr(1, close - 1);
    portStr = addr.substr(close + 2);
  } else {
    auto colon = addr.rfind(':');
    if (colon == std::string::npos) return makeError("address \"" + addr + "\" has no port");
    hp.host = addr.substr(0, colon);
    if (hp.host.find(':') != std::string::npos) return makeError("IPv6 address must be in brackets: \"" + addr + "\"");
    portStr = addr.substr(colon + 1);
  }
  if (portStr == "https") {
    hp.port = 443;
  } else if (portStr == "http") {
    hp.port = 80;
  } else {
    int p = -1;
    auto [end, ec] = std::from_chars(portStr.data(), portStr.data() + portStr.size(), p);
    if (ec != std::errc() || end != portStr.data() + portStr.size() || p < 0 || p > 65535)
      return makeError("bad port in address \"" + addr + "\"");
    hp.port = p;
  }
  return hp;
}

Result<int> listenTcp(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string portStr = std::to_string(port);
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), portStr.c_str(), &hints, &res);
  if (rc != 0) return makeError("resolve \"" + host + "\": " + gai_strerror(rc));
  // An empty host prefers the IPv6 wildcard with dual stack, as Go does.
  addrinfo* pick = res;
  if (host.empty()) {
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      if (ai->ai_family == AF_INET6) {
        pick = ai;
        break;
      }
    }
  }
  int fd = ::socket(pick->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::freeaddrinfo(res);
    return makeError(std::string("socket: ") + std::strerror(errno));
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (pick->ai_family == AF_INET6 && host.empty()) {
    int zero = 0;
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  }
  if (::bind(fd, pick->ai_addr, pick->ai_addrlen) != 0) {
    int e = errno;
    ::freeaddrinfo(res);
    ::close(fd);
    return makeError("bind [" + host + "]:" + portStr + ": " + std::strerror(e));
  }
  ::freeaddrinfo(res);
  if (::listen(fd, 4096) != 0) {
    int e = errno;
    ::close(fd);
    return makeError(std::string("listen: ") + std::strerror(e));
  }
  return fd;
}

int localPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return -1;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return -1;
}

}  // namespace derpd::net
