// UDP sockets for STUN: bound by derpd (privileged) and handed to
// stun-worker as inherited fds, or bound by stun-worker when it runs alone.
// Included by the supervisor and stun-worker.
#pragma once

#include <sys/socket.h>

#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::net {

// Binds UDP sockets (non-blocking, close-on-exec, no SO_REUSEADDR) and
// returns their fds; the caller owns them. Errors name the address.
//  - empty host: two sockets, 0.0.0.0:port and [::]:port with IPV6_V6ONLY=1,
//    so IPv4 clients are served by a real IPv4 socket. With port 0 the IPv6
//    socket takes the port the kernel chose for IPv4 (a new pair is tried, at
//    most 8 times, when that port is taken on IPv6). When the host has no
//    IPv6 (EAFNOSUPPORT / EADDRNOTAVAIL) a warning is logged and only the
//    IPv4 socket is returned.
//  - otherwise one socket on that address: an IP literal (IPv6 without
//    brackets, optionally with a %zone; ::ffff:a.b.c.d binds IPv4) or a name,
//    of whose addresses the first IPv4 one is preferred (Go's "udp").
Result<std::vector<int>> listenUdp(const std::string& host, int port);

// Checks that an inherited fd is an AF_INET/AF_INET6 datagram socket and
// makes it non-blocking and close-on-exec.
Result<void> adoptUdpSocket(int fd);

// "1.2.3.4:5" or "[::1]:5" ("[fe80::1%eth0]:5" with a scope); "?" for other families.
std::string formatSockaddr(const sockaddr_storage& ss);
// The bound address of a socket in that form; "" when getsockname fails.
std::string localAddress(int fd);

}  // namespace derpd::net
