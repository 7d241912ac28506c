// TCP listening sockets: bound by derpd (privileged) and handed to
// derp-worker as inherited fds, or bound by derp-worker when it runs alone.
#pragma once

#include <string>

#include "common/util/result.hpp"

namespace derpd::net {

// "host:port", "[v6]:port" or ":port" (empty host = all addresses, dual
// stack); "https"/"http" are accepted as ports.
struct HostPort {
  std::string host;
  int port = 0;
};
Result<HostPort> splitHostPort(const std::string& addr);

// Binds and listens (non-blocking, close-on-exec, SO_REUSEADDR, backlog
// 4096). Errors name the address.
Result<int> listenTcp(const std::string& host, int port);
// The local port of a bound socket, or -1.
int localPort(int fd);

}  // namespace derpd::net
