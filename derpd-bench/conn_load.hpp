// derpd-bench's connection modes: `idle` opens N DERP clients (full
// handshake), holds them, and reads the server's resident memory before,
// while they are held and after they closed; `connect` runs complete DERP
// handshakes (connect, ServerInfo, close) one after another and counts them
// per second. Bounded in count and time. Included by derpd-bench only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "common/util/result.hpp"

namespace derpd::bench {

struct ConnLoadOptions {
  std::string url;      // http(s)://host:port/derp
  std::string caFile;   // TLS: CA to trust ("" = system)
  int conns = 1000;     // idle: connections held; connect: at most this many handshakes
  std::chrono::milliseconds duration{5000};  // idle: how long they are held; connect: time bound
  pid_t serverPid = -1;  // read its RSS and CPU (0/-1: do not)
  int workers = 1;       // connect: parallel dialers
};

struct IdleResult {
  int connected = 0;             // connections opened
  int held = 0;                  // of those, still open at the end of the hold
  double connectSeconds = 0;     // to open them all
  int64_t rssBefore = -1, rssHeld = -1, rssAfter = -1;  // server VmRSS, bytes
  double ownCpuSeconds = 0;
  std::string firstError;        // why a connection failed, if one did
};

struct ConnectResult {
  int handshakes = 0;
  int failures = 0;
  double seconds = 0;
  double serverCpuSeconds = -1;
  double ownCpuSeconds = 0;
  std::string firstError;
};

Result<IdleResult> runIdle(const ConnLoadOptions& opts);
Result<ConnectResult> runConnect(const ConnLoadOptions& opts);

}  // namespace derpd::bench
