// The LocalAPI client: one HTTP/1.1 GET over tailscaled's Unix socket, as
// Go's LocalClient sends it, with every step bounded by one deadline.
// Hand-written rather than POCO: POCO has no Unix-socket HTTP session, and
// the exchange is small (one request, a response of a few KiB).
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include "common/proto/http/http.hpp"
#include "verifier_internal.hpp"

namespace derpd::mesh::detail {

namespace {

constexpr size_t kMaxHead = 64 << 10;
constexpr size_t kMaxChunkLine = 4096;  // Go's chunked reader limit
constexpr size_t kReadSize = 16 << 10;

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Go's syscall errors are lower case ("connect: no such file or directory").
std::string errnoText(int err) {
  std::string s = std::strerror(err);
  if (!s.empty() && s[0] >= 'A' && s[0] <= 'Z') s[0] = char(s[0] + 32);
  return s;
}

std::chrono::microseconds remaining(Deadline deadline) {
  return std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
}

// Waits until `fd` is ready for `events`. False when the deadline passed.
Result<bool> waitFor(int fd, short events, Deadline deadline) {
  while (true) {
    const auto left = remaining(deadline);
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    const int ms = int(std::min<int64_t>((left.count() + 999) / 1000, 60'000));
    const int rc = ::poll(&p, 1, ms);
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return makeError("poll: " + errnoText(errno));
  }
}

// A blocking connect bounded by SO_SNDTIMEO, then non-blocking I/O. Linux
// never reports EINPROGRESS for Unix sockets: a non-blocking connect to a
// full accept queue fails with EAGAIN at once, while a blocking one waits
// for room (up to SO_SNDTIMEO, then EAGAIN).
Result<Fd> dialUnix(const std::string& path, Deadline deadline) {
  const std::string what = "dial unix " + path + ": ";
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(sa.sun_path)) {
    return makeError(what + "connect: invalid argument (path length)");
  }
  std::memcpy(sa.sun_path, path.data(), path.size());
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return makeError(what + "socket: " + errnoText(errno));
  while (true) {
    const auto left = remaining(deadline);
    if (left.count() <= 0) return makeError(what + "connect: i/o timeout");
    timeval tv{};
    tv.tv_sec = time_t(left.count() / 1'000'000);
    tv.tv_usec = suseconds_t(left.count() % 1'000'000);
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
      return makeError(what + "setsockopt: " + errnoText(errno));
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) == 0) break;
    if (errno == EINTR) continue;  // nothing was queued yet: safe to retry
    if (errno == EAGAIN) return makeError(what + "connect: i/o timeout");
    return makeError(what + "connect: " + errnoText(errno));
  }
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return makeError(what + "fcntl: " + errnoText(errno));
  }
  return fd;
}

Result<void> sendAll(int fd, std::string_view data, Deadline deadline) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return makeError("write: " + errnoText(errno));
    auto ready = waitFor(fd, POLLOUT, deadline);
    if (!ready) return std::move(ready).takeError();
    if (!*ready) return makeError("context deadline exceeded");
  }
  return okResult();
}

// Appends what arrives to `buf` (never past kMaxLocalApiResponse). 0 = EOF.
Result<size_t> recvSome(int fd, std::string& buf, Deadline deadline) {
  if (buf.size() >= kMaxLocalApiResponse) return makeError("response larger than 1 MiB");
  const size_t want = std::min(kReadSize, kMaxLocalApiResponse - buf.size());
  const size_t old = buf.size();
  buf.resize(old + want);
  while (true) {
    const ssize_t n = ::recv(fd, buf.data() + old, want, 0);
    if (n >= 0) {
      buf.resize(old + size_t(n));
      return size_t(n);
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      buf.resize(old);
      return makeError("read: " + errnoText(errno));
    }
    auto ready = waitFor(fd, POLLIN, deadline);
    if (!ready || !*ready) {
      buf.resize(old);
      return ready ? makeError("context deadline exceeded") : std::move(ready).takeError();
    }
  }
}

// Incremental chunked transfer-coding decoder (RFC 9112 §7.1) over the
// bytes after the head; feed() resumes where it stopped, so a slow server
// costs linear work. Chunk extensions and trailers are skipped; bare LF
// line ends are accepted, as Go does.
class ChunkedBody {
 public:
  enum class State { More, Done, Bad };

  State feed(std::string_view in) {
    while (true) {
      if (step_ == Step::Data) {
        const size_t n = std::min(left_, in.size() - pos_);
        body_.append(in.substr(pos_, n));
        pos_ += n;
        left_ -= n;
        if (left_ > 0) return State::More;
        step_ = Step::DataEnd;
      }
      std::string_view line;
      switch (nextLine(in, line)) {
        case State::More: return State::More;
        case State::Bad: return State::Bad;
        case State::Done: break;
      }
      if (step_ == Step::DataEnd) {
        if (!line.empty()) return bad("malformed chunked encoding");
        step_ = Step::Size;
      } else if (step_ == Step::Size) {
        if (State s = sizeLine(line); s != State::More) return s;
      } else if (line.empty()) {  // Step::Trailer: an empty line ends the body
        return State::Done;
      }
    }
  }
  std::string& body() { return body_; }
  const std::string& error() const { return err_; }

 private:
  enum class Step { Size, Data, DataEnd, Trailer };

  State bad(std::string why) {
    err_ = std::move(why);
    return State::Bad;
  }
  // The next line without its CRLF/LF. Done when one was taken.
  State nextLine(std::string_view in, std::string_view& line) {
    const size_t lf = in.find('\n', pos_);
    if (lf == std::string_view::npos) {
      return in.size() - pos_ > kMaxChunkLine ? bad("chunk line too long") : State::More;
    }
    line = in.substr(pos_, lf - pos_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos_ = lf + 1;
    return State::Done;
  }
  // "<hex>[;ext]": More = go on decoding.
  State sizeLine(std::string_view line) {
    line = line.substr(0, line.find(';'));
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    if (line.empty() || line.size() > 16) return bad("malformed chunk size");
    size_t size = 0;
    for (char c : line) {
      const int d = (c >= '0' && c <= '9') ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (d < 0) return bad("malformed chunk size");
      size = size << 4 | size_t(d);
    }
    if (size > kMaxLocalApiResponse - body_.size()) return bad("response larger than 1 MiB");
    left_ = size;
    step_ = size == 0 ? Step::Trailer : Step::Data;
    return State::More;
  }

  size_t pos_ = 0;   // first byte of the input not consumed yet
  size_t left_ = 0;  // data bytes left in the current chunk
  Step step_ = Step::Size;
  std::string body_;
  std::string err_;
};

// The response head, skipping 1xx interim answers as Go's client does.
// Consumed bytes are removed from `in`.
Result<http::ResponseHead> readHead(int fd, std::string& in, Deadline deadline) {
  while (true) {
    auto p = http::parseResponseHead(in, kMaxHead);
    if (p.status == http::ParseStatus::Complete) {
      in.erase(0, p.head.headLen);
      if (p.head.status >= 100 && p.head.status < 200 && p.head.status != 101) continue;
      return std::move(p.head);
    }
    if (p.status == http::ParseStatus::Invalid) return makeError("malformed HTTP response: " + p.error);
    if (p.status == http::ParseStatus::TooLarge) return makeError("response head too large");
    auto n = recvSome(fd, in, deadline);
    if (!n) return std::move(n).takeError();
    if (*n == 0) return makeError(in.empty() ? "EOF" : "unexpected EOF");
  }
}

Result<size_t> contentLength(const std::string& v) {
  const bool digits = std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (v.empty() || v.size() > 19 || !digits) {
    return makeError("bad Content-Length \"" + v.substr(0, 40) + "\"");
  }
  const size_t n = std::stoull(v);
  if (n > kMaxLocalApiResponse) return makeError("response larger than 1 MiB");
  return n;
}

// The body after `head`; `in` holds the bytes already read past the head.
Result<std::string> readBody(int fd, const http::ResponseHead& head, std::string in, Deadline deadline) {
  if (head.status == 204 || head.status == 304) return std::string();
  if (const std::string* te = head.get("Transfer-Encoding")) {
    if (!http::iequals(*te, "chunked")) {
      return makeError("unsupported transfer encoding \"" + te->substr(0, 40) + "\"");
    }
    ChunkedBody chunked;
    while (true) {
      const auto state = chunked.feed(in);
      if (state == ChunkedBody::State::Done) return std::move(chunked.body());
      if (state == ChunkedBody::State::Bad) return makeError(chunked.error());
      auto n = recvSome(fd, in, deadline);
      if (!n) return std::move(n).takeError();
      if (*n == 0) return makeError("unexpected EOF");
    }
  }
  std::optional<size_t> want;
  if (const std::string* cl = head.get("Content-Length")) {
    auto n = contentLength(*cl);
    if (!n) return std::move(n).takeError();
    want = *n;
  }
  while (!want || in.size() < *want) {
    auto n = recvSome(fd, in, deadline);
    if (!n) return std::move(n).takeError();
    if (*n == 0) {
      if (want) return makeError("unexpected EOF");
      break;
    }
  }
  if (want) in.resize(*want);  // bytes past Content-Length are not the body
  return in;
}

}  // namespace

Result<HttpAnswer> localApiGet(const std::string& socketPath, const std::string& target,
                               Deadline deadline) {
  auto fd = dialUnix(socketPath, deadline);
  if (!fd) {
    const std::string path = target.substr(0, target.find('?'));
    return makeError("Failed to connect to local Tailscale daemon for " + path +
                     "; not running? Error: " + fd.error());
  }
  const std::string request = "GET " + target + " HTTP/1.1\r\nHost: " + kLocalApiHost +
                              "\r\nUser-Agent: Go-http-client/1.1\r\nTailscale-Cap: " +
                              kLocalApiCapVersion +
                              "\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n";
  auto fail = [&](const std::string& why) {
    return makeError("Get \"http://" + std::string(kLocalApiHost) + target + "\": " + why);
  };
  if (auto sent = sendAll(fd->get(), request, deadline); !sent) return fail(sent.error());
  std::string in;
  auto head = readHead(fd->get(), in, deadline);
  if (!head) return fail(head.error());
  auto body = readBody(fd->get(), *head, std::move(in), deadline);
  if (!body) return fail(body.error());
  HttpAnswer answer;
  answer.status = head->status;
  answer.statusText = std::to_string(head->status);
  if (!head->reason.empty()) answer.statusText += " " + head->reason;
  answer.body = std::move(*body);
  return answer;
}

}  // namespace derpd::mesh::detail
