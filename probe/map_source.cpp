#include "map_source.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

#include "common/client/transport.hpp"
#include "common/proto/http/body.hpp"
#include "common/proto/http/http.hpp"
#include "common/util/fd.hpp"

namespace derpd::probe {

namespace {

using client::Clock;
using client::Deadline;
constexpr size_t kMaxHead = 64 * 1024;

struct Fetched {
  std::string body;
  std::string error;
  bool unreachable = false;
};

// One request over a connected stream; reads until the response is whole.
Fetched exchange(const std::string& request, const std::function<Result<void>(ByteView)>& write,
                 const std::function<Result<size_t>(uint8_t*, size_t)>& readSome, const std::string& what) {
  Fetched f;
  if (auto r = write(asBytes(request)); !r) {
    f.error = what + ": " + r.error();
    f.unreachable = true;
    return f;
  }
  std::string buf;
  bool eof = false;
  for (int i = 0; i < 1000000; ++i) {
    if (!eof) {
      uint8_t tmp[16384];
      auto n = readSome(tmp, sizeof tmp);
      if (!n) {
        f.error = what + ": " + n.error();
        f.unreachable = true;
        return f;
      }
      if (*n == 0) {
        eof = true;
      } else {
        buf.append(reinterpret_cast<const char*>(tmp), *n);
      }
    }
    auto head = http::parseResponseHead(buf, kMaxHead);
    if (head.status == http::ParseStatus::Invalid || head.status == http::ParseStatus::TooLarge) {
      f.error = what + ": malformed HTTP response" + (head.error.empty() ? "" : ": " + head.error);
      return f;
    }
    if (head.status == http::ParseStatus::Incomplete) {
      if (eof) {
        f.error = what + ": connection closed before a whole HTTP response head";
        f.unreachable = true;
        return f;
      }
      continue;
    }
    if (head.head.status != 200) {
      f.error = what + ": " + std::to_string(head.head.status) + " " + head.head.reason;
      return f;
    }
    auto body = http::responseBody(head.head, std::string_view(buf).substr(head.head.headLen), eof,
                                   derpmap::kMaxMapBytes);
    switch (body.status) {
      case http::BodyStatus::Complete:
        f.body = std::move(body.body);
        return f;
      case http::BodyStatus::Incomplete:
        if (eof) {
          f.error = what + ": connection closed inside the body";
          return f;
        }
        continue;
      case http::BodyStatus::Invalid:
      case http::BodyStatus::TooLarge:
        f.error = what + ": " + body.error;
        return f;
    }
  }
  f.error = what + ": response too long";
  return f;
}

Fetched fetchHttp(const std::string& url, const DialSettings& ds, Deadline deadline) {
  const std::string what = "fetching " + url;
  auto u = client::parseUrl(url);
  if (!u) return Fetched{{}, what + ": " + u.error(), false};
  auto t = client::Transport::dial(u->host, u->port, deadline);
  if (!t) return Fetched{{}, what + ": " + t.error(), true};
  if (u->tls) {
    client::TlsOptions to;
    to.serverName = u->host;
    to.caFile = ds.caFile;
    if (auto r = (*t)->startTls(to, deadline); !r) return Fetched{{}, what + ": " + r.error(), true};
  }
  std::string req = "GET " + u->target + " HTTP/1.1\r\nHost: " + u->authority +
                    "\r\nUser-Agent: derpd-probe/" DERPD_VERSION "\r\nAccept: application/json\r\n"
                    "Connection: close\r\n\r\n";
  client::Transport& tr = **t;
  Fetched f = exchange(
      req, [&](ByteView b) { return tr.writeAll(b, deadline); },
      [&](uint8_t* b, size_t n) { return tr.readSome(b, n, deadline); }, what);
  tr.close();
  return f;
}

Fetched fetchLocal(const std::string& socketPath, Deadline deadline) {
  const std::string what = "fetching the DERP map from tailscaled (" + socketPath + ")";
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Fetched{{}, what + ": socket: " + std::strerror(errno), true};
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (socketPath.size() >= sizeof sa.sun_path) return Fetched{{}, what + ": socket path too long", false};
  std::memcpy(sa.sun_path, socketPath.data(), socketPath.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) {
    return Fetched{{}, what + ": " + std::strerror(errno), true};
  }
  auto waitFor = [&](short ev) -> Result<void> {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return makeError("timeout");
      pollfd p{fd, ev, 0};
      int n = ::poll(&p, 1, int(std::min<int64_t>(left, 1000)));
      if (n < 0 && errno != EINTR) return makeError(std::string("poll: ") + std::strerror(errno));
      if (n > 0) return okResult();
    }
  };
  auto write = [&](ByteView b) -> Result<void> {
    size_t off = 0;
    while (off < b.size()) {
      ssize_t n = ::send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += size_t(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (auto w = waitFor(POLLOUT); !w) return w;
        continue;
      }
      return makeError(std::strerror(errno));
    }
    return okResult();
  };
  auto readSome = [&](uint8_t* b, size_t n) -> Result<size_t> {
    for (;;) {
      ssize_t r = ::recv(fd, b, n, 0);
      if (r >= 0) return size_t(r);
      if (errno == EAGAIN || errno == EINTR) {
        if (auto w = waitFor(POLLIN); !w) return makeError(w.error());
        continue;
      }
      return makeError(std::strerror(errno));
    }
  };
  std::string req =
      "GET /localapi/v0/derpmap HTTP/1.1\r\nHost: local-tailscaled.sock\r\nUser-Agent: derpd-probe/" DERPD_VERSION
      "\r\nConnection: close\r\n\r\n";
  return exchange(req, write, readSome, what);
}

}  // namespace

MapFetchResult fetchMap(const std::string& src, const DialSettings& ds, const std::string& tailscaledSocket,
                        std::chrono::milliseconds timeout) {
  MapFetchResult out;
  const Deadline deadline = Clock::now() + timeout;
  Fetched f;
  if (src == "local") {
    f = fetchLocal(tailscaledSocket, deadline);
  } else if (src.rfind("http://", 0) == 0 || src.rfind("https://", 0) == 0) {
    f = fetchHttp(src, ds, deadline);
  } else {
    std::string path = src.rfind("file://", 0) == 0 ? src.substr(7) : src;
    bool missing = false;
    auto r = readFileLimited(path, derpmap::kMaxMapBytes, &missing);
    if (!r) {
      f.error = "fetching " + src + ": " + r.error();
      f.unreachable = missing;
    } else {
      f.body = std::move(*r);
    }
  }
  if (!f.error.empty()) {
    out.error = std::move(f.error);
    out.unreachable = f.unreachable;
    return out;
  }
  return decodeMap(f.body, src);
}

MapFetchResult decodeMap(const std::string& json, const std::string& what) {
  MapFetchResult out;
  auto m = derpmap::parse(json);
  if (!m) {
    out.error = "decoding " + what + " JSON: " + m.error();
    return out;
  }
  if (auto v = derpmap::validateForProbe(*m); !v) {
    out.error = what + ": " + v.error();
    return out;
  }
  out.map = std::move(*m);
  return out;
}

}  // namespace derpd::probe
