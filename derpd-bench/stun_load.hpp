// derpd-bench's STUN load: Tailscale binding requests over UDP from a few
// sockets, a fixed window of requests in flight per socket, sent and received
// in batches (sendmmsg / recvmmsg). Bounded in time; a request unanswered for
// kLossTimeout counts as lost and its slot is refilled.
// Included by derpd-bench only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "common/util/result.hpp"

namespace derpd::bench {

struct StunLoadOptions {
  std::string host = "127.0.0.1";  // an IP literal
  uint16_t port = 3478;
  std::chrono::milliseconds duration{5000};
  int sockets = 4;
  int window = 256;      // requests in flight per socket
  pid_t serverPid = -1;  // >0: report this process's CPU time over the run
};

struct StunLoadResult {
  uint64_t sent = 0;
  uint64_t answered = 0;  // valid responses with one of our transaction ids
  uint64_t lost = 0;      // slots refilled after kLossTimeout
  uint64_t invalid = 0;   // datagrams that were not a valid answer
  double seconds = 0;
  double serverCpuSeconds = -1;  // -1: not measured
  double ownCpuSeconds = 0;
};

inline constexpr std::chrono::milliseconds kLossTimeout{200};

Result<StunLoadResult> runStunLoad(const StunLoadOptions& opts);

}  // namespace derpd::bench
