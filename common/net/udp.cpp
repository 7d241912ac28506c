#include "common/net/udp.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log/log.hpp"
#include "common/net/listener.hpp"

namespace derpd::net {

namespace {

constexpr int kPairAttempts = 8;

struct BindResult {
  int fd = -1;
  int err = 0;  // errno of the failing call when fd < 0
  std::string message;
};

// One non-blocking, close-on-exec UDP socket bound to `addr`. IPv6 sockets
// are IPv6-only: IPv4 traffic belongs to an IPv4 socket.
BindResult bindOne(const sockaddr_storage& addr) {
  BindResult r;
  const socklen_t len = addr.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  int fd = ::socket(addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    r.err = errno;
    r.message = "socket for udp " + formatSockaddr(addr) + ": " + std::strerror(r.err);
    return r;
  }
  if (addr.ss_family == AF_INET6) {
    int one = 1;
    if (::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
      r.err = errno;
      r.message = "IPV6_V6ONLY on udp " + formatSockaddr(addr) + ": " + std::strerror(r.err);
      ::close(fd);
      return r;
    }
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    r.err = errno;
    r.message = "bind udp " + formatSockaddr(addr) + ": " + std::strerror(r.err);
    ::close(fd);
    return r;
  }
  r.fd = fd;
  return r;
}

sockaddr_storage anyAddr(int family, int port) {
  sockaddr_storage ss{};
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_ANY);
    sin->sin_port = htons(uint16_t(port));
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_addr = in6addr_any;
    sin6->sin6_port = htons(uint16_t(port));
  }
  return ss;
}

bool ipv6Unavailable(int err) { return err == EAFNOSUPPORT || err == EADDRNOTAVAIL || err == EPROTONOSUPPORT; }

// 0.0.0.0:port and [::]:port (same port, also when port is 0).
Result<std::vector<int>> listenWildcard(int port) {
  for (int attempt = 0; attempt < kPairAttempts; attempt++) {
    BindResult v4 = bindOne(anyAddr(AF_INET, port));
    if (v4.fd < 0) return makeError(v4.message);
    const int p = localPort(v4.fd);
    if (p <= 0) {
      ::close(v4.fd);
      return makeError(std::string("getsockname on udp 0.0.0.0: ") + std::strerror(errno));
    }
    BindResult v6 = bindOne(anyAddr(AF_INET6, p));
    if (v6.fd >= 0) return std::vector<int>{v4.fd, v6.fd};
    if (ipv6Unavailable(v6.err)) {
      LOG_WARN("no IPv6 ({}): STUN on IPv4 only", v6.message);
      return std::vector<int>{v4.fd};
    }
    ::close(v4.fd);
    if (!(port == 0 && v6.err == EADDRINUSE)) return makeError(v6.message);
  }
  return makeError("udp port 0: no port free on both 0.0.0.0 and [::] after " +
                   std::to_string(kPairAttempts) + " attempts");
}

}  // namespace

std::string formatSockaddr(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(sin->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
    std::string host = buf;
    if (sin6->sin6_scope_id != 0) {
      char ifname[IF_NAMESIZE] = {};
      if (::if_indextoname(sin6->sin6_scope_id, ifname)) {
        host += "%" + std::string(ifname);
      } else {
        host += "%" + std::to_string(sin6->sin6_scope_id);
      }
    }
    return "[" + host + "]:" + std::to_string(ntohs(sin6->sin6_port));
  }
  return "?";
}

std::string localAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  return formatSockaddr(ss);
}

Result<std::vector<int>> listenUdp(const std::string& host, int port) {
  if (port < 0 || port > 65535) return makeError("udp port " + std::to_string(port) + " out of range");
  if (host.empty()) return listenWildcard(port);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string portStr = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), portStr.c_str(), &hints, &res);
  if (rc != 0) return makeError("resolve udp \"" + host + "\": " + gai_strerror(rc));
  const addrinfo* pick = nullptr;
  for (const addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      pick = ai;
      break;
    }
    if (ai->ai_family == AF_INET6 && !pick) pick = ai;
  }
  if (!pick) {
    ::freeaddrinfo(res);
    return makeError("resolve udp \"" + host + "\": no IPv4 or IPv6 address");
  }
  sockaddr_storage ss{};
  std::memcpy(&ss, pick->ai_addr, std::min<size_t>(pick->ai_addrlen, sizeof ss));
  ::freeaddrinfo(res);
  // ::ffff:a.b.c.d is an IPv4 address (Go binds it as one).
  if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
      sockaddr_in sin{};
      sin.sin_family = AF_INET;
      sin.sin_port = sin6->sin6_port;
      std::memcpy(&sin.sin_addr, sin6->sin6_addr.s6_addr + 12, 4);
      ss = {};
      std::memcpy(&ss, &sin, sizeof sin);
    }
  }
  BindResult b = bindOne(ss);
  if (b.fd < 0) return makeError(b.message);
  return std::vector<int>{b.fd};
}

Result<void> adoptUdpSocket(int fd) {
  int type = 0, domain = 0, protocol = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    return makeError("fd " + std::to_string(fd) + ": not a socket (" + std::strerror(errno) + ")");
  }
  len = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    return makeError("fd " + std::to_string(fd) + ": SO_DOMAIN: " + std::strerror(errno));
  }
  len = sizeof protocol;
  if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) != 0) {
    return makeError("fd " + std::to_string(fd) + ": SO_PROTOCOL: " + std::strerror(errno));
  }
  if (type != SOCK_DGRAM || protocol != IPPROTO_UDP || (domain != AF_INET && domain != AF_INET6)) {
    return makeError("fd " + std::to_string(fd) + " is not an IPv4/IPv6 UDP socket");
  }
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
    return makeError("fd " + std::to_string(fd) + ": O_NONBLOCK: " + std::strerror(errno));
  }
  int fdfl = ::fcntl(fd, F_GETFD);
  if (fdfl < 0 || ::fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) != 0) {
    return makeError("fd " + std::to_string(fd) + ": FD_CLOEXEC: " + std::strerror(errno));
  }
  return {};
}

}  // namespace derpd::net
