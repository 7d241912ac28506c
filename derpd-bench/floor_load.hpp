// derpd-bench's `floor` mode: what relaying costs this machine's kernel
// before any relay does any work of its own. An in-process relay thread
// that does nothing but epoll_wait, read and write (plain loopback TCP, no
// TLS, no framing, TCP_NODELAY as derp-worker) forwards each sender's
// bytes to its receiver, under the same paced load as `derp` mode. Its
// thread CPU time per relayed packet is the floor under any relay's cost
// per packet at that load on this machine, derpd's and derper's alike.
// Bounded in time. Included by derpd-bench only.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::bench {

struct FloorLoadOptions {
  int pairs = 4;
  size_t size = 1280;  // packet bytes (>= 16)
  int rate = 10000;    // packets/s per sender (> 0: the floor of a paced load)
  int threads = 1;     // load threads sharing the pairs
  std::chrono::milliseconds duration{5000};
};

struct FloorLoadResult {
  uint64_t sent = 0;
  uint64_t delivered = 0;
  double seconds = 0;          // sending time
  double relayCpuSeconds = 0;  // the relay thread's CPU over the whole run
  double p50Ms = 0, p99Ms = 0, p999Ms = 0, maxMs = 0;
  double ownCpuSeconds = 0;    // the whole process, relay thread included
};

Result<FloorLoadResult> runFloorLoad(const FloorLoadOptions& opts);

}  // namespace derpd::bench
