#include "floor_load.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>

#include "common/net/listener.hpp"
#include "paced.hpp"
#include "proc_stats.hpp"

namespace derpd::bench {

namespace {

constexpr size_t kRelayChunk = 64 * 1024;

struct RawPair {
  int senderFd = -1, receiverFd = -1;  // the load's ends
  int relayIn = -1, relayOut = -1;     // the relay's ends
  size_t size = 0;
  Bytes inBuf;                         // a receiver's partial packet
  size_t inLen = 0;
  uint64_t sent = 0;
  std::vector<uint32_t> latenciesUs;
  std::string error;

  RawPair() = default;
  RawPair(const RawPair&) = delete;
  RawPair& operator=(const RawPair&) = delete;
  RawPair(RawPair&& o) noexcept { *this = std::move(o); }
  RawPair& operator=(RawPair&& o) noexcept {
    std::swap(senderFd, o.senderFd), std::swap(receiverFd, o.receiverFd);
    std::swap(relayIn, o.relayIn), std::swap(relayOut, o.relayOut);
    size = o.size, inBuf.swap(o.inBuf), inLen = o.inLen, sent = o.sent;
    latenciesUs.swap(o.latenciesUs), error.swap(o.error);
    return *this;
  }
  ~RawPair() {
    for (int fd : {senderFd, receiverFd, relayIn, relayOut}) {
      if (fd >= 0) ::close(fd);
    }
  }
};

std::string errnoText(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// Writes all of data to a blocking socket.
bool writeAll(int fd, const uint8_t* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w, n -= size_t(w);
  }
  return true;
}

bool sendOne(RawPair& p, Bytes& pkt) {
  stampPacket(pkt, p.sent + 1);
  if (!writeAll(p.senderFd, pkt.data(), pkt.size())) {
    p.error = errnoText("send");
    return false;
  }
  ++p.sent;
  return true;
}

// The receiver's socket is non-blocking: reads until EAGAIN, noting each
// whole packet.
bool drainReceiver(RawPair& p) {
  for (;;) {
    const ssize_t r = ::recv(p.receiverFd, p.inBuf.data() + p.inLen, p.inBuf.size() - p.inLen, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (r <= 0) {
      p.error = r == 0 ? std::string("recv: eof") : errnoText("recv");
      return false;
    }
    p.inLen += size_t(r);
    size_t off = 0;
    for (; p.inLen - off >= p.size; off += p.size) noteArrival(p.latenciesUs, p.inBuf.data() + off, p.size);
    std::memmove(p.inBuf.data(), p.inBuf.data() + off, p.inLen - off);
    p.inLen -= off;
  }
}

int receiverFd(const RawPair& p) { return p.receiverFd; }

// The relay: nothing but epoll_wait, read and write. Returns its thread's
// CPU seconds when `stopFd` becomes readable, or -1 with `error` set.
double relayLoop(std::vector<RawPair>& pairs, int stopFd, std::string& error) {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return error = errnoText("epoll_create1"), -1;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = pairs.size();
  bool ok = ::epoll_ctl(ep, EPOLL_CTL_ADD, stopFd, &ev) == 0;
  for (size_t i = 0; ok && i < pairs.size(); ++i) {
    ev.data.u64 = i;
    ok = ::epoll_ctl(ep, EPOLL_CTL_ADD, pairs[i].relayIn, &ev) == 0;
  }
  if (!ok) {
    error = errnoText("epoll_ctl");
    ::close(ep);
    return -1;
  }
  Bytes buf(kRelayChunk);
  for (bool stop = false; !stop && error.empty();) {
    epoll_event evs[64];
    const int n = ::epoll_wait(ep, evs, 64, -1);
    if (n < 0 && errno != EINTR) error = errnoText("epoll_wait");
    for (int k = 0; k < n && error.empty(); ++k) {
      const size_t i = size_t(evs[k].data.u64);
      if (i == pairs.size()) {
        stop = true;
        continue;
      }
      const ssize_t r = ::read(pairs[i].relayIn, buf.data(), buf.size());
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) {
        error = r == 0 ? std::string("relay: a sender closed") : errnoText("relay read");
      } else if (!writeAll(pairs[i].relayOut, buf.data(), size_t(r))) {
        error = errnoText("relay write");
      }
    }
  }
  ::close(ep);
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// A connected pair of loopback TCP sockets through `listener`: the
// dialled end and the accepted end, both with TCP_NODELAY.
Result<std::pair<int, int>> loopbackConn(int listener, const sockaddr_in& addr) {
  const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0) return makeError(errnoText("socket"));
  if (::connect(c, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    std::string e = errnoText("connect");
    ::close(c);
    return makeError(e);
  }
  const int a = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (a < 0) {
    std::string e = errnoText("accept");
    ::close(c);
    return makeError(e);
  }
  const int one = 1;
  ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return std::make_pair(c, a);
}

}  // namespace

Result<FloorLoadResult> runFloorLoad(const FloorLoadOptions& o) {
  if (o.pairs < 1 || o.pairs > 256) return makeError("-pairs must be 1..256");
  if (o.size < 16 || o.size > 65536) return makeError("-size must be 16..65536");
  if (o.rate < 1 || o.rate > 1000000) return makeError("floor needs -rate, 1..1000000");
  if (o.threads < 1 || o.threads > 64) return makeError("-threads must be 1..64");
  auto bound = net::listenTcp("127.0.0.1", 0);
  if (!bound) return makeError(bound.error());
  const int listener = *bound;
  // Blocking: each accept waits for the connect just made.
  ::fcntl(listener, F_SETFL, ::fcntl(listener, F_GETFL) & ~O_NONBLOCK);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(uint16_t(net::localPort(listener)));
  std::vector<RawPair> pairs(size_t(o.pairs));
  std::string setupError;
  for (RawPair& p : pairs) {
    p.size = o.size;
    p.inBuf.resize(std::max<size_t>(kRelayChunk, 2 * o.size));
    auto in = loopbackConn(listener, addr);
    auto out = in ? loopbackConn(listener, addr) : makeError(in.error());
    if (!in || !out) {
      setupError = in ? out.error() : in.error();
      if (in) ::close(in->first), ::close(in->second);
      break;
    }
    p.senderFd = in->first, p.relayIn = in->second;
    p.receiverFd = out->first, p.relayOut = out->second;
    if (::fcntl(p.receiverFd, F_SETFL, ::fcntl(p.receiverFd, F_GETFL) | O_NONBLOCK) != 0) {
      setupError = errnoText("fcntl");
      break;
    }
  }
  ::close(listener);
  if (!setupError.empty()) return makeError(setupError);
  const int stopFd = ::eventfd(0, EFD_CLOEXEC);
  if (stopFd < 0) return makeError(errnoText("eventfd"));
  std::string relayError;
  double relayCpu = -1;
  std::thread relay([&] { relayCpu = relayLoop(pairs, stopFd, relayError); });
  const double cpu0 = ownCpuSeconds();
  const auto start = PacedClock::now();
  const auto end = start + o.duration;
  runPaced(pairs, o.threads, o.rate, o.size, start, end, end + kDrainTime);
  const uint64_t one = 1;
  (void)!::write(stopFd, &one, sizeof one);
  relay.join();
  ::close(stopFd);
  FloorLoadResult res;
  res.ownCpuSeconds = ownCpuSeconds() - cpu0;
  res.seconds = std::chrono::duration<double>(o.duration).count();
  if (!relayError.empty()) return makeError(relayError);
  res.relayCpuSeconds = relayCpu;
  PairTotals t;
  if (std::string e = collect(pairs, t); !e.empty()) return makeError(e);
  res.sent = t.sent, res.delivered = t.delivered;
  const LatencySummary& l = t.latency;
  res.p50Ms = l.p50Ms, res.p99Ms = l.p99Ms, res.p999Ms = l.p999Ms, res.maxMs = l.maxMs;
  return res;
}

}  // namespace derpd::bench
