#include "conn_load.hpp"

#include <poll.h>

#include <sys/resource.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/client/derp_client.hpp"
#include "common/crypto/keys.hpp"
#include "proc_stats.hpp"

namespace derpd::bench {

namespace {

using Clock = std::chrono::steady_clock;

client::ClientOptions clientOptions(const ConnLoadOptions& o) {
  client::ClientOptions c;
  c.url = o.url;
  c.caFile = o.caFile;
  c.key = crypto::NodePrivate::generate();
  c.timeout = std::chrono::milliseconds(10000);
  return c;
}

// The server's RSS once it has not changed for `quiet` (derp-worker hands
// freed memory back to the system at most every 2 s), at most 15 s.
int64_t settledRss(pid_t pid, std::chrono::milliseconds quiet) {
  if (pid <= 0) return -1;
  int64_t last = residentBytes(pid);
  auto since = Clock::now();
  const auto giveUp = since + std::chrono::seconds(15);
  while (Clock::now() < giveUp) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    int64_t now = residentBytes(pid);
    if (now != last) {
      last = now;
      since = Clock::now();
    } else if (Clock::now() - since >= quiet) {
      break;
    }
  }
  return last;
}

}  // namespace

Result<IdleResult> runIdle(const ConnLoadOptions& o) {
  IdleResult r;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  const double cpu0 = ownCpuSeconds();
  r.rssBefore = settledRss(o.serverPid, std::chrono::milliseconds(500));
  std::vector<std::unique_ptr<client::Client>> held;
  held.reserve(size_t(o.conns));
  const auto t0 = Clock::now();
  const auto giveUp = t0 + std::chrono::minutes(10);
  for (int i = 0; i < o.conns && Clock::now() < giveUp; ++i) {
    auto c = client::Client::connect(clientOptions(o));
    if (!c) {
      r.firstError = "connection " + std::to_string(i + 1) + ": " + c.error();
      break;
    }
    held.push_back(std::move(c).value());
  }
  r.connected = int(held.size());
  r.connectSeconds = std::chrono::duration<double>(Clock::now() - t0).count();
  // Hold them (the server sends keepalives every ~60 s; nothing to read).
  const auto until = Clock::now() + o.duration;
  r.rssHeld = settledRss(o.serverPid, std::chrono::milliseconds(500));
  while (Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (o.serverPid > 0) r.rssHeld = std::max(r.rssHeld, residentBytes(o.serverPid));
  // Held means still open now: a server that closed (or shut down) during
  // the hold has sent FIN or RST, which poll reports without a read.
  for (auto& c : held) {
    pollfd p{c->fd(), POLLRDHUP, 0};
    const bool gone = c->closed() || (::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)));
    if (!gone) ++r.held;
  }
  for (auto& c : held) c->close();
  held.clear();
  r.rssAfter = settledRss(o.serverPid, std::chrono::milliseconds(3000));
  r.ownCpuSeconds = ownCpuSeconds() - cpu0;
  return r;
}

Result<ConnectResult> runConnect(const ConnLoadOptions& o) {
  ConnectResult r;
  const double cpu0 = ownCpuSeconds();
  const double serverCpu0 = o.serverPid > 0 ? processCpuSeconds(o.serverPid) : -1;
  std::atomic<int> started{0}, done{0}, failed{0};
  std::mutex mu;
  const auto t0 = Clock::now();
  const auto until = t0 + o.duration;
  std::vector<std::thread> workers;
  for (int w = 0; w < std::max(1, o.workers); ++w) {
    workers.emplace_back([&] {
      while (Clock::now() < until && started.fetch_add(1) < o.conns) {
        auto c = client::Client::connect(clientOptions(o));
        if (!c) {
          failed++;
          std::lock_guard<std::mutex> lock(mu);
          if (r.firstError.empty()) r.firstError = c.error();
          continue;
        }
        (*c)->close();
        done++;
      }
    });
  }
  for (auto& t : workers) t.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.handshakes = done.load();
  r.failures = failed.load();
  if (serverCpu0 >= 0) {
    double c = processCpuSeconds(o.serverPid);
    if (c >= 0) r.serverCpuSeconds = c - serverCpu0;
  }
  r.ownCpuSeconds = ownCpuSeconds() - cpu0;
  return r;
}

}  // namespace derpd::bench
