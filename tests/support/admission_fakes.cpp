// The fakes share one tiny HTTP/1.1 server (FakeHttpServer): a thread
// polling the listening socket, an eventfd that stops it, and every
// connection through Reading -> (Writing -> Draining | Hung) -> closed.
#include "admission_fakes.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <thread>
#include <utility>

namespace derpd::test {

namespace detail {

// What a handler says to do with a request.
struct FakeAnswer {
  int status = 200;
  std::string reason = "OK";
  std::string contentType = "application/json";
  std::string body;
  bool hang = false;  // never answer
};

namespace {

constexpr size_t kMaxConns = 64;
constexpr size_t kDrainMax = 1 << 20;  // what we read after answering, at most

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

std::string serialize(const FakeAnswer& a) {
  return "HTTP/1.1 " + std::to_string(a.status) + " " + a.reason + "\r\nContent-Type: " + a.contentType +
         "\r\nContent-Length: " + std::to_string(a.body.size()) + "\r\nConnection: close\r\n\r\n" + a.body;
}

FakeAnswer errorAnswer(int status, const char* reason) {
  return FakeAnswer{status, reason, "text/plain; charset=utf-8", std::string(reason) + "\n", false};
}

// Content-Length of a request: digits only, at most kFakeMaxBody. -1 bad,
// -2 too large.
long long requestBodyLength(const http::RequestHead& head) {
  const std::string* v = head.get("Content-Length");
  if (v == nullptr) return head.get("Transfer-Encoding") != nullptr ? -1 : 0;
  if (v->empty() || v->size() > 9) return v->size() > 9 ? -2 : -1;
  if (!std::all_of(v->begin(), v->end(), [](char c) { return c >= '0' && c <= '9'; })) return -1;
  const long long n = std::stoll(*v);
  return n > static_cast<long long>(kFakeMaxBody) ? -2 : n;
}

}  // namespace

using Handler = std::function<FakeAnswer(const RecordedRequest&)>;

class FakeHttpServer {
 public:
  // Takes a bound, listening, non-blocking socket.
  FakeHttpServer(int listenFd, Handler handler) : listenFd_(listenFd), handler_(std::move(handler)) {
    wakeFd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakeFd_ < 0) {
      ::close(listenFd_);
      fail("eventfd");
    }
    thread_ = std::thread([this] { run(); });
  }
  ~FakeHttpServer() {
    const uint64_t one = 1;
    if (::write(wakeFd_, &one, sizeof(one)) != sizeof(one)) std::abort();  // cannot stop the thread
    thread_.join();
    ::close(wakeFd_);
  }
  FakeHttpServer(const FakeHttpServer&) = delete;
  FakeHttpServer& operator=(const FakeHttpServer&) = delete;

  std::vector<RecordedRequest> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  size_t requestCount() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.size();
  }
  bool waitForRequests(size_t n, std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
  }

 private:
  enum class State { Reading, Writing, Draining, Hung, Closed };
  struct Conn {
    int fd = -1;
    State state = State::Reading;
    std::string in;     // request bytes so far (Reading)
    std::string out;    // the answer (Writing)
    size_t outOff = 0;
    size_t drained = 0;  // bytes discarded after answering
  };

  // Owned by the server thread, like every Conn.
  void run() {
    std::vector<Conn> conns;
    while (true) {
      std::vector<pollfd> fds;
      fds.push_back({wakeFd_, POLLIN, 0});
      fds.push_back({listenFd_, short(conns.size() < kMaxConns ? POLLIN : 0), 0});
      for (const Conn& c : conns) {
        fds.push_back({c.fd, short(c.state == State::Writing ? POLLOUT : POLLIN), 0});
      }
      if (::poll(fds.data(), fds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[0].revents != 0) break;
      for (size_t i = 0; i < conns.size(); ++i) {
        if (fds[i + 2].revents != 0) onReady(conns[i]);
      }
      if (fds[1].revents & POLLIN) acceptOne(conns);
      std::erase_if(conns, [](const Conn& c) { return c.state == State::Closed; });
    }
    for (Conn& c : conns) ::close(c.fd);
    ::close(listenFd_);
  }

  void acceptOne(std::vector<Conn>& conns) {
    const int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    Conn c;
    c.fd = fd;
    conns.push_back(std::move(c));
  }

  void onReady(Conn& c) {
    switch (c.state) {
      case State::Reading: onReadable(c); break;
      case State::Writing: onWritable(c); break;
      case State::Draining:
      case State::Hung: discard(c); break;
      case State::Closed: break;
    }
  }

  void close(Conn& c) {
    ::close(c.fd);
    c.state = State::Closed;
  }

  void respond(Conn& c, const FakeAnswer& a) {
    c.out = serialize(a);
    c.outOff = 0;
    c.state = State::Writing;
    onWritable(c);
  }

  void onReadable(Conn& c) {
    char buf[16 * 1024];
    const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) return close(c);
    c.in.append(buf, size_t(n));

    auto p = http::parseRequestHead(c.in, kFakeMaxHead);
    if (p.status == http::ParseStatus::Incomplete) return;
    if (p.status == http::ParseStatus::TooLarge) {
      return respond(c, errorAnswer(431, "Request Header Fields Too Large"));
    }
    if (p.status == http::ParseStatus::Invalid) return respond(c, errorAnswer(400, "Bad Request"));
    const long long len = requestBodyLength(p.head);
    if (len == -2) return respond(c, errorAnswer(413, "Request Entity Too Large"));
    if (len < 0) return respond(c, errorAnswer(400, "Bad Request"));
    if (c.in.size() < p.head.headLen + size_t(len)) return;

    RecordedRequest req{p.head.method, p.head.target, std::move(p.head.headers),
                        c.in.substr(p.head.headLen, size_t(len))};
    c.in.clear();
    const FakeAnswer a = handler_(req);
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(std::move(req));
    }
    cv_.notify_all();  // recorded before the client can see any answer
    if (a.hang) {
      c.state = State::Hung;
      return;
    }
    respond(c, a);
  }

  void onWritable(Conn& c) {
    while (c.outOff < c.out.size()) {
      const ssize_t n = ::send(c.fd, c.out.data() + c.outOff, c.out.size() - c.outOff, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) return close(c);
      c.outOff += size_t(n);
    }
    // Half-close, then wait for the client's close: closing with unread
    // bytes in our receive queue would reset the connection and could
    // destroy the answer before the client reads it.
    ::shutdown(c.fd, SHUT_WR);
    c.state = State::Draining;
  }

  void discard(Conn& c) {
    char buf[16 * 1024];
    const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) return close(c);
    c.drained += size_t(n);
    if (c.drained > kDrainMax) close(c);
  }

  const int listenFd_;   // owned; closed by the server thread when it ends
  int wakeFd_ = -1;      // eventfd: written once, by the destructor
  const Handler handler_;  // called on the server thread
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<RecordedRequest> requests_;  // guarded by mu_
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace detail

const std::string* RecordedRequest::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (http::iequals(h.name, name)) return &h.value;
  }
  return nullptr;
}

// ------------------------------------------------------------ admission --

namespace {

detail::FakeAnswer admissionAnswer(FakeAdmissionServer::Mode mode) {
  using Mode = FakeAdmissionServer::Mode;
  switch (mode) {
    case Mode::Allow: return {200, "OK", "application/json", "{\"Allow\":true}", false};
    case Mode::Deny: return {200, "OK", "application/json", "{\"Allow\":false}", false};
    case Mode::Garbage: return {200, "OK", "text/plain; charset=utf-8", "not json at all", false};
    case Mode::Status500:
      return {500, "Internal Server Error", "text/plain; charset=utf-8", "admission backend broken\n", false};
    case Mode::Hang: break;
  }
  return {0, "", "", "", true};
}

int listenLoopback(int* port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) detail::fail("socket");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    detail::fail("bind 127.0.0.1:0");
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

}  // namespace

FakeAdmissionServer::FakeAdmissionServer(Mode mode) : mode_(mode) {
  const int fd = listenLoopback(&port_);
  server_ = std::make_unique<detail::FakeHttpServer>(
      fd, [this](const RecordedRequest&) { return admissionAnswer(mode_.load()); });
}

FakeAdmissionServer::~FakeAdmissionServer() = default;

void FakeAdmissionServer::setMode(Mode mode) { mode_.store(mode); }
FakeAdmissionServer::Mode FakeAdmissionServer::mode() const { return mode_.load(); }
std::string FakeAdmissionServer::url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/admit"; }
std::vector<RecordedRequest> FakeAdmissionServer::requests() const { return server_->requests(); }
size_t FakeAdmissionServer::requestCount() const { return server_->requestCount(); }
bool FakeAdmissionServer::waitForRequests(size_t n, std::chrono::milliseconds timeout) const {
  return server_->waitForRequests(n, timeout);
}

// ------------------------------------------------------------- LocalAPI --

namespace {

constexpr char kWhoisPath[] = "/localapi/v0/whois";
constexpr char kTooOldBody[] = "{\"error\":\"invalid 'addr' parameter\"}";

int listenUnix(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(sa.sun_path)) {
    errno = ENAMETOOLONG;
    detail::fail("unix socket " + path);
  }
  std::memcpy(sa.sun_path, path.data(), path.size());
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) detail::fail("unlink " + path);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) detail::fail("socket");
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || ::chmod(path.c_str(), 0666) != 0 ||
      ::listen(fd, 64) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    detail::fail("bind " + path);
  }
  return fd;
}

}  // namespace

FakeLocalApi::FakeLocalApi(std::string socketPath) : path_(std::move(socketPath)) {
  const int fd = listenUnix(path_);
  server_ = std::make_unique<detail::FakeHttpServer>(
      fd, [this](const RecordedRequest& req) { return answer(req); });
}

FakeLocalApi::~FakeLocalApi() {
  server_.reset();
  ::unlink(path_.c_str());
}

void FakeLocalApi::addKnownKey(const crypto::NodePublic& key) {
  std::lock_guard<std::mutex> lock(mu_);
  known_.insert(key);
}
void FakeLocalApi::setTooOld(bool tooOld) { tooOld_.store(tooOld); }
void FakeLocalApi::setHang(bool hang) { hang_.store(hang); }
std::vector<RecordedRequest> FakeLocalApi::requests() const { return server_->requests(); }
size_t FakeLocalApi::requestCount() const { return server_->requestCount(); }
bool FakeLocalApi::waitForRequests(size_t n, std::chrono::milliseconds timeout) const {
  return server_->waitForRequests(n, timeout);
}

// tailscaled's whois handler: addr is a node key here (an IP:port there);
// what it cannot parse is "invalid 'addr' parameter".
detail::FakeAnswer FakeLocalApi::answer(const RecordedRequest& req) const {
  if (hang_.load()) return {0, "", "", "", true};
  const std::string_view target(req.target);
  const size_t q = target.find('?');
  if (target.substr(0, q) == "/localapi/v0/derpmap") {
    std::lock_guard<std::mutex> lock(mu_);
    if (derpMap_.empty()) return {404, "Not Found", "text/plain; charset=utf-8", "404 page not found\n"};
    return {200, "OK", "application/json", derpMap_};
  }
  if (target.substr(0, q) != kWhoisPath) {
    return {404, "Not Found", "text/plain; charset=utf-8", "404 page not found\n"};
  }
  const detail::FakeAnswer bad{400, "Bad Request", "application/json", kTooOldBody};
  if (tooOld_.load() || q == std::string_view::npos) return bad;
  const auto addr = http::queryValue(target.substr(q + 1), "addr");
  if (!addr) return bad;
  auto key = crypto::NodePublic::parseText(*addr);
  if (!key) return bad;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (known_.count(*key) == 0) return {404, "Not Found", "text/plain; charset=utf-8", "peer not found\n"};
  }
  const std::string text = key->toText();
  return {200, "OK", "application/json",
          "{\"Node\":{\"ID\":1,\"Key\":\"" + text +
              "\"},\"UserProfile\":{\"ID\":1,\"LoginName\":\"test@example.com\"}}"};
}

void FakeLocalApi::setDerpMap(std::string json) {
  std::lock_guard<std::mutex> lock(mu_);
  derpMap_ = std::move(json);
}

// ------------------------------------------------------------- document --

FakeDocumentServer::FakeDocumentServer() {
  const int fd = listenLoopback(&port_);
  server_ = std::make_unique<detail::FakeHttpServer>(fd, [this](const RecordedRequest&) {
    std::lock_guard<std::mutex> lock(mu_);
    return detail::FakeAnswer{status_, reason_, type_, body_, false};
  });
}

FakeDocumentServer::~FakeDocumentServer() = default;

void FakeDocumentServer::setAnswer(int status, std::string reason, std::string body, std::string contentType) {
  std::lock_guard<std::mutex> lock(mu_);
  status_ = status;
  reason_ = std::move(reason);
  body_ = std::move(body);
  type_ = std::move(contentType);
}

std::string FakeDocumentServer::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}
size_t FakeDocumentServer::requestCount() const { return server_->requestCount(); }
bool FakeDocumentServer::waitForRequests(size_t n, std::chrono::milliseconds timeout) const {
  return server_->waitForRequests(n, timeout);
}

}  // namespace derpd::test
