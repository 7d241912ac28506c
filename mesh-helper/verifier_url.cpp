// The admission-controller client (-verify-client-url): one POST per check
// through POCO, every POCO/standard exception turned into an Outcome here.
//
// Time: POCO's socket timeouts bound each send and each receive, not the
// exchange, so a server trickling a byte at a time could stretch a check far
// past the timeout. We therefore connect the socket ourselves and arm a
// DeadlineGuard on its fd for the whole exchange (TLS handshake included).
// Name resolution (Poco::Net::SocketAddress → getaddrinfo) happens before
// and is bounded only by the resolver's own timeouts.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/IPAddress.h>
#include <Poco/Net/InvalidCertificateHandler.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/NetSSL.h>
#include <Poco/Net/SSLException.h>
#include <Poco/Net/SecureStreamSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/Net/StreamSocket.h>
#include <Poco/Net/VerificationErrorArgs.h>
#include <Poco/URI.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/util/text.hpp"
#include "common/log/log.hpp"
#include "verifier_internal.hpp"

namespace derpd::mesh::detail {

namespace {

constexpr char kDeadlineExceeded[] = "context deadline exceeded";

// Why OpenSSL rejected the peer's chain, for the error text: POCO's
// SSLException only says "certificate verify failed". Set by the handler
// below on the thread doing the handshake, read by the same thread.
thread_local std::string tlsVerifyWhy;

// Rejects every certificate OpenSSL could not verify, never asking anyone
// (POCO's default console handler would prompt), and records why.
class RejectInvalid : public Poco::Net::InvalidCertificateHandler {
 public:
  RejectInvalid() : InvalidCertificateHandler(false) {}
  void onInvalidCertificate(const void*, Poco::Net::VerificationErrorArgs& args) override {
    args.setIgnoreError(false);
    tlsVerifyWhy = args.errorMessage() + " (depth " + std::to_string(args.errorDepth()) + ": " +
                   args.certificate().subjectName() + ")";
  }
};

// Shuts the connection down (shutdown(2), so whichever POCO call is blocked
// on it returns at once) if the deadline comes before the guard is
// destroyed. It works on its own dup of the fd: POCO may close its fd while
// the guard is still armed (a session unwinding), and a closed number could
// be reused by another thread.
class DeadlineGuard {
 public:
  DeadlineGuard(int fd, Deadline deadline) : fd_(::fcntl(fd, F_DUPFD_CLOEXEC, 0)) {
    // Without a dup (EMFILE) POCO's per-operation timeouts still apply.
    if (fd_ >= 0) thread_ = std::thread([this, deadline] { run(deadline); });
  }
  ~DeadlineGuard() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  DeadlineGuard(const DeadlineGuard&) = delete;
  DeadlineGuard& operator=(const DeadlineGuard&) = delete;

  bool fired() const {
    std::lock_guard<std::mutex> lock(mu_);
    return fired_;
  }

 private:
  void run(Deadline deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_until(lock, deadline, [this] { return done_; })) return;
    fired_ = true;
    ::shutdown(fd_, SHUT_RDWR);
  }

  const int fd_;  // our dup of the connection's fd, or -1
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;   // guarded by mu_: the exchange is over
  bool fired_ = false;  // guarded by mu_: the deadline came first
  std::thread thread_;  // started last, once the members above exist
};

Poco::Timespan timespanUntil(Deadline deadline) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
  return Poco::Timespan(Poco::Timespan::TimeDiff(std::max<int64_t>(us.count(), 1000)));
}


}  // namespace

struct UrlClient::Impl {
  std::string url;             // as configured, for error texts
  std::string setupError;      // non-empty: every post() fails with it
  bool setupIsBadUrl = false;  // setupError is Go's NewRequest failure (never fail-open)
  bool https = false;
  std::string host;        // without brackets
  uint16_t port = 0;
  std::string hostHeader;  // Go's Request.Host: the URL's authority as written
  std::string dialAddr;    // host:port, for error texts
  std::string target;      // path and query, "/" when empty
  Poco::Net::Context::Ptr tls;  // https only; read-only after make()

  Outcome fail(Outcome::Kind kind, const std::string& why) const {
    Outcome o;
    o.kind = kind;
    o.error = "Post \"" + url + "\": " + printableLine(why);
    return o;
  }

  // A connected socket (TCP, then TLS for https), guarded by the caller.
  Poco::Net::StreamSocket connect(Deadline deadline) const {
    Poco::Net::SocketAddress addr(host, port);
    Poco::Net::StreamSocket sock;
    sock.connect(addr, timespanUntil(deadline));
    sock.setSendTimeout(timespanUntil(deadline));
    sock.setReceiveTimeout(timespanUntil(deadline));
    return sock;
  }

  Outcome exchange(Poco::Net::HTTPClientSession& session, const std::string& body, Deadline deadline,
                   size_t maxBody, const std::function<bool(std::string_view)>& enough) const {
    session.setKeepAlive(false);
    Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_POST, target,
                               Poco::Net::HTTPMessage::HTTP_1_1);
    req.set("Host", hostHeader);
    req.set("User-Agent", "Go-http-client/1.1");
    req.setKeepAlive(false);
    req.setContentLength(std::streamsize(body.size()));
    std::ostream& os = session.sendRequest(req);
    os.exceptions(std::ios::badbit);
    os.write(body.data(), std::streamsize(body.size()));
    os.flush();

    Poco::Net::HTTPResponse resp;
    std::istream& is = session.receiveResponse(resp);
    Outcome o;
    o.kind = Outcome::Kind::Answered;
    o.answer.status = int(resp.getStatus());
    o.answer.statusText = std::to_string(o.answer.status);
    if (!resp.getReason().empty()) o.answer.statusText += " " + printableLine(resp.getReason());
    if (o.answer.status == 200) readBody(is, deadline, maxBody, enough, o);
    return o;
  }

  // Go's decoder reads only until the first value is complete: a server
  // that then keeps the connection open costs nothing. A failure here comes
  // after the answer, so it is the body's (never fail-open).
  static void readBody(std::istream& is, Deadline deadline, size_t maxBody,
                       const std::function<bool(std::string_view)>& enough, Outcome& o) {
    std::string& body = o.answer.body;
    std::array<char, 4096> buf;
    try {
      is.exceptions(std::ios::badbit);
      while (body.size() < maxBody && !enough(body)) {
        if (Clock::now() >= deadline) {
          o.bodyError = kDeadlineExceeded;
          return;
        }
        const int c = is.get();  // blocks for one receive, which fills POCO's buffer
        if (c == std::char_traits<char>::eof()) return;
        body += char(c);
        const size_t room = std::min(buf.size(), maxBody - body.size());
        body.append(buf.data(), size_t(is.readsome(buf.data(), std::streamsize(room))));
      }
    } catch (const Poco::TimeoutException&) {
      o.bodyError = kDeadlineExceeded;
    } catch (const Poco::Exception& e) {
      o.bodyError = printableLine(e.displayText());
    } catch (const std::exception& e) {
      o.bodyError = printableLine(e.what());
    }
  }
};

UrlClient::UrlClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UrlClient::~UrlClient() = default;

namespace {

std::once_flag gSslInitOnce;

Poco::Net::Context::Ptr makeTlsContext(const std::string& host, const std::string& caFile) {
  std::call_once(gSslInitOnce, [] { Poco::Net::initializeSSL(); });
  // An empty caFile loads OpenSSL's default paths: the system roots.
  Poco::Net::Context::Ptr ctx = new Poco::Net::Context(
      Poco::Net::Context::TLS_CLIENT_USE, caFile, Poco::Net::Context::VERIFY_STRICT, 9, caFile.empty(),
      "HIGH:!aNULL:!eNULL:!MD5:!RC4:!3DES");
  ctx->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_2);
  // POCO's post-handshake name check, and OpenSSL's during the handshake.
  ctx->enableExtendedCertificateVerification(true);
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx->sslContext());
  Poco::Net::IPAddress ipAddr;
  const int set = Poco::Net::IPAddress::tryParse(host, ipAddr)
                      ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                      : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  if (set != 1) {
    ERR_clear_error();
    throw Poco::Net::SSLException("cannot set the expected host name " + host);
  }
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  ctx->setInvalidCertificateHandler(new RejectInvalid());
  return ctx;
}

// Splits the URL as Go's url.Parse + http.Transport would use it.
void parseUrl(UrlClient::Impl& u) {
  Poco::URI uri;
  try {
    uri = Poco::URI(u.url);
  } catch (const Poco::Exception& e) {
    u.setupError = "parse \"" + u.url + "\": " + e.displayText();
    u.setupIsBadUrl = true;
    return;
  }
  const std::string& scheme = uri.getScheme();  // POCO lower-cases it
  if (scheme != "http" && scheme != "https") {
    u.setupError = "unsupported protocol scheme \"" + scheme + "\"";
    return;
  }
  u.https = scheme == "https";
  u.host = uri.getHost();
  if (u.host.empty()) {
    u.setupError = "http: no Host in request URL";
    return;
  }
  u.port = uri.getPort();
  const bool v6 = u.host.find(':') != std::string::npos;
  u.hostHeader = v6 ? "[" + u.host + "]" : u.host;
  u.dialAddr = u.hostHeader + ":" + std::to_string(u.port);
  if (uri.getSpecifiedPort() != 0) u.hostHeader += ":" + std::to_string(uri.getSpecifiedPort());
  u.target = uri.getPathAndQuery();
  if (u.target.empty()) u.target = "/";
}

}  // namespace

std::shared_ptr<const UrlClient> UrlClient::make(const std::string& url, const std::string& caFile) {
  auto impl = std::make_unique<Impl>();
  impl->url = url;
  parseUrl(*impl);
  if (impl->setupError.empty() && impl->https) {
    try {
      impl->tls = makeTlsContext(impl->host, caFile);
    } catch (const Poco::Exception& e) {
      impl->setupError = "TLS setup (CA file \"" + caFile + "\"): " + e.displayText();
    } catch (const std::exception& e) {
      impl->setupError = "TLS setup (CA file \"" + caFile + "\"): " + e.what();
    }
  }
  if (!impl->setupError.empty()) LOG_ERR("verify-client-url {}: {}", url, impl->setupError);
  return std::shared_ptr<const UrlClient>(new UrlClient(std::move(impl)));
}

UrlClient::Outcome UrlClient::post(const std::string& body, Deadline deadline, size_t maxBody,
                                   const std::function<bool(std::string_view)>& enough) const {
  const Impl& u = *impl_;
  using Kind = Outcome::Kind;
  if (!u.setupError.empty()) {
    return u.fail(u.setupIsBadUrl ? Kind::BadRequest : Kind::Transport, u.setupError);
  }

  Poco::Net::StreamSocket sock;
  try {
    sock = u.connect(deadline);
  } catch (const Poco::TimeoutException&) {
    return u.fail(Kind::Transport, "dial tcp " + u.dialAddr + ": " + kDeadlineExceeded);
  } catch (const Poco::Exception& e) {
    return u.fail(Kind::Transport, "dial tcp " + u.dialAddr + ": " + e.displayText());
  } catch (const std::exception& e) {
    return u.fail(Kind::Transport, "dial tcp " + u.dialAddr + ": " + e.what());
  }

  DeadlineGuard guard(sock.impl()->sockfd(), deadline);
  auto failed = [&](const std::string& why) {
    return u.fail(Kind::Transport, guard.fired() ? std::string(kDeadlineExceeded) : why);
  };
  tlsVerifyWhy.clear();
  ERR_clear_error();  // POCO reports the first queued OpenSSL error
  try {
    // A plain HTTPClientSession over the TLS socket: HTTPSClientSession
    // refuses a socket that is already connected, and past the handshake
    // the session only calls the socket's (virtual) send and receive.
    Poco::Net::StreamSocket stream = sock;
    if (u.https) stream = Poco::Net::SecureStreamSocket::attach(sock, u.host, u.tls);
    Poco::Net::HTTPClientSession session(stream);
    Outcome o = u.exchange(session, body, deadline, maxBody, enough);
    // The guard's shutdown surfaces as a read error or as the body's end.
    if (guard.fired() && o.answer.status == 200 && !enough(o.answer.body)) {
      o.bodyError = kDeadlineExceeded;
    }
    return o;
  } catch (const Poco::Net::SSLException& e) {
    const std::string why = std::exchange(tlsVerifyWhy, std::string());
    return failed(e.displayText() + (why.empty() ? std::string() : ": " + why));
  } catch (const Poco::TimeoutException&) {
    return failed(kDeadlineExceeded);
  } catch (const Poco::Exception& e) {
    return failed(e.displayText());
  } catch (const std::exception& e) {
    return failed(e.what());
  }
}

}  // namespace derpd::mesh::detail
