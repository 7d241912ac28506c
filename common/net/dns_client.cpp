// Client-side DNS resolver: see dns_client.hpp.
#include "common/net/dns_client.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <random>

#include "common/net/udp.hpp"

namespace derpd::net {

namespace {

using Clock = std::chrono::steady_clock;

// Longest single poll() while a cancel flag is watched.
constexpr std::chrono::milliseconds kCancelSlice{50};

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

uint16_t randomId() {
  uint16_t id = 0;
  if (::getrandom(&id, sizeof id, 0) == ssize_t(sizeof id)) return id;
  static thread_local std::mt19937 fallback{std::random_device{}()};
  return uint16_t(fallback());
}

std::string errnoText(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// Waits for `events` on fd until `deadline`, watching `cancel`.
// Returns the revents, 0 on timeout, or an error.
Result<short> waitFd(int fd, short events, Clock::time_point deadline, const std::atomic<bool>* cancel) {
  for (;;) {
    if (cancel && cancel->load(std::memory_order_relaxed)) return makeError("dns: cancelled");
    const auto now = Clock::now();
    if (now >= deadline) return short(0);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) + std::chrono::milliseconds(1);
    if (cancel) wait = std::min(wait, kCancelSlice);
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, int(wait.count()));
    if (n < 0) {
      if (errno == EINTR) continue;
      return makeError(errnoText("dns: poll"));
    }
    if (n > 0) return p.revents;
  }
}

bool sameAddress(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port && std::memcmp(&x.sin6_addr, &y.sin6_addr, 16) == 0;
  }
  return false;
}

// One UDP exchange. Returns the first acceptable answer, or an error at the
// deadline (naming the last rejected datagram, if any).
Result<dns::Response> udpExchange(const DnsServer& server, std::string_view name, dns::RrType type,
                                  Clock::time_point deadline, const std::atomic<bool>* cancel) {
  const uint16_t id = randomId();
  auto query = dns::buildQuery(id, name, type);
  if (!query) return std::move(query).takeError();
  Fd fd(::socket(server.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return makeError(errnoText("dns: udp socket"));
  // connect(): a random ephemeral source port, and the kernel drops
  // datagrams from any other source.
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&server.addr), server.len) != 0)
    return makeError(errnoText(("dns: connect udp " + server.toString()).c_str()));
  for (;;) {
    const ssize_t n = ::send(fd.get(), query->data(), query->size(), MSG_NOSIGNAL);
    if (n == ssize_t(query->size())) break;
    if (n < 0 && errno == EINTR) continue;
    return makeError(errnoText(("dns: send to " + server.toString()).c_str()));
  }
  std::string lastRejected;
  std::vector<uint8_t> buf(dns::kMaxMessage + 1);
  for (;;) {
    auto ev = waitFd(fd.get(), POLLIN, deadline, cancel);
    if (!ev) return std::move(ev).takeError();
    if (*ev == 0) {
      return makeError("dns: " + server.toString() + " timed out" +
                       (lastRejected.empty() ? "" : " (ignored: " + lastRejected + ")"));
    }
    sockaddr_storage from{};
    socklen_t fromLen = sizeof from;
    const ssize_t n = ::recvfrom(fd.get(), buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fromLen);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return makeError(errnoText(("dns: recv from " + server.toString()).c_str()));
    }
    if (!sameAddress(from, server.addr)) {
      lastRejected = "datagram from " + formatSockaddr(from);
      continue;
    }
    if (size_t(n) > dns::kMaxMessage) {
      lastRejected = "oversized datagram";
      continue;
    }
    auto resp = dns::parseResponse(ByteView(buf.data(), size_t(n)), id, name, type);
    if (!resp) {
      lastRejected = resp.error();  // a forgery or a stale answer: keep waiting
      continue;
    }
    return resp;
  }
}

Result<void> writeAll(int fd, const Bytes& data, Clock::time_point deadline, const std::atomic<bool>* cancel) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      auto ev = waitFd(fd, POLLOUT, deadline, cancel);
      if (!ev) return std::move(ev).takeError();
      if (*ev == 0) return makeError("dns: tcp write timed out");
      continue;
    }
    return makeError(errnoText("dns: tcp send"));
  }
  return okResult();
}

Result<void> readExact(int fd, uint8_t* out, size_t len, Clock::time_point deadline, const std::atomic<bool>* cancel) {
  size_t off = 0;
  while (off < len) {
    const ssize_t n = ::recv(fd, out + off, len - off, 0);
    if (n > 0) {
      off += size_t(n);
      continue;
    }
    if (n == 0) return makeError("dns: tcp connection closed early");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      auto ev = waitFd(fd, POLLIN, deadline, cancel);
      if (!ev) return std::move(ev).takeError();
      if (*ev == 0) return makeError("dns: tcp read timed out");
      continue;
    }
    return makeError(errnoText("dns: tcp recv"));
  }
  return okResult();
}

// One TCP exchange (RFC 1035 §4.2.2: a 2-byte length before each message).
Result<dns::Response> tcpExchange(const DnsServer& server, std::string_view name, dns::RrType type,
                                  Clock::time_point deadline, const std::atomic<bool>* cancel) {
  const uint16_t id = randomId();
  auto query = dns::buildQuery(id, name, type);
  if (!query) return std::move(query).takeError();
  Bytes framed;
  framed.reserve(query->size() + 2);
  framed.push_back(uint8_t(query->size() >> 8));
  framed.push_back(uint8_t(query->size()));
  framed.insert(framed.end(), query->begin(), query->end());

  Fd fd(::socket(server.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return makeError(errnoText("dns: tcp socket"));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&server.addr), server.len) != 0) {
    if (errno != EINPROGRESS) return makeError(errnoText(("dns: connect tcp " + server.toString()).c_str()));
    auto ev = waitFd(fd.get(), POLLOUT, deadline, cancel);
    if (!ev) return std::move(ev).takeError();
    if (*ev == 0) return makeError("dns: tcp connect to " + server.toString() + " timed out");
    int err = 0;
    socklen_t errLen = sizeof err;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &errLen) != 0) return makeError(errnoText("dns: SO_ERROR"));
    if (err != 0) return makeError("dns: connect tcp " + server.toString() + ": " + std::strerror(err));
  }
  if (auto w = writeAll(fd.get(), framed, deadline, cancel); !w) return std::move(w).takeError();
  uint8_t lenBuf[2];
  if (auto r = readExact(fd.get(), lenBuf, 2, deadline, cancel); !r) return std::move(r).takeError();
  const size_t len = (size_t(lenBuf[0]) << 8) | lenBuf[1];
  Bytes msg(len);
  if (auto r = readExact(fd.get(), msg.data(), len, deadline, cancel); !r) return std::move(r).takeError();
  auto resp = dns::parseResponse(msg, id, name, type);
  if (!resp) return resp;
  if (resp->truncated) return makeError("dns: answer truncated over tcp");
  return resp;
}

std::optional<std::string> parseIpLiteral(std::string_view s) {
  const std::string str(s);
  std::array<uint8_t, 4> a4{};
  if (::inet_pton(AF_INET, str.c_str(), a4.data()) == 1) return dns::formatIpv4(a4);
  std::array<uint8_t, 16> a16{};
  if (::inet_pton(AF_INET6, str.c_str(), a16.data()) == 1) return dns::formatIpv6(a16);
  return std::nullopt;
}

std::string lowerNoDot(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = char(c + ('a' - 'A'));
  return out;
}

Result<std::string> readSmallFile(const std::string& path, bool* missing) {
  *missing = false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      *missing = true;
      return std::string();
    }
    return makeError(errnoText(("open " + path).c_str()));
  }
  Fd guard(fd);
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return makeError(errnoText(("read " + path).c_str()));
    }
    out.append(buf, size_t(n));
    if (out.size() > (1u << 20)) return makeError(path + ": larger than 1 MiB");
  }
  return out;
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> f;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) i++;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') i++;
    if (i > start) f.push_back(line.substr(start, i - start));
  }
  return f;
}

template <typename Fn>
void forEachLine(std::string_view text, Fn fn) {
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    fn(text.substr(start, nl - start));
    start = nl + 1;
  }
}

}  // namespace

std::string DnsServer::toString() const { return formatSockaddr(addr); }

Result<DnsServer> parseDnsServer(std::string_view s) {
  std::string host(s);
  uint16_t port = 53;
  const auto bad = [&] { return makeError("dns server \"" + std::string(s) + "\": want IP, IP:port or [IPv6]:port"); };
  auto parsePort = [&](std::string_view p) -> bool {
    if (p.empty() || p.size() > 5) return false;
    unsigned v = 0;
    for (char c : p) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + unsigned(c - '0');
    }
    if (v == 0 || v > 65535) return false;
    port = uint16_t(v);
    return true;
  };
  if (!s.empty() && s.front() == '[') {
    const size_t close = s.find(']');
    if (close == std::string_view::npos) return bad();
    host = std::string(s.substr(1, close - 1));
    const std::string_view rest = s.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !parsePort(rest.substr(1)))) return bad();
  } else if (std::count(s.begin(), s.end(), ':') == 1) {
    const size_t colon = s.find(':');
    host = std::string(s.substr(0, colon));
    if (!parsePort(s.substr(colon + 1))) return bad();
  }
  DnsServer out;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.addr);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out.len = sizeof(sockaddr_in);
    return out;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.addr);
  std::string zone;
  if (const size_t pct = host.find('%'); pct != std::string::npos) {
    zone = host.substr(pct + 1);
    host.resize(pct);
  }
  if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    if (!zone.empty()) {
      unsigned idx = ::if_nametoindex(zone.c_str());
      if (idx == 0 && !zone.empty() && std::all_of(zone.begin(), zone.end(), [](char c) { return c >= '0' && c <= '9'; }))
        idx = unsigned(std::stoul(zone));
      if (idx == 0) return makeError("dns server \"" + std::string(s) + "\": unknown zone " + zone);
      v6->sin6_scope_id = idx;
    }
    out.len = sizeof(sockaddr_in6);
    return out;
  }
  return bad();
}

Result<std::string> systemNameserver(const std::string& resolvConf) {
  bool missing = false;
  auto text = readSmallFile(resolvConf, &missing);
  if (!text) return text;
  std::optional<std::string> found;
  forEachLine(*text, [&](std::string_view line) {
    if (found || line.empty() || line[0] == '#' || line[0] == ';') return;
    const auto f = fields(line);
    if (f.size() < 2 || f[0] != "nameserver") return;
    std::string addr(f[1]);
    std::string bare = addr.substr(0, addr.find('%'));
    in6_addr tmp{};
    if (::inet_pton(AF_INET, bare.c_str(), &tmp) == 1 || ::inet_pton(AF_INET6, bare.c_str(), &tmp) == 1)
      found = addr;
  });
  return found ? *found : std::string("127.0.0.1");
}

Result<HostsFile> HostsFile::load(const std::string& path) {
  bool missing = false;
  auto text = readSmallFile(path, &missing);
  if (!text) return std::move(text).takeError();
  return parse(*text);
}

HostsFile HostsFile::parse(std::string_view text) {
  HostsFile h;
  forEachLine(text, [&](std::string_view line) {
    if (const size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    const auto f = fields(line);
    if (f.size() < 2) return;
    const std::string_view addr = f[0].substr(0, f[0].find('%'));  // zones dropped
    const auto ip = parseIpLiteral(addr);
    if (!ip) return;
    for (size_t i = 1; i < f.size(); i++) h.byName_[lowerNoDot(f[i])].push_back(*ip);
  });
  return h;
}

std::vector<std::string> HostsFile::lookup(std::string_view name) const {
  auto it = byName_.find(lowerNoDot(name));
  return it == byName_.end() ? std::vector<std::string>{} : it->second;
}

Result<dns::Response> dnsQuery(const DnsServer& server, std::string_view name, dns::RrType type, DnsTimeout timeout,
                               const std::atomic<bool>* cancel) {
  if (server.len == 0) return makeError("dns: no server");
  const auto deadline = Clock::now() + timeout;
  auto resp = udpExchange(server, name, type, deadline, cancel);
  if (!resp || !resp->truncated) return resp;
  return tcpExchange(server, name, type, deadline, cancel);
}

namespace {

Result<void> rcodeError(const dns::Response& r, std::string_view name) {
  if (r.rcode == dns::Rcode::NoError) return okResult();
  if (r.rcode == dns::Rcode::NxDomain) return makeError("lookup " + std::string(name) + ": no such host");
  return makeError("lookup " + std::string(name) + ": server answered " + dns::rcodeName(r.rawRcode));
}

}  // namespace

Result<std::vector<std::string>> resolveAddrs(const DnsServer& server, std::string_view name, DnsTimeout timeout,
                                              const std::atomic<bool>* cancel) {
  if (auto ip = parseIpLiteral(name)) return std::vector<std::string>{*ip};
  if (!dns::isValidQueryName(name)) return makeError("lookup " + std::string(name) + ": no such host");
  std::vector<std::string> out;
  std::string firstErr;
  auto a = dnsQuery(server, name, dns::RrType::A, timeout, cancel);
  bool nxdomain = false;
  if (!a) {
    firstErr = "lookup " + std::string(name) + ": " + a.error();
  } else if (auto e = rcodeError(*a, name); !e) {
    firstErr = e.error();
    nxdomain = a->rcode == dns::Rcode::NxDomain;
  } else {
    for (const auto& v : a->a) out.push_back(dns::formatIpv4(v));
  }
  if (!nxdomain && !(cancel && cancel->load(std::memory_order_relaxed))) {
    auto aaaa = dnsQuery(server, name, dns::RrType::Aaaa, timeout, cancel);
    if (!aaaa) {
      if (firstErr.empty()) firstErr = "lookup " + std::string(name) + ": " + aaaa.error();
    } else if (auto e = rcodeError(*aaaa, name); !e) {
      if (firstErr.empty()) firstErr = e.error();
    } else {
      for (const auto& v : aaaa->aaaa) out.push_back(dns::formatIpv6(v));
    }
  }
  if (!out.empty()) return out;
  if (!firstErr.empty()) return makeError(firstErr);
  return makeError("lookup " + std::string(name) + ": no such host");
}

Result<std::vector<std::string>> resolveTxt(const DnsServer& server, std::string_view name, DnsTimeout timeout,
                                            const std::atomic<bool>* cancel) {
  if (!dns::isValidQueryName(name)) return makeError("lookup " + std::string(name) + ": no such host");
  auto r = dnsQuery(server, name, dns::RrType::Txt, timeout, cancel);
  if (!r) return makeError("lookup " + std::string(name) + ": " + r.error());
  if (auto e = rcodeError(*r, name); !e) return std::move(e).takeError();
  std::vector<std::string> out;
  for (const auto& strings : r->txt) {
    std::string joined;
    for (const auto& s : strings) joined += s;
    out.push_back(std::move(joined));
  }
  return out;
}

}  // namespace derpd::net
