#include "derp_load.hpp"

#include <algorithm>
#include <memory>
#include <thread>
#include <vector>

#include "common/client/derp_client.hpp"
#include "common/crypto/keys.hpp"
#include "paced.hpp"
#include "proc_stats.hpp"

namespace derpd::bench {

namespace {

using Clock = PacedClock;
constexpr auto kWarmupBudget = std::chrono::seconds(15);   // until the receiver is reachable

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
  stampPacket(pkt, p.sent + 1);
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
  noteArrival(p.latenciesUs, m->data.data(), m->data.size());
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

int receiverFd(const Pair& p) { return p.receiver->fd(); }

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
    runPaced(pairs, o.threads, o.rate, o.size, start, end, end + kDrainTime);
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
  PairTotals t;
  if (std::string e = collect(pairs, t); !e.empty()) return makeError(e);
  res.sent = t.sent, res.delivered = t.delivered;
  const LatencySummary& l = t.latency;
  res.p50Ms = l.p50Ms, res.p99Ms = l.p99Ms, res.p999Ms = l.p999Ms, res.maxMs = l.maxMs;
  res.latenciesUs = std::move(t.latenciesUs);
  return res;
}

}  // namespace derpd::bench
