// derpd-bench's DERP pairs load: N pairs of clients, each sender connected
// to -from and its receiver to -to (the same URL: local relaying; another
// node of a mesh: forwarding). Senders send packets of -size bytes at full
// speed or paced to -rate per second; each packet carries its sequence
// number and send time, so the receiver (same process, same clock) measures
// one-way latency and loss. Bounded in time. Included by derpd-bench only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::bench {

struct DerpLoadOptions {
  std::string fromUrl;  // senders' server
  std::string toUrl;    // receivers' server
  std::string caFile;   // TLS: CA to trust ("" = system)
  int pairs = 1;
  size_t size = 1000;   // packet bytes (>= 16: sequence number + timestamp)
  int rate = 0;         // packets/s per sender; 0 = as fast as the connection takes them
  // Paced loads (rate > 0): event threads sharing the pairs between them.
  // Full speed: always a sending and a receiving thread per pair.
  int threads = 1;
  std::chrono::milliseconds duration{5000};
  int serverPid = -1;   // > 0: read its CPU seconds and RSS over the run
};

struct DerpLoadResult {
  uint64_t sent = 0;
  uint64_t delivered = 0;
  double seconds = 0;            // sending time
  double measuredSeconds = 0;    // sending and draining: what the CPU figures cover
  double p50Ms = 0, p99Ms = 0, p999Ms = 0, maxMs = 0;  // one-way latency of delivered packets
  double ownCpuSeconds = 0;
  double serverCpuSeconds = -1;  // over sending and the drain after it; -1: not read
  int64_t serverRssBytes = -1;   // at the end of the run
  // Every delivered packet's latency in microseconds, sorted.
  std::vector<uint32_t> latenciesUs;
};

Result<DerpLoadResult> runDerpLoad(const DerpLoadOptions& opts);

}  // namespace derpd::bench
