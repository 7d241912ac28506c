#include "server.hpp"

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "common/log/log.hpp"
#include "common/net/udp.hpp"
#include "common/proto/stun/stun.hpp"

namespace derpd::stun_worker {

namespace {

// epoll_event.data.u64: a hook fd has this bit set, a STUN socket is its index.
constexpr uint64_t kHookTag = uint64_t(1) << 63;
constexpr int kMaxEvents = 16;
// Room for one IP_PKTINFO or IPV6_PKTINFO control message (40 bytes).
constexpr size_t kControlLen = 64;

bool isWildcard(int fd, int* family) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  *family = ss.ss_family;
  if (ss.ss_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr == htonl(INADDR_ANY);
  }
  if (ss.ss_family == AF_INET6) {
    return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr);
  }
  return false;
}

// Copies the destination of a request (IP_PKTINFO / IPV6_PKTINFO in `in`)
// into `out` as the source of the answer. Returns the control length, 0
// when there is none (the kernel then picks the source).
size_t answerControl(const msghdr& in, uint8_t* out) {
  if (in.msg_controllen == 0 || (in.msg_flags & MSG_CTRUNC)) return 0;
  // CMSG_NXTHDR walks a const-incorrect API; the header is not modified.
  auto& hdr = const_cast<msghdr&>(in);
  for (cmsghdr* c = CMSG_FIRSTHDR(&hdr); c; c = CMSG_NXTHDR(&hdr, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
        c->cmsg_len >= CMSG_LEN(sizeof(in_pktinfo))) {
      in_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
      pi.ipi_ifindex = 0;  // route normally; only the source address is pinned
      msghdr m{};
      m.msg_control = out;
      m.msg_controllen = CMSG_SPACE(sizeof pi);
      cmsghdr* o = CMSG_FIRSTHDR(&m);
      o->cmsg_level = IPPROTO_IP;
      o->cmsg_type = IP_PKTINFO;
      o->cmsg_len = CMSG_LEN(sizeof pi);
      std::memcpy(CMSG_DATA(o), &pi, sizeof pi);
      return CMSG_SPACE(sizeof pi);
    }
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
        c->cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))) {
      in6_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof pi);  // keeps the interface: link-local needs it
      msghdr m{};
      m.msg_control = out;
      m.msg_controllen = CMSG_SPACE(sizeof pi);
      cmsghdr* o = CMSG_FIRSTHDR(&m);
      o->cmsg_level = IPPROTO_IPV6;
      o->cmsg_type = IPV6_PKTINFO;
      o->cmsg_len = CMSG_LEN(sizeof pi);
      std::memcpy(CMSG_DATA(o), &pi, sizeof pi);
      return CMSG_SPACE(sizeof pi);
    }
  }
  return 0;
}

}  // namespace

std::vector<ipc::Metric> toMetrics(const Counters& c) {
  using ipc::MetricType;
  return {
      {"stun_requests", "disposition=\"success\"", double(c.success), MetricType::Counter},
      {"stun_requests", "disposition=\"not_stun\"", double(c.notStun), MetricType::Counter},
      {"stun_requests", "disposition=\"write_error\"", double(c.writeError), MetricType::Counter},
      {"stun_requests", "disposition=\"read_error\"", double(c.readError), MetricType::Counter},
      {"stun_addrfamily", "family=\"ipv4\"", double(c.ipv4), MetricType::Counter},
      {"stun_addrfamily", "family=\"ipv6\"", double(c.ipv6), MetricType::Counter},
  };
}

// The arrays handed to recvmmsg/sendmmsg: in[k] reads into buf[k] with the
// source in from[k]; out[j] answers from resp[j] to one of the from[].
struct Server::Batch {
  struct alignas(cmsghdr) Control {
    uint8_t bytes[kControlLen];
  };
  std::array<mmsghdr, kBatch> in{};
  std::array<iovec, kBatch> inIov{};
  std::array<sockaddr_storage, kBatch> from{};
  std::array<std::array<uint8_t, kDatagramMax>, kBatch> buf{};
  std::array<Control, kBatch> inControl{};
  std::array<mmsghdr, kBatch> out{};
  std::array<iovec, kBatch> outIov{};
  std::array<std::array<uint8_t, stun::kMaxResponseLen>, kBatch> resp{};
  std::array<Control, kBatch> outControl{};
};

Server::Server() : batch_(std::make_unique<Batch>()) {}

Server::~Server() {
  for (auto& s : sockets_) ::close(s.fd);
  if (epfd_ >= 0) ::close(epfd_);
}

Result<std::unique_ptr<Server>> Server::create(std::vector<int> udpFds) {
  std::unique_ptr<Server> srv(new Server());
  for (int fd : udpFds) srv->sockets_.push_back(Socket{fd});  // owned from here on
  if (udpFds.empty()) return makeError("no UDP socket to serve");
  srv->epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (srv->epfd_ < 0) return makeError(std::string("epoll_create1: ") + std::strerror(errno));
  for (size_t i = 0; i < srv->sockets_.size(); i++) {
    Socket& s = srv->sockets_[i];
    if (isWildcard(s.fd, &s.family)) {
      int one = 1;
      int rc = s.family == AF_INET ? ::setsockopt(s.fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one)
                                   : ::setsockopt(s.fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
      if (rc != 0) {
        return makeError("packet info on udp " + net::localAddress(s.fd) + ": " + std::strerror(errno));
      }
      s.pktinfo = true;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    if (::epoll_ctl(srv->epfd_, EPOLL_CTL_ADD, s.fd, &ev) != 0) {
      return makeError("epoll_ctl add udp " + net::localAddress(s.fd) + ": " + std::strerror(errno));
    }
  }
  // Wire the fixed parts of the batch once.
  Batch& b = *srv->batch_;
  for (size_t k = 0; k < kBatch; k++) {
    b.inIov[k] = {b.buf[k].data(), kDatagramMax};
    b.in[k].msg_hdr.msg_iov = &b.inIov[k];
    b.in[k].msg_hdr.msg_iovlen = 1;
    b.in[k].msg_hdr.msg_name = &b.from[k];
    b.out[k].msg_hdr.msg_iov = &b.outIov[k];
    b.out[k].msg_hdr.msg_iovlen = 1;
  }
  return srv;
}

std::vector<std::string> Server::addresses() const {
  std::vector<std::string> out;
  for (const auto& s : sockets_) out.push_back(net::localAddress(s.fd));
  return out;
}

Result<void> Server::addFd(int fd, FdCallback cb) {
  auto it = hooks_.find(fd);
  const bool watched = it != hooks_.end() && !it->second.removed;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kHookTag | uint32_t(fd);
  if (!watched && ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    return makeError("epoll_ctl add fd " + std::to_string(fd) + ": " + std::strerror(errno));
  }
  hooks_[fd] = Hook{std::make_shared<FdCallback>(std::move(cb)), false};
  return {};
}

void Server::removeFd(int fd) {
  auto it = hooks_.find(fd);
  if (it == hooks_.end() || it->second.removed) return;
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  it->second.removed = true;
}

void Server::setTick(std::chrono::milliseconds interval, TickCallback cb) {
  if (interval.count() <= 0 || !cb) {
    tickInterval_ = std::chrono::milliseconds(0);
    tick_ = nullptr;
    return;
  }
  tickInterval_ = interval;
  tick_ = std::move(cb);
  nextTick_ = Clock::now() + interval;
}

int Server::waitTimeoutMs(Clock::time_point now) const {
  std::optional<Clock::time_point> next;
  if (tick_) next = nextTick_;
  for (const auto& s : sockets_) {
    if (s.paused && (!next || s.resumeAt < *next)) next = s.resumeAt;
  }
  if (!next) return -1;
  if (*next <= now) return 0;
  // Round up, so the loop does not wake just before the deadline and spin.
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(*next - now).count();
  long long ms = (us + 999) / 1000;
  return int(std::min<long long>(ms, 60 * 1000));
}

Result<void> Server::run() {
  running_ = true;
  if (tick_) nextTick_ = Clock::now() + tickInterval_;
  std::array<epoll_event, kMaxEvents> events{};
  while (!stopping_) {
    int n = ::epoll_wait(epfd_, events.data(), kMaxEvents, waitTimeoutMs(Clock::now()));
    if (n < 0) {
      if (errno == EINTR) continue;
      running_ = false;
      return makeError(std::string("epoll_wait: ") + std::strerror(errno));
    }
    for (int i = 0; i < n && !stopping_; i++) {
      const uint64_t tag = events[size_t(i)].data.u64;
      if (tag & kHookTag) {
        auto it = hooks_.find(int(uint32_t(tag)));
        if (it == hooks_.end() || it->second.removed) continue;
        std::shared_ptr<FdCallback> cb = it->second.cb;
        (*cb)(events[size_t(i)].events);
      } else if (tag < sockets_.size() && !sockets_[tag].paused) {
        onReadable(size_t(tag));
      }
    }
    const auto now = Clock::now();
    resumeDue(now);
    if (tick_ && now >= nextTick_ && !stopping_) {
      nextTick_ = now + tickInterval_;
      TickCallback cb = tick_;  // the tick may replace itself
      cb();
    }
    std::erase_if(hooks_, [](const auto& kv) { return kv.second.removed; });
  }
  running_ = false;
  return {};
}

void Server::onReadable(size_t index) {
  for (int round = 0; round < kBatchesPerWakeup; round++) {
    Socket& s = sockets_[index];
    if (s.paused || !serveBatch(s)) return;
  }
}

bool Server::serveBatch(Socket& s) {
  Batch& b = *batch_;
  for (size_t k = 0; k < kBatch; k++) {
    msghdr& h = b.in[k].msg_hdr;
    h.msg_namelen = sizeof(sockaddr_storage);
    h.msg_control = s.pktinfo ? b.inControl[k].bytes : nullptr;
    h.msg_controllen = s.pktinfo ? kControlLen : 0;
    h.msg_flags = 0;
    b.in[k].msg_len = 0;
  }
  int got = -1;
  for (int tries = 0; tries < 4; tries++) {
    got = ::recvmmsg(s.fd, b.in.data(), kBatch, 0, nullptr);
    if (got >= 0 || errno != EINTR) break;
  }
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return false;
    pause(size_t(&s - sockets_.data()), errno);
    return false;
  }
  unsigned answers = 0;
  for (unsigned k = 0; k < unsigned(got); k++) {
    const msghdr& h = b.in[k].msg_hdr;
    // A truncated datagram is never a request, whatever its first 2 KiB say.
    if ((h.msg_flags & MSG_TRUNC) || b.in[k].msg_len > kDatagramMax) {
      counters_.notStun++;
      continue;
    }
    const auto req = stun::parseBindingRequest(ByteView(b.buf[k].data(), b.in[k].msg_len));
    if (!req.ok()) {
      counters_.notStun++;
      continue;
    }
    const auto from = stun::Endpoint::fromSockaddr(b.from[k]);
    if (!from) {
      counters_.notStun++;
      continue;
    }
    if (from->family == stun::Endpoint::Family::V4) {
      counters_.ipv4++;
    } else {
      counters_.ipv6++;
    }
    msghdr& o = b.out[answers].msg_hdr;
    b.outIov[answers] = {b.resp[answers].data(), stun::writeBindingResponse(b.resp[answers], req.txid, *from)};
    o.msg_name = &b.from[k];
    o.msg_namelen = h.msg_namelen;
    o.msg_controllen = s.pktinfo ? answerControl(h, b.outControl[answers].bytes) : 0;
    o.msg_control = o.msg_controllen ? b.outControl[answers].bytes : nullptr;
    o.msg_flags = 0;
    answers++;
  }
  if (answers > 0) sendAnswers(s, answers);
  return unsigned(got) == kBatch;  // a full batch: there may be more
}

void Server::sendAnswers(Socket& s, unsigned n) {
  Batch& b = *batch_;
  unsigned done = 0;
  // Each round sends >= 1 answer or drops >= 1; EINTR is retried a few times.
  for (unsigned rounds = 0, eintr = 0; done < n && rounds < 2 * n + 8; rounds++) {
    int r = ::sendmmsg(s.fd, b.out.data() + done, n - done, 0);
    if (r > 0) {
      counters_.success += unsigned(r);
      done += unsigned(r);
      continue;
    }
    if (r < 0 && errno == EINTR && eintr++ < 4) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Send buffer full: drop the rest of this batch rather than wait.
      counters_.writeError += n - done;
      return;
    }
    // This answer failed (no route, EPERM from a firewall, ...): skip it.
    counters_.writeError++;
    done++;
  }
  if (done < n) counters_.writeError += n - done;
}

void Server::pause(size_t index, int err) {
  Socket& s = sockets_[index];
  counters_.readError++;
  LOG_ERR("STUN read on udp {}: {} (pausing it for {} ms)", net::localAddress(s.fd), std::strerror(err),
          kReadErrorBackoff.count());
  s.paused = true;
  s.resumeAt = Clock::now() + kReadErrorBackoff;
  // Out of the set (not just muted: EPOLLERR would still fire) until resumeDue().
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, s.fd, nullptr);
}

void Server::resumeDue(Clock::time_point now) {
  for (size_t i = 0; i < sockets_.size(); i++) {
    Socket& s = sockets_[i];
    if (!s.paused || now < s.resumeAt) continue;
    s.paused = false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, s.fd, &ev) != 0) {
      // Cannot happen for a socket we own; try again after another backoff.
      LOG_ERR("epoll_ctl add udp {}: {}", net::localAddress(s.fd), std::strerror(errno));
      s.paused = true;
      s.resumeAt = now + kReadErrorBackoff;
    }
  }
}

}  // namespace derpd::stun_worker
