// Private to the DERP client library (common/client): URL parsing and the
// byte stream under DERP (non-blocking TCP, optionally OpenSSL 3 TLS), with
// every operation bounded by a deadline. Runs in whatever process uses the
// client (tests, derpd-probe, derpd-bench); no privileges needed.
#pragma once

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::client {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// Error text of a read or poll that reached its deadline.
inline constexpr std::string_view kTimeoutError = "timeout";
// Error text of a write that reached its deadline.
inline constexpr std::string_view kWriteTimeoutError = "write timeout";

struct ParsedUrl {
  bool tls = false;        // https
  std::string host;        // without brackets, e.g. "::1"
  bool hostIsIp = false;   // IPv4 or IPv6 literal
  uint16_t port = 0;       // explicit or the scheme default (80/443)
  std::string authority;   // host[:port] exactly as written (Host header)
  std::string target;      // path and query as written; "/derp" when empty
};

// "http://host[:port][/path]" or "https://…"; host is a DNS name, an IPv4
// literal or a bracketed IPv6 literal. Scheme is case-insensitive.
Result<ParsedUrl> parseUrl(std::string_view url);

struct HostPort {
  std::string host;  // without brackets
  uint16_t port = 0;
};
// "host:port", "1.2.3.4:port" or "[v6]:port"; the port is required.
Result<HostPort> parseHostPort(std::string_view s);

// True for an IPv4 dotted quad or an IPv6 literal (no brackets).
bool isIpLiteral(std::string_view host);

struct TlsOptions {
  // SNI and the name verified against the leaf. An IP literal is verified
  // against the IP SANs and sends no SNI.
  std::string serverName;
  std::string caFile;  // PEM; empty = OpenSSL default paths
  bool insecureSkipVerify = false;
  bool maxTls12 = false;  // offer TLS 1.2 at most
};

// One TCP connection, plain or TLS. Not thread-safe. Reads and writes poll
// the non-blocking socket until their deadline; SIGPIPE is never raised.
class Transport {
 public:
  // Resolves host (getaddrinfo) and connects to the first address that
  // answers before the deadline.
  static Result<std::unique_ptr<Transport>> dial(const std::string& host, uint16_t port,
                                                 Deadline deadline);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // TLS 1.2+ client handshake, no ALPN offered.
  Result<void> startTls(const TlsOptions& opts, Deadline deadline);

  // Reads what is available (at most n bytes), waiting until the deadline.
  // Returns the count, 0 at EOF (also for a reset connection). Error
  // kTimeoutError when nothing arrived in time.
  Result<size_t> readSome(uint8_t* buf, size_t n, Deadline deadline);
  // Writes all of data; kWriteTimeoutError when the peer stops reading.
  Result<void> writeAll(ByteView data, Deadline deadline);

  // Best-effort TLS close_notify (never waits), then closes the socket.
  void close();

  int fd() const { return fd_; }
  bool isTls() const { return ssl_ != nullptr; }
  SSL* ssl() const { return ssl_; }

 private:
  explicit Transport(int fd) : fd_(fd) {}
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

// Drains OpenSSL's thread-local error queue into one string ("" if empty).
std::string drainSslErrors();

// Empties OpenSSL's thread-local error queue if anything is in it, as
// SSL_get_error() needs before each I/O call. On the per-packet paths:
// ERR_clear_error() itself walks every slot of the queue, even when it is
// empty, where peeking is one look.
inline void clearSslErrors() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

}  // namespace derpd::client
