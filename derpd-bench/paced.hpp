// The paced load shared by derpd-bench's `derp` and `floor` modes: each
// sender sends -rate packets per second from its own random phase, each
// packet stamped with a sequence number and its send time; one thread runs
// a share of the pairs, asleep in epoll until a send is due (a timerfd at
// that instant) or a receiver has bytes. Included by derpd-bench only.
//
// A pair type P provides: `uint64_t sent`, `std::vector<uint32_t>
// latenciesUs`, `std::string error`, and the free functions
//   bool sendOne(P&, Bytes& pkt)   stamp (stampPacket) and send one packet
//   bool drainReceiver(P&)          take what arrived without waiting,
//                                   noting each packet (noteArrival)
//   int receiverFd(const P&)        what epoll waits on
// (false: the error is in p.error and the thread stops).
#pragma once

#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/util/bytes.hpp"

namespace derpd::bench {

using PacedClock = std::chrono::steady_clock;

// How long receivers wait for stragglers after sending stops (every mode
// with pairs, paced or at full speed).
inline constexpr auto kDrainTime = std::chrono::milliseconds(1000);

inline uint64_t nowNs() {
  return uint64_t(
      std::chrono::duration_cast<std::chrono::nanoseconds>(PacedClock::now().time_since_epoch()).count());
}

// Writes the sequence number and the send time into the packet's first 16
// bytes (the packet is at least that long).
inline void stampPacket(Bytes& pkt, uint64_t seq) {
  const uint64_t ts = nowNs();
  std::memcpy(pkt.data(), &seq, 8);
  std::memcpy(pkt.data() + 8, &ts, 8);
}

// Records an arrived packet's one-way latency; sequence number 0 marks a
// warm-up packet, which is not recorded.
inline void noteArrival(std::vector<uint32_t>& latenciesUs, const uint8_t* data, size_t n) {
  if (n < 16) return;
  uint64_t seq, ts;
  std::memcpy(&seq, data, 8);
  std::memcpy(&ts, data + 8, 8);
  if (seq == 0) return;
  latenciesUs.push_back(uint32_t(std::min<uint64_t>((nowNs() - ts) / 1000, UINT32_MAX)));
}

struct LatencySummary {
  double p50Ms = 0, p99Ms = 0, p999Ms = 0, maxMs = 0;
};

// Sorts the latencies and reads the percentiles off them.
inline LatencySummary summarise(std::vector<uint32_t>& all) {
  LatencySummary s;
  if (all.empty()) return s;
  std::sort(all.begin(), all.end());
  auto at = [&](double q) { return double(all[std::min(all.size() - 1, size_t(q * double(all.size())))]) / 1000; };
  s.p50Ms = at(0.50);
  s.p99Ms = at(0.99);
  s.p999Ms = at(0.999);
  s.maxMs = double(all.back()) / 1000;
  return s;
}

struct PairTotals {
  uint64_t sent = 0, delivered = 0;
  std::vector<uint32_t> latenciesUs;  // every delivered packet's, sorted
  LatencySummary latency;
};

// Adds up the pairs after a run: the first pair's error, or "" and `t`.
template <typename P>
std::string collect(std::vector<P>& pairs, PairTotals& t) {
  for (P& p : pairs) {
    if (!p.error.empty()) return p.error;
    t.sent += p.sent;
    t.delivered += p.latenciesUs.size();
    t.latenciesUs.insert(t.latenciesUs.end(), p.latenciesUs.begin(), p.latenciesUs.end());
  }
  t.latency = summarise(t.latenciesUs);
  return "";
}

// Runs `group` at `rate` packets per second per sender from `start` until
// `end`, then receives until every packet sent has arrived or `drainEnd`.
// A send that is late goes out at once. Errors land in the first pair's
// error (its own, when a pair fails).
template <typename P>
void pacedLoop(std::vector<P*> group, int rate, size_t size, PacedClock::time_point start,
               PacedClock::time_point end, PacedClock::time_point drainEnd) {
  auto fail = [&](const char* what) { group.front()->error = std::string(what) + ": " + std::strerror(errno); };
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  const int timer = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  struct Closer {
    int a, b;
    ~Closer() {
      if (a >= 0) ::close(a);
      if (b >= 0) ::close(b);
    }
  } closer{ep, timer};
  if (ep < 0 || timer < 0) return fail("epoll/timerfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = group.size();  // the timer
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, timer, &ev) != 0) return fail("epoll_ctl");
  for (size_t i = 0; i < group.size(); ++i) {
    ev.data.u64 = i;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, receiverFd(*group[i]), &ev) != 0) return fail("epoll_ctl");
  }
  const auto interval = std::chrono::nanoseconds(1000000000LL / rate);
  std::mt19937_64 rng{std::random_device{}()};
  std::vector<PacedClock::time_point> next(group.size());
  for (auto& n : next) n = start + std::chrono::nanoseconds(rng() % uint64_t(interval.count()));
  // Room for every latency up front: growing the vector mid-run would be a
  // pause in the thread that timestamps arrivals.
  const double expected = double(rate) * std::chrono::duration<double>(end - start).count() + 1024;
  for (P* p : group) p->latenciesUs.reserve(size_t(std::min(expected, 64e6)));
  Bytes pkt(size, 0xa5);
  for (;;) {
    PacedClock::time_point now = PacedClock::now(), wake = drainEnd;
    if (now >= drainEnd) return;
    if (now < end) {
      for (size_t i = 0; i < group.size(); ++i) {
        while (next[i] <= now && now < end) {
          if (!sendOne(*group[i], pkt)) return;
          next[i] += interval;
          now = PacedClock::now();
        }
        if (next[i] < end) wake = std::min(wake, next[i]);
      }
    } else {
      uint64_t sent = 0, got = 0;
      for (P* p : group) sent += p->sent, got += p->latenciesUs.size();
      if (got >= sent) return;
    }
    itimerspec its{};
    const auto at = std::chrono::duration_cast<std::chrono::nanoseconds>(wake.time_since_epoch()).count();
    its.it_value.tv_sec = time_t(at / 1000000000);
    its.it_value.tv_nsec = long(at % 1000000000);
    if (::timerfd_settime(timer, TFD_TIMER_ABSTIME, &its, nullptr) != 0) return fail("timerfd_settime");
    epoll_event evs[64];
    const int n = ::epoll_wait(ep, evs, 64, -1);
    if (n < 0 && errno != EINTR) return fail("epoll_wait");
    for (int k = 0; k < n; ++k) {
      const size_t i = size_t(evs[k].data.u64);
      if (i == group.size()) {
        uint64_t expirations;
        (void)!::read(timer, &expirations, sizeof expirations);
      } else if (!drainReceiver(*group[i])) {
        return;
      }
    }
  }
}

// Shares the pairs among `threads` threads running pacedLoop and waits for them.
template <typename P>
void runPaced(std::vector<P>& pairs, int threads, int rate, size_t size, PacedClock::time_point start,
              PacedClock::time_point end, PacedClock::time_point drainEnd) {
  const size_t n = std::min(size_t(std::max(threads, 1)), pairs.size());
  std::vector<std::vector<P*>> groups(n);
  for (size_t i = 0; i < pairs.size(); ++i) groups[i % n].push_back(&pairs[i]);
  std::vector<std::thread> running;
  for (auto& g : groups) {
    running.emplace_back([g, rate, size, start, end, drainEnd] { pacedLoop(g, rate, size, start, end, drainEnd); });
  }
  for (auto& t : running) t.join();
}

}  // namespace derpd::bench
