#include "common/client/transport.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log/log.hpp"

namespace derpd::client {

namespace {

bool iequalsAscii(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

Result<uint16_t> parsePort(std::string_view s) {
  if (s.empty() || s.size() > 5) return makeError("invalid port \"" + std::string(s) + "\"");
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return makeError("invalid port \"" + std::string(s) + "\"");
    v = v * 10 + uint32_t(c - '0');
  }
  if (v == 0 || v > 65535) return makeError("invalid port \"" + std::string(s) + "\"");
  return uint16_t(v);
}

// Splits "host", "host:port", "[v6]" or "[v6]:port". `port` is empty when
// absent.
Result<void> splitAuthority(std::string_view a, std::string& host, std::string& port,
                            bool& bracketed) {
  bracketed = false;
  if (a.empty()) return makeError("empty host");
  if (a.front() == '[') {
    size_t close = a.find(']');
    if (close == std::string_view::npos) return makeError("missing ']' in host");
    host = std::string(a.substr(1, close - 1));
    std::string_view rest = a.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return makeError("garbage after ']' in host");
      port = std::string(rest.substr(1));
      if (port.empty()) return makeError("empty port");
    }
    bracketed = true;
    in6_addr a6;
    if (!::inet_pton(AF_INET6, host.c_str(), &a6)) {
      return makeError("invalid IPv6 literal \"" + host + "\"");
    }
    return okResult();
  }
  size_t colon = a.rfind(':');
  if (colon != std::string_view::npos) {
    if (a.find(':') != colon) return makeError("IPv6 literal must be bracketed");
    host = std::string(a.substr(0, colon));
    port = std::string(a.substr(colon + 1));
    if (port.empty()) return makeError("empty port");
  } else {
    host = std::string(a);
  }
  if (host.empty()) return makeError("empty host");
  for (char c : host) {
    if (c <= ' ' || c == '/' || c == '?' || c == '#' || c == '@' || c == '[' || c == ']' ||
        c == '\x7f') {
      return makeError("invalid character in host \"" + host + "\"");
    }
  }
  return okResult();
}

// Waits until fd is ready for `events` or the deadline passes.
Result<void> waitFd(int fd, short events, Deadline deadline) {
  for (;;) {
    auto now = Clock::now();
    if (now >= deadline) return makeError(std::string(kTimeoutError));
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, int(std::min<long long>(left, 1 << 30)));
    if (r > 0) return okResult();  // readiness, POLLERR or POLLHUP: the next call tells
    if (r < 0 && errno != EINTR) return makeError(std::string("poll: ") + std::strerror(errno));
  }
}

// A socket BIO that sends with MSG_NOSIGNAL: OpenSSL's own socket BIO uses
// write(2), which raises SIGPIPE on a closed peer.
int bioWrite(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  int fd = int(reinterpret_cast<intptr_t>(BIO_get_data(b)));
  ssize_t r;
  do {
    r = ::send(fd, data, size_t(len), MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(b);
    return -1;
  }
  return int(r);
}

int bioRead(BIO* b, char* data, int len) {
  BIO_clear_retry_flags(b);
  int fd = int(reinterpret_cast<intptr_t>(BIO_get_data(b)));
  ssize_t r;
  do {
    r = ::recv(fd, data, size_t(len), 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BIO_set_retry_read(b);
      return -1;
    }
    if (errno == ECONNRESET) return 0;  // treated as EOF, as for plain TCP
    return -1;
  }
  return int(r);
}

int bioPuts(BIO* b, const char* s) { return bioWrite(b, s, int(std::strlen(s))); }

long bioCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

int bioCreate(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

const BIO_METHOD* nosigpipeMethod() {
  static BIO_METHOD* m = [] {
    BIO_METHOD* meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "derpd socket");
    if (meth) {
      BIO_meth_set_write(meth, bioWrite);
      BIO_meth_set_read(meth, bioRead);
      BIO_meth_set_puts(meth, bioPuts);
      BIO_meth_set_ctrl(meth, bioCtrl);
      BIO_meth_set_create(meth, bioCreate);
    }
    return meth;
  }();
  return m;
}

std::string sslFailure(const char* op, SSL* ssl, int ret) {
  int e = SSL_get_error(ssl, ret);
  int savedErrno = errno;
  std::string queue = drainSslErrors();
  std::string msg = std::string(op) + ": ";
  if (e == SSL_ERROR_SYSCALL && queue.empty()) {
    msg += savedErrno ? std::strerror(savedErrno) : "unexpected eof";
  } else if (!queue.empty()) {
    msg += queue;
  } else {
    msg += "SSL error " + std::to_string(e);
  }
  return msg;
}

}  // namespace

std::string drainSslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  ERR_clear_error();
  return out;
}

bool isIpLiteral(std::string_view host) {
  std::string h(host);
  in_addr a4;
  in6_addr a6;
  return ::inet_pton(AF_INET, h.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, h.c_str(), &a6) == 1;
}

Result<ParsedUrl> parseUrl(std::string_view url) {
  ParsedUrl u;
  size_t sep = url.find("://");
  if (sep == std::string_view::npos) return makeError("url: missing scheme in \"" + std::string(url) + "\"");
  std::string_view scheme = url.substr(0, sep);
  if (iequalsAscii(scheme, "http")) {
    u.tls = false;
  } else if (iequalsAscii(scheme, "https")) {
    u.tls = true;
  } else {
    return makeError("url: unsupported scheme \"" + std::string(scheme) + "\"");
  }
  std::string_view rest = url.substr(sep + 3);
  size_t slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  std::string_view tail = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (size_t hash = tail.find('#'); hash != std::string_view::npos) tail = tail.substr(0, hash);
  if (authority.find('@') != std::string_view::npos) return makeError("url: userinfo not supported");
  std::string host, port;
  bool bracketed = false;
  if (auto r = splitAuthority(authority, host, port, bracketed); !r) {
    return makeError("url: " + r.error());
  }
  if (port.empty()) {
    u.port = u.tls ? 443 : 80;
  } else {
    auto p = parsePort(port);
    if (!p) return makeError("url: " + p.error());
    u.port = *p;
  }
  u.host = host;
  u.hostIsIp = bracketed || isIpLiteral(host);
  u.authority = std::string(authority);
  if (tail.empty()) {
    u.target = "/derp";
  } else if (tail.front() == '?') {
    u.target = "/derp" + std::string(tail);
  } else {
    u.target = std::string(tail);
  }
  for (char c : u.target) {
    if (c <= ' ' || c == '\x7f') return makeError("url: invalid character in path");
  }
  return u;
}

Result<HostPort> parseHostPort(std::string_view s) {
  std::string host, port;
  bool bracketed = false;
  if (auto r = splitAuthority(s, host, port, bracketed); !r) return std::move(r).takeError();
  if (port.empty()) return makeError("missing port in \"" + std::string(s) + "\"");
  auto p = parsePort(port);
  if (!p) return std::move(p).takeError();
  return HostPort{host, *p};
}

Result<std::unique_ptr<Transport>> Transport::dial(const std::string& host, uint16_t port,
                                                   Deadline deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_ADDRCONFIG;
  if (isIpLiteral(host)) hints.ai_flags = AI_NUMERICHOST;
  addrinfo* res = nullptr;
  std::string portStr = std::to_string(port);
  int gai = ::getaddrinfo(host.c_str(), portStr.c_str(), &hints, &res);
  if (gai != 0) {
    return makeError("resolve " + host + ": " + (gai == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(gai)));
  }
  std::string lastErr = "no addresses";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      lastErr = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    int r = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r < 0 && errno == EINPROGRESS) {
      if (auto w = waitFd(fd, POLLOUT, deadline); !w) {
        ::close(fd);
        ::freeaddrinfo(res);
        return makeError("connect " + host + ":" + portStr + ": " +
                         (w.error() == kTimeoutError ? std::string("timeout") : w.error()));
      }
      int soErr = 0;
      socklen_t len = sizeof(soErr);
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soErr, &len) < 0) soErr = errno;
      r = soErr ? -1 : 0;
      errno = soErr;
    }
    if (r < 0) {
      lastErr = std::strerror(errno);
      ::close(fd);
      continue;
    }
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // as Go's default
    ::freeaddrinfo(res);
    LOG_DEBUG("derp client: connected to {}:{}", host, port);
    return std::unique_ptr<Transport>(new Transport(fd));
  }
  ::freeaddrinfo(res);
  return makeError("connect " + host + ":" + portStr + ": " + lastErr);
}

Transport::~Transport() { close(); }

void Transport::close() {
  if (ssl_) {
    ERR_clear_error();
    if (fd_ >= 0) (void)SSL_shutdown(ssl_);  // one non-blocking attempt at close_notify
    SSL_free(ssl_);
    ssl_ = nullptr;
    ERR_clear_error();
  }
  if (ctx_) {
    SSL_CTX_free(ctx_);
    ctx_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

Result<void> Transport::startTls(const TlsOptions& opts, Deadline deadline) {
  ERR_clear_error();
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (!ctx_) return makeError("tls: SSL_CTX_new: " + drainSslErrors());
  SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
  if (opts.maxTls12) SSL_CTX_set_max_proto_version(ctx_, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
  // Whole records (or more) per read(2); readSome() calls SSL_read_ex
  // before it polls, so what was read ahead is never waited for.
  SSL_CTX_set_read_ahead(ctx_, 1);
  if (!opts.insecureSkipVerify) {
    int ok = opts.caFile.empty() ? SSL_CTX_set_default_verify_paths(ctx_)
                                 : SSL_CTX_load_verify_locations(ctx_, opts.caFile.c_str(), nullptr);
    if (ok != 1) {
      return makeError("tls: loading CA " + (opts.caFile.empty() ? std::string("defaults") : opts.caFile) +
                       ": " + drainSslErrors());
    }
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
  }
  ssl_ = SSL_new(ctx_);
  if (!ssl_) return makeError("tls: SSL_new: " + drainSslErrors());
  const BIO_METHOD* meth = nosigpipeMethod();
  if (!meth) return makeError("tls: BIO_meth_new failed");
  BIO* bio = BIO_new(meth);
  if (!bio) return makeError("tls: BIO_new: " + drainSslErrors());
  BIO_set_data(bio, reinterpret_cast<void*>(intptr_t(fd_)));
  SSL_set_bio(ssl_, bio, bio);

  bool ipName = isIpLiteral(opts.serverName);
  if (!opts.serverName.empty() && !ipName) {
    if (SSL_set_tlsext_host_name(ssl_, opts.serverName.c_str()) != 1) {
      return makeError("tls: setting SNI: " + drainSslErrors());
    }
  }
  if (!opts.insecureSkipVerify && !opts.serverName.empty()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = ipName ? X509_VERIFY_PARAM_set1_ip_asc(param, opts.serverName.c_str())
                    : X509_VERIFY_PARAM_set1_host(param, opts.serverName.c_str(), 0);
    if (ok != 1) return makeError("tls: setting verify name: " + drainSslErrors());
  }
  for (;;) {
    ERR_clear_error();
    int r = SSL_connect(ssl_);
    if (r == 1) break;
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (auto w = waitFd(fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline); !w) {
        drainSslErrors();
        return makeError("tls handshake: " + w.error());
      }
      continue;
    }
    long vr = SSL_get_verify_result(ssl_);
    std::string msg = sslFailure("tls handshake", ssl_, r);
    if (vr != X509_V_OK) {
      msg += " (certificate verify failed: " + std::string(X509_verify_cert_error_string(vr)) + ")";
    }
    if (msg.find("wrong version number") != std::string::npos || msg.find("packet length too long") != std::string::npos) {
      // What OpenSSL says when the answer to its ClientHello is not TLS.
      msg += " (the server did not answer in TLS: it serves plain HTTP, as a -dev node does; use an http:// URL, "
             "or --plain-http with derpd-probe)";
    }
    return makeError(msg);
  }
  ERR_clear_error();
  LOG_DEBUG("derp client: TLS {} established", SSL_get_version(ssl_));
  return okResult();
}

Result<size_t> Transport::readSome(uint8_t* buf, size_t n, Deadline deadline) {
  if (fd_ < 0) return makeError("closed");
  if (n == 0) return size_t(0);
  if (ssl_) {
    for (;;) {
      clearSslErrors();
      size_t got = 0;
      int r = SSL_read_ex(ssl_, buf, n, &got);
      if (r == 1) return got;
      int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return size_t(0);
      }
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        // SSL_read_ex first, then poll: bytes OpenSSL already decrypted are
        // returned without waiting on the socket.
        if (auto w = waitFd(fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline); !w) {
          return std::move(w).takeError();
        }
        continue;
      }
      if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && (errno == 0 || errno == ECONNRESET)) {
        return size_t(0);
      }
      return makeError(sslFailure("tls read", ssl_, r));
    }
  }
  for (;;) {
    ssize_t r = ::recv(fd_, buf, n, 0);
    if (r >= 0) return size_t(r);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (auto w = waitFd(fd_, POLLIN, deadline); !w) return std::move(w).takeError();
      continue;
    }
    if (errno == ECONNRESET) {
      LOG_DEBUG("derp client: connection reset by peer (reported as eof)");
      return size_t(0);
    }
    return makeError(std::string("read: ") + std::strerror(errno));
  }
}

Result<void> Transport::writeAll(ByteView data, Deadline deadline) {
  if (fd_ < 0) return makeError("closed");
  size_t off = 0;
  while (off < data.size()) {
    if (ssl_) {
      clearSslErrors();
      size_t wrote = 0;
      int r = SSL_write_ex(ssl_, data.data() + off, data.size() - off, &wrote);
      if (r == 1) {
        off += wrote;
        continue;
      }
      int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (auto w = waitFd(fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline); !w) {
          return makeError(w.error() == kTimeoutError ? std::string(kWriteTimeoutError) : w.error());
        }
        continue;
      }
      return makeError(sslFailure("tls write", ssl_, r));
    }
    ssize_t r = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (r >= 0) {
      off += size_t(r);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (auto w = waitFd(fd_, POLLOUT, deadline); !w) {
        return makeError(w.error() == kTimeoutError ? std::string(kWriteTimeoutError) : w.error());
      }
      continue;
    }
    return makeError(std::string("write: ") + std::strerror(errno));
  }
  return okResult();
}

}  // namespace derpd::client
