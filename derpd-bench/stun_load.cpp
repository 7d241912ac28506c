#include "stun_load.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/proto/stun/stun.hpp"
#include "proc_stats.hpp"

namespace derpd::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kBatch = 64;

struct Sock {
  int fd = -1;
  uint32_t seq = 0;          // next transaction number
  int inFlight = 0;
  Clock::time_point lastAnswer{};
};

// Transaction id: socket index (4 bytes) + sequence (4 bytes) + a fixed tag.
stun::TxId txidFor(uint32_t sock, uint32_t seq) {
  stun::TxId t{};
  std::memcpy(t.data(), &sock, 4);
  std::memcpy(t.data() + 4, &seq, 4);
  std::memcpy(t.data() + 8, "dbnc", 4);
  return t;
}

// Sends n requests on s (batched). Returns how many the kernel took.
int sendRequests(Sock& s, uint32_t index, int n, uint64_t& sent) {
  std::array<Bytes, kBatch> bufs;
  std::array<iovec, kBatch> iov{};
  std::array<mmsghdr, kBatch> msgs{};
  int total = 0;
  while (n > 0) {
    int k = std::min<int>(n, int(kBatch));
    for (int i = 0; i < k; ++i) {
      bufs[size_t(i)].clear();
      stun::appendBindingRequest(bufs[size_t(i)], txidFor(index, s.seq++));
      iov[size_t(i)] = {bufs[size_t(i)].data(), bufs[size_t(i)].size()};
      msgs[size_t(i)] = {};
      msgs[size_t(i)].msg_hdr.msg_iov = &iov[size_t(i)];
      msgs[size_t(i)].msg_hdr.msg_iovlen = 1;
    }
    int r = ::sendmmsg(s.fd, msgs.data(), unsigned(k), MSG_DONTWAIT);
    if (r <= 0) break;
    total += r;
    n -= r;
    if (r < k) break;
  }
  s.inFlight += total;
  sent += uint64_t(total);
  return total;
}

}  // namespace

Result<StunLoadResult> runStunLoad(const StunLoadOptions& opts) {
  sockaddr_storage target{};
  socklen_t targetLen = 0;
  if (auto* v4 = reinterpret_cast<sockaddr_in*>(&target); ::inet_pton(AF_INET, opts.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(opts.port);
    targetLen = sizeof(sockaddr_in);
  } else if (auto* v6 = reinterpret_cast<sockaddr_in6*>(&target);
             ::inet_pton(AF_INET6, opts.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(opts.port);
    targetLen = sizeof(sockaddr_in6);
  } else {
    return makeError("target host '" + opts.host + "' is not an IP address");
  }
  if (opts.sockets < 1 || opts.sockets > 64) return makeError("-sockets must be 1..64");
  if (opts.window < 1 || opts.window > 4096) return makeError("-window must be 1..4096");

  std::vector<Sock> socks(size_t(opts.sockets));
  auto closeAll = [&] {
    for (Sock& s : socks) {
      if (s.fd >= 0) ::close(s.fd);
    }
  };
  for (Sock& s : socks) {
    s.fd = ::socket(target.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.fd < 0 || ::connect(s.fd, reinterpret_cast<sockaddr*>(&target), targetLen) != 0) {
      std::string err = std::strerror(errno);
      closeAll();
      return makeError("udp socket to " + opts.host + ": " + err);
    }
    int buf = 4 << 20;
    ::setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  }

  StunLoadResult res;
  const double serverCpu0 = opts.serverPid > 0 ? processCpuSeconds(opts.serverPid) : -1;
  const double ownCpu0 = ownCpuSeconds();
  const auto start = Clock::now();
  const auto end = start + opts.duration;
  for (size_t i = 0; i < socks.size(); ++i) {
    socks[i].lastAnswer = start;
    sendRequests(socks[i], uint32_t(i), opts.window, res.sent);
  }

  std::array<std::array<uint8_t, 256>, kBatch> bufs{};
  std::array<iovec, kBatch> iov{};
  std::array<mmsghdr, kBatch> msgs{};
  std::vector<pollfd> pfds(socks.size());
  for (size_t i = 0; i < socks.size(); ++i) pfds[i] = {socks[i].fd, POLLIN, 0};
  // Bounded: the loop ends at `end` whatever the server does.
  while (Clock::now() < end) {
    ::poll(pfds.data(), pfds.size(), 10);
    const auto now = Clock::now();
    for (size_t i = 0; i < socks.size(); ++i) {
      Sock& s = socks[i];
      for (int round = 0; round < 16; ++round) {
        for (size_t k = 0; k < kBatch; ++k) {
          iov[k] = {bufs[k].data(), bufs[k].size()};
          msgs[k] = {};
          msgs[k].msg_hdr.msg_iov = &iov[k];
          msgs[k].msg_hdr.msg_iovlen = 1;
        }
        int n = ::recvmmsg(s.fd, msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
        if (n <= 0) break;
        int good = 0;
        for (int k = 0; k < n; ++k) {
          auto r = stun::parseBindingResponse(ByteView(bufs[size_t(k)].data(), msgs[size_t(k)].msg_len));
          if (r.ok() && std::memcmp(r->txid.data() + 8, "dbnc", 4) == 0) {
            ++good;
          } else {
            ++res.invalid;
          }
        }
        res.answered += uint64_t(good);
        s.inFlight = std::max(0, s.inFlight - good);
        s.lastAnswer = now;
        if (now < end) sendRequests(s, uint32_t(i), opts.window - s.inFlight, res.sent);
      }
      // Nothing back for a while: whatever is in flight is lost; refill.
      if (now - s.lastAnswer > kLossTimeout && s.inFlight > 0) {
        res.lost += uint64_t(s.inFlight);
        s.inFlight = 0;
        s.lastAnswer = now;
        if (now < end) sendRequests(s, uint32_t(i), opts.window, res.sent);
      }
    }
  }
  res.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  res.ownCpuSeconds = ownCpuSeconds() - ownCpu0;
  if (serverCpu0 >= 0) {
    double c = processCpuSeconds(opts.serverPid);
    if (c >= 0) res.serverCpuSeconds = c - serverCpu0;
  }
  closeAll();
  return res;
}

}  // namespace derpd::bench
