#include "derp_load.hpp"

#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "common/client/derp_client.hpp"
#include "common/crypto/keys.hpp"
#include "proc_stats.hpp"

namespace derpd::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kWarmupBudget = std::chrono::seconds(15);   // until the receiver is reachable
constexpr auto kDrainTime = std::chrono::milliseconds(1000);  // stragglers after sending stops

uint64_t nowNs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

// A descriptor closed when it goes out of scope.
struct OwnedFd {
  explicit OwnedFd(int f) : fd(f) {}
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() {
    if (fd >= 0) ::close(fd);
  }
  int fd;
};

struct Pair {
  std::unique_ptr<client::Client> sender, receiver;
  crypto::NodePublic receiverKey;
  uint64_t sent = 0;
  std::vector<uint32_t> latenciesUs;  // receiver thread only
  std::string error;
};

Result<std::unique_ptr<client::Client>> connect(const std::string& url, const std::string& caFile) {
  client::ClientOptions o;
  o.url = url;
  o.key = crypto::NodePrivate::generate();
  o.caFile = caFile;
  return client::Client::connect(o);
}

// Sends marked packets until one arrives: the path (a mesh forwarder
// included) is in place.
Result<void> warmUp(Pair& p, size_t size) {
  Bytes pkt(size, 0);
  const auto until = Clock::now() + kWarmupBudget;
  while (Clock::now() < until) {
    if (auto r = p.sender->sendPacket(p.receiverKey, pkt); !r) return r;
    auto got = p.receiver->recvPacket(std::chrono::milliseconds(200));
    if (got) return okResult();
  }
  return makeError("no packet arrived within " + std::to_string(kWarmupBudget.count()) + " s");
}

// Sends one packet stamped with its sequence number and send time. False on
// an error (in p.error).
bool sendOne(Pair& p, Bytes& pkt) {
  uint64_t seq = p.sent + 1, ts = nowNs();
  std::memcpy(pkt.data(), &seq, 8);
  std::memcpy(pkt.data() + 8, &ts, 8);
  if (auto r = p.sender->sendPacket(p.receiverKey, pkt); !r) {
    p.error = "send: " + r.error();
    return false;
  }
  ++p.sent;
  return true;
}

enum class Take { Packet, Nothing, Failed };

// Receives one packet within `wait` and records its latency (warm-up
// packets are taken and not recorded). Failed: the error is in p.error.
Take takeOne(Pair& p, std::chrono::milliseconds wait) {
  auto m = p.receiver->recvPacket(wait);
  if (!m) {
    if (m.error().find("timeout") != std::string::npos) return Take::Nothing;
    p.error = "recv: " + m.error();
    return Take::Failed;
  }
  if (m->data.size() < 16) return Take::Packet;
  uint64_t seq, ts;
  std::memcpy(&seq, m->data.data(), 8);
  std::memcpy(&ts, m->data.data() + 8, 8);
  if (seq != 0) p.latenciesUs.push_back(uint32_t(std::min<uint64_t>((nowNs() - ts) / 1000, UINT32_MAX)));
  return Take::Packet;
}

// Full speed: a sending and a receiving thread per pair.
void sendLoop(Pair& p, const DerpLoadOptions& o, Clock::time_point end) {
  Bytes pkt(o.size, 0xa5);
  while (Clock::now() < end && sendOne(p, pkt)) {
  }
}

void recvLoop(Pair& p, Clock::time_point end) {
  p.latenciesUs.reserve(1 << 20);
  while (Clock::now() < end && takeOne(p, std::chrono::milliseconds(100)) != Take::Failed) {
  }
}

// Takes what the receiver has (frames already in hand, then the socket)
// without waiting. False on an error (in p.error).
bool drainReceiver(Pair& p) {
  for (;;) {
    switch (takeOne(p, std::chrono::milliseconds(0))) {
      case Take::Packet: continue;
      case Take::Nothing: return true;
      case Take::Failed: return false;
    }
  }
}

// A paced load on one thread for a share of the pairs: it sleeps in epoll
// until a receiver has bytes or the next send is due (a timerfd at that
// instant), so the load generator adds one thread, not two per pair, to
// the cores it shares with the server. Each sender keeps its own schedule
// (-rate per second from a random phase, as independent clients would);
// a send that is late goes out at once, as sendLoop's does. Receiving
// goes on after sending stops until every packet sent has arrived or the
// drain time is over.
void pacedLoop(std::vector<Pair*> group, const DerpLoadOptions& o, Clock::time_point start,
               Clock::time_point end, Clock::time_point drainEnd) {
  auto fail = [&](const std::string& what) { group.front()->error = what + ": " + std::strerror(errno); };
  OwnedFd ep(::epoll_create1(EPOLL_CLOEXEC));
  OwnedFd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (ep.fd < 0 || timer.fd < 0) return fail("epoll/timerfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = group.size();  // the timer
  if (::epoll_ctl(ep.fd, EPOLL_CTL_ADD, timer.fd, &ev) != 0) return fail("epoll_ctl");
  for (size_t i = 0; i < group.size(); ++i) {
    ev.data.u64 = i;
    if (::epoll_ctl(ep.fd, EPOLL_CTL_ADD, group[i]->receiver->fd(), &ev) != 0) return fail("epoll_ctl");
  }
  const auto interval = std::chrono::nanoseconds(1000000000LL / o.rate);
  std::mt19937_64 rng{std::random_device{}()};
  std::vector<Clock::time_point> next(group.size());
  for (auto& n : next) n = start + std::chrono::nanoseconds(rng() % uint64_t(interval.count()));
  // Room for every latency up front: growing the vector mid-run would be a
  // pause in the thread that timestamps arrivals.
  const double expected = double(o.rate) * std::chrono::duration<double>(end - start).count() + 1024;
  for (Pair* p : group) p->latenciesUs.reserve(size_t(std::min(expected, 64e6)));
  Bytes pkt(o.size, 0xa5);
  for (;;) {
    Clock::time_point now = Clock::now(), wake = drainEnd;
    if (now >= drainEnd) return;
    if (now < end) {
      for (size_t i = 0; i < group.size(); ++i) {
        Pair& p = *group[i];
        while (next[i] <= now && now < end) {
          if (!sendOne(p, pkt)) return;
          next[i] += interval;
          now = Clock::now();
        }
        if (next[i] < end) wake = std::min(wake, next[i]);
      }
    } else {
      uint64_t sent = 0, got = 0;
      for (Pair* p : group) sent += p->sent, got += p->latenciesUs.size();
      if (got >= sent) return;
    }
    itimerspec its{};
    const auto at = std::chrono::duration_cast<std::chrono::nanoseconds>(wake.time_since_epoch()).count();
    its.it_value.tv_sec = time_t(at / 1000000000);
    its.it_value.tv_nsec = long(at % 1000000000);
    if (::timerfd_settime(timer.fd, TFD_TIMER_ABSTIME, &its, nullptr) != 0) return fail("timerfd_settime");
    epoll_event evs[64];
    int n = ::epoll_wait(ep.fd, evs, 64, -1);
    if (n < 0 && errno != EINTR) return fail("epoll_wait");
    for (int k = 0; k < n; ++k) {
      const size_t i = size_t(evs[k].data.u64);
      if (i == group.size()) {
        uint64_t expirations;
        (void)!::read(timer.fd, &expirations, sizeof expirations);
      } else if (!drainReceiver(*group[i])) {
        return;
      }
    }
  }
}

}  // namespace

Result<DerpLoadResult> runDerpLoad(const DerpLoadOptions& o) {
  if (o.pairs < 1 || o.pairs > 256) return makeError("-pairs must be 1..256");
  if (o.size < 16 || o.size > 65536) return makeError("-size must be 16..65536");
  if (o.rate < 0 || o.rate > 1000000) return makeError("-rate must be 0..1000000");
  if (o.threads < 1 || o.threads > 64) return makeError("-threads must be 1..64");
  std::vector<Pair> pairs(size_t(o.pairs));
  for (Pair& p : pairs) {
    auto s = connect(o.fromUrl, o.caFile);
    if (!s) return makeError("sender to " + o.fromUrl + ": " + s.error());
    auto r = connect(o.toUrl, o.caFile);
    if (!r) return makeError("receiver to " + o.toUrl + ": " + r.error());
    p.sender = std::move(*s);
    p.receiver = std::move(*r);
    p.receiverKey = p.receiver->publicKey();
  }
  for (Pair& p : pairs) {
    if (auto r = warmUp(p, o.size); !r) return makeError("warm-up: " + r.error());
  }
  const double cpu0 = ownCpuSeconds();
  const double serverCpu0 = o.serverPid > 0 ? processCpuSeconds(o.serverPid) : -1;
  const auto start = Clock::now();
  const auto end = start + o.duration;
  std::vector<std::thread> threads;
  if (o.rate > 0) {
    const size_t n = size_t(std::min(o.threads, o.pairs));
    std::vector<std::vector<Pair*>> groups(n);
    for (size_t i = 0; i < pairs.size(); ++i) groups[i % n].push_back(&pairs[i]);
    for (auto& g : groups) {
      threads.emplace_back([g, &o, start, end] { pacedLoop(g, o, start, end, end + kDrainTime); });
    }
  } else {
    for (Pair& p : pairs) {
      threads.emplace_back([&p, &o, end] { sendLoop(p, o, end); });
      threads.emplace_back([&p, end] { recvLoop(p, end + kDrainTime); });
    }
  }
  for (auto& t : threads) t.join();
  DerpLoadResult res;
  res.seconds = std::chrono::duration<double>(o.duration).count();
  res.measuredSeconds = std::chrono::duration<double>(Clock::now() - start).count();
  res.ownCpuSeconds = ownCpuSeconds() - cpu0;
  if (o.serverPid > 0) {
    const double c = processCpuSeconds(o.serverPid);
    if (serverCpu0 < 0 || c < 0) return makeError("cannot read /proc/" + std::to_string(o.serverPid) + "/stat");
    res.serverCpuSeconds = c - serverCpu0;
    res.serverRssBytes = residentBytes(o.serverPid);
  }
  std::vector<uint32_t>& all = res.latenciesUs;
  for (Pair& p : pairs) {
    if (!p.error.empty()) return makeError(p.error);
    res.sent += p.sent;
    res.delivered += p.latenciesUs.size();
    all.insert(all.end(), p.latenciesUs.begin(), p.latenciesUs.end());
  }
  if (!all.empty()) {
    std::sort(all.begin(), all.end());
    auto at = [&](double q) { return double(all[std::min(all.size() - 1, size_t(q * double(all.size())))]) / 1000; };
    res.p50Ms = at(0.50);
    res.p99Ms = at(0.99);
    res.p999Ms = at(0.999);
    res.maxMs = double(all.back()) / 1000;
  }
  return res;
}

}  // namespace derpd::bench
