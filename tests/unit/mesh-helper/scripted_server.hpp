// Test-only servers for verifier_test.cpp, for the answers the fakes in
// tests/support never give: a fixed byte string per connection (odd
// framing, broken HTTP), optionally trickled, optionally over TLS; and a
// Unix listener that never accepts. Header-only: the unit-test glob builds
// *_test.cpp files only.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/proto/http/http.hpp"
#include "common/tls/certs.hpp"

namespace derpd::test {

// A Unix socket that listens and never accepts: connects succeed (the
// backlog has room), nothing is ever read or answered.
class UnixListener {
 public:
  explicit UnixListener(std::string path) : path_(std::move(path)) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path_.data(), std::min(path_.size(), sizeof(sa.sun_path) - 1));
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || ::listen(fd_, 16) != 0) {
      throw std::runtime_error("UnixListener " + path_ + ": " + std::strerror(errno));
    }
  }
  ~UnixListener() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

// For each connection, in turn: reads one request (head, then its
// Content-Length body), writes `reply`, then closes (unless `holdOpen`:
// then it waits for the client to close). With `every` > 0 the reply goes
// out `trickleFrom` bytes at once, then one byte per `every` (pacing, not
// synchronisation). Destruction stops it at once, whatever it is doing.
class ScriptedServer {
 public:
  struct Listen {
    bool unix = false;
    std::string path;                       // unix
    const tls::CertBundle* cert = nullptr;  // tcp: serve TLS with this
  };
  static Listen tcp(const tls::CertBundle* cert = nullptr) { return Listen{false, "", cert}; }
  static Listen unixAt(std::string path) { return Listen{true, std::move(path), nullptr}; }

  ScriptedServer(Listen where, std::string reply, std::chrono::milliseconds every, size_t trickleFrom = 0,
                 bool holdOpen = false)
      : where_(std::move(where)), reply_(std::move(reply)), every_(every), trickleFrom_(trickleFrom),
        holdOpen_(holdOpen) {
    listen();
    if (where_.cert != nullptr) setUpTls();
    stop_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_ < 0) throw std::runtime_error("eventfd");
    thread_ = std::thread([this] { run(); });
  }
  ~ScriptedServer() {
    const uint64_t one = 1;
    if (::write(stop_, &one, sizeof(one)) != sizeof(one)) std::abort();
    thread_.join();
    ::close(stop_);
    ::close(listen_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (where_.unix) ::unlink(where_.path.c_str());
  }
  ScriptedServer(const ScriptedServer&) = delete;
  ScriptedServer& operator=(const ScriptedServer&) = delete;

  std::string url() const {
    return std::string(ctx_ != nullptr ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) + "/admit";
  }
  // The bytes of the last request read (head and body).
  std::string request() const {
    std::lock_guard<std::mutex> lock(mu_);
    return request_;
  }

 private:
  enum class Io { Ok, Stop };

  void listen() {
    if (where_.unix) {
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::memcpy(sa.sun_path, where_.path.data(), std::min(where_.path.size(), sizeof(sa.sun_path) - 1));
      ::unlink(where_.path.c_str());
      listen_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (listen_ < 0 || ::bind(listen_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
          ::listen(listen_, 16) != 0) {
        throw std::runtime_error("ScriptedServer " + where_.path + ": " + std::strerror(errno));
      }
      return;
    }
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_ < 0 || ::bind(listen_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
        ::listen(listen_, 16) != 0 || ::getsockname(listen_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      throw std::runtime_error(std::string("ScriptedServer tcp: ") + std::strerror(errno));
    }
    port_ = ntohs(sa.sin_port);
  }

  void setUpTls() {
    ctx_ = SSL_CTX_new(TLS_server_method());
    BIO* certs = BIO_new_mem_buf(where_.cert->chainPem.data(), int(where_.cert->chainPem.size()));
    BIO* key = BIO_new_mem_buf(where_.cert->keyPem.data(), int(where_.cert->keyPem.size()));
    X509* leaf = PEM_read_bio_X509(certs, nullptr, nullptr, nullptr);
    EVP_PKEY* pkey = PEM_read_bio_PrivateKey(key, nullptr, nullptr, nullptr);
    const bool ok = leaf != nullptr && pkey != nullptr && SSL_CTX_use_certificate(ctx_, leaf) == 1 &&
                    SSL_CTX_use_PrivateKey(ctx_, pkey) == 1;
    X509_free(leaf);
    EVP_PKEY_free(pkey);
    BIO_free(certs);
    BIO_free(key);
    if (!ok) throw std::runtime_error("ScriptedServer: cannot load the TLS bundle");
  }

  // Waits for `events` on fd, or `timeoutMs` (-1: no limit). Stop wins.
  Io wait(int fd, short events, int timeoutMs = -1) const {
    pollfd p[2] = {{stop_, POLLIN, 0}, {fd, events, 0}};
    while (::poll(p, fd >= 0 ? 2 : 1, timeoutMs) < 0) {
      if (errno != EINTR) return Io::Stop;
    }
    return p[0].revents != 0 ? Io::Stop : Io::Ok;
  }

  // One connection's byte stream, plain or TLS, over a non-blocking fd.
  struct Stream {
    const ScriptedServer* s;
    int fd;
    SSL* ssl = nullptr;

    // > 0 bytes, 0 EOF/error, -1 stop.
    ssize_t read(char* buf, size_t n) {
      while (true) {
        if (ssl == nullptr) {
          const ssize_t r = ::recv(fd, buf, n, 0);
          if (r >= 0) return r;
          if (errno != EAGAIN && errno != EINTR) return 0;
          if (s->wait(fd, POLLIN) == Io::Stop) return -1;
          continue;
        }
        const int r = SSL_read(ssl, buf, int(n));
        if (r > 0) return r;
        if (!retry(r)) return 0;
      }
    }
    bool write(const char* data, size_t n) {
      while (n > 0) {
        if (ssl == nullptr) {
          const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
          if (w > 0) {
            data += w;
            n -= size_t(w);
          } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (s->wait(fd, POLLOUT) == Io::Stop) return false;
          } else {
            return false;
          }
          continue;
        }
        const int w = SSL_write(ssl, data, int(n));
        if (w > 0) {
          data += w;
          n -= size_t(w);
        } else if (!retry(w)) {
          return false;
        }
      }
      return true;
    }
    bool handshake() {
      while (true) {
        const int r = SSL_accept(ssl);
        if (r == 1) return true;
        if (!retry(r)) return false;
      }
    }
    bool retry(int r) {
      const int err = SSL_get_error(ssl, r);
      ERR_clear_error();
      if (err == SSL_ERROR_WANT_READ) return s->wait(fd, POLLIN) == Io::Ok;
      if (err == SSL_ERROR_WANT_WRITE) return s->wait(fd, POLLOUT) == Io::Ok;
      return false;
    }
  };

  void run() {
    while (wait(listen_, POLLIN) == Io::Ok) {
      const int fd = ::accept4(listen_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) continue;
      Stream st{this, fd};
      if (ctx_ != nullptr) {
        st.ssl = SSL_new(ctx_);
        SSL_set_fd(st.ssl, fd);
      }
      const bool stop = serve(st);
      if (st.ssl != nullptr) SSL_free(st.ssl);
      ::close(fd);
      if (stop) return;
    }
  }

  // False when the connection is over; true when the server must stop.
  bool serve(Stream& st) {
    if (st.ssl != nullptr && !st.handshake()) return false;
    std::string in;
    char buf[16 * 1024];
    while (true) {  // one request: the head, then Content-Length bytes
      auto p = http::parseRequestHead(in, 64 << 10);
      if (p.status == http::ParseStatus::Complete) {
        const std::string* cl = p.head.get("Content-Length");
        const size_t want = p.head.headLen + (cl != nullptr ? std::stoul(*cl) : 0);
        if (in.size() >= want) break;
      } else if (p.status != http::ParseStatus::Incomplete) {
        break;
      }
      const ssize_t n = st.read(buf, sizeof(buf));
      if (n < 0) return true;
      if (n == 0) return false;
      in.append(buf, size_t(n));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      request_ = in;
    }
    if (!sendReply(st)) return wait(-1, 0, 0) == Io::Stop;
    if (holdOpen_) {
      while (true) {
        const ssize_t n = st.read(buf, sizeof(buf));
        if (n < 0) return true;
        if (n == 0) return false;
      }
    }
    if (st.ssl != nullptr) SSL_shutdown(st.ssl);
    return false;
  }

  bool sendReply(Stream& st) {
    if (every_.count() == 0) return st.write(reply_.data(), reply_.size());
    const size_t first = std::min(trickleFrom_, reply_.size());
    if (!st.write(reply_.data(), first)) return false;
    for (size_t i = first; i < reply_.size(); ++i) {
      if (wait(-1, 0, int(every_.count())) == Io::Stop) return false;
      if (!st.write(reply_.data() + i, 1)) return false;
    }
    return true;
  }

  const Listen where_;
  const std::string reply_;
  const std::chrono::milliseconds every_;
  const size_t trickleFrom_;
  const bool holdOpen_;
  int listen_ = -1;
  int port_ = 0;
  SSL_CTX* ctx_ = nullptr;  // read-only once the thread runs
  int stop_ = -1;           // eventfd written by the destructor
  mutable std::mutex mu_;
  std::string request_;  // guarded by mu_
  std::thread thread_;   // last: started once the members above exist
};

}  // namespace derpd::test
