#include "derp_load.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstring>
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
constexpr auto kWarmupBudget = std::chrono::seconds(15);   // until the receiver is reachable
constexpr auto kDrainTime = std::chrono::milliseconds(1000);  // stragglers after sending stops

uint64_t nowNs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

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

void sendLoop(Pair& p, const DerpLoadOptions& o, Clock::time_point end) {
  Bytes pkt(o.size, 0xa5);
  const auto interval = o.rate > 0 ? std::chrono::nanoseconds(1000000000LL / o.rate) : std::chrono::nanoseconds(0);
  auto next = Clock::now();
  while (Clock::now() < end) {
    uint64_t seq = p.sent + 1, ts = nowNs();
    std::memcpy(pkt.data(), &seq, 8);
    std::memcpy(pkt.data() + 8, &ts, 8);
    if (auto r = p.sender->sendPacket(p.receiverKey, pkt); !r) {
      p.error = "send: " + r.error();
      return;
    }
    ++p.sent;
    if (o.rate > 0) {
      next += interval;
      std::this_thread::sleep_until(next);  // pacing the load, not synchronisation
    }
  }
}

void recvLoop(Pair& p, Clock::time_point end) {
  p.latenciesUs.reserve(1 << 20);
  while (Clock::now() < end) {
    auto m = p.receiver->recvPacket(std::chrono::milliseconds(100));
    if (!m) {
      if (m.error() == "timeout" || m.error().find("timeout") != std::string::npos) continue;
      p.error = "recv: " + m.error();
      return;
    }
    if (m->data.size() < 16) continue;
    uint64_t seq, ts;
    std::memcpy(&seq, m->data.data(), 8);
    std::memcpy(&ts, m->data.data() + 8, 8);
    if (seq == 0) continue;  // a warm-up packet
    p.latenciesUs.push_back(uint32_t(std::min<uint64_t>((nowNs() - ts) / 1000, UINT32_MAX)));
  }
}

}  // namespace

Result<DerpLoadResult> runDerpLoad(const DerpLoadOptions& o) {
  if (o.pairs < 1 || o.pairs > 256) return makeError("-pairs must be 1..256");
  if (o.size < 16 || o.size > 65536) return makeError("-size must be 16..65536");
  if (o.rate < 0) return makeError("-rate must not be negative");
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
  for (Pair& p : pairs) {
    threads.emplace_back([&p, &o, end] { sendLoop(p, o, end); });
    threads.emplace_back([&p, end] { recvLoop(p, end + kDrainTime); });
  }
  for (auto& t : threads) t.join();
  DerpLoadResult res;
  res.seconds = std::chrono::duration<double>(o.duration).count();
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
