// derp-worker's counters and their /debug/varz rendering (derper's metric
// names, PROTOCOL.md §11; derpd's own names carry a derpd_ prefix).
// Counters are per event loop: each LoopStats has one writer (its loop
// thread), so increments are plain relaxed load+store with no contention;
// the renderer sums all loops. Gauges live in ServerGauges (atomics).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/ipc/messages.hpp"

namespace derpd::worker {

// A counter with a single writer thread; readable from any thread.
class Counter {
 public:
  void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

enum class DropReason : uint8_t {
  UnknownDest,
  UnknownDestOnFwd,
  GoneDisconnected,
  QueueHead,
  QueueTail,
  WriteError,
  DupClient,
  kCount,
};
const char* dropReasonName(DropReason r);

enum class CloseReason : uint8_t {
  HandshakeTimeout,  // no ClientInfo (or request head) within the deadline
  BadHandshake,      // ClientInfo missing, unopenable or bad JSON; bad TLS
  BadFrame,          // a fatal frame rule of PROTOCOL.md §5.2
  Eof,               // the peer closed
  ReadError,
  WriteError,
  WriteTimeout,      // no write progress for 2 s
  ClosePeer,         // a mesh peer's ClosePeer
  Rejected,          // client verification said no (PROTOCOL.md §5.9)
  Http,              // an HTTP (non-DERP) exchange ended
  Shutdown,
  Evicted,           // the oldest unfinished handshake, closed for a new connection (max-handshakes)
  kCount,
};
const char* closeReasonName(CloseReason r);

// Why an accepted connection was closed at once (derpd_accept_rejected).
enum class AcceptReject : uint8_t {
  Rate,         // -accept-connection-limit / -accept-connection-burst
  Connections,  // max-connections reached
  Handshakes,   // max-handshakes reached and nothing on this loop to evict
  kCount,
};
const char* acceptRejectName(AcceptReject r);

// accept(2) failures that mean "out of a resource" (derpd_accept_errors):
// the listener is paused for a back-off instead of spinning on it.
enum class AcceptError : uint8_t { Emfile, Enfile, Enobufs, Enomem, Other, kCount };
const char* acceptErrorName(AcceptError e);

enum class TlsVersionLabel : uint8_t { V10, V11, V12, V13, Unknown, kCount };

struct LoopStats {
  Counter accepts;            // derp_accepts: DERP takeovers
  Counter bytesReceived, packetsReceived;
  Counter packetsReceivedDisco, packetsReceivedOther;
  Counter bytesSent, packetsSent;
  std::array<Counter, size_t(DropReason::kCount)> dropped;
  Counter droppedDisco, droppedOther;
  Counter forwardedIn, forwardedOut;
  Counter homeMovesIn, homeMovesOut;
  Counter gotPing, sentPong;
  Counter peerGoneDisconnectedFrames, peerGoneNotHereFrames;
  Counter unknownFrames;      // frames skipped as unknown/ignored types
  Counter websocketAccepts;
  // Admission verdicts: allowed, denied, and mesh-helper unavailable
  // (admitted by fail-open / refused).
  Counter admissionAllow, admissionDeny, admissionFailOpen, admissionFailClosed;
  std::array<Counter, size_t(CloseReason::kCount)> closes;
  Counter httpRequests;
  Counter httpHeadTooLarge;
  Counter tlsHandshakeErrors;
  Counter tlsAccepted;        // tls_listener_accepted_connections
  std::array<Counter, size_t(AcceptReject::kCount)> acceptRejected;
  std::array<Counter, size_t(AcceptError::kCount)> acceptErrors;
  std::array<Counter, size_t(TlsVersionLabel::kCount)> tlsRequestVersion;
  std::atomic<double> avgQueueMs{0};  // EMA α=0.1 over this loop's packets (single writer)

  void drop(DropReason r, bool disco) {
    dropped[size_t(r)].add();
    (disco ? droppedDisco : droppedOther).add();
  }
};

struct ServerGauges {
  std::atomic<int64_t> currentConnections{0};
  std::atomic<int64_t> currentHomeConnections{0};
  std::atomic<int64_t> clientsLocal{0};  // keys with a local conn
  std::atomic<int64_t> dupClientKeys{0};
  std::atomic<int64_t> dupClientConns{0};
  std::atomic<uint64_t> totalDupClientConns{0};
  std::atomic<int64_t> watchers{0};
  // Mesh forwarder churn (derper's multiforwarder_created/_deleted,
  // packet_forwarder_delete_other_value).
  std::atomic<uint64_t> multiForwarderCreated{0};
  std::atomic<uint64_t> multiForwarderDeleted{0};
  std::atomic<uint64_t> forwarderDeleteOther{0};
  std::atomic<int64_t> tlsActive[size_t(TlsVersionLabel::kCount)] = {};
};

// Prometheus text builder: entries rendered sorted by name, as derper's
// expvar export does.
class VarzWriter {
 public:
  void counter(const std::string& name, uint64_t v);
  void gauge(const std::string& name, int64_t v);
  void untyped(const std::string& name, double v);
  void labeledCounter(const std::string& name, const std::string& label,
                      const std::vector<std::pair<std::string, uint64_t>>& values);
  void labeledGauge(const std::string& name, const std::string& label,
                    const std::vector<std::pair<std::string, int64_t>>& values);
  // Metrics reported by the other roles: one entry per name, grouped, after
  // the entries of derp-worker's own (a clash keeps ours).
  void peerMetrics(const std::vector<ipc::Metric>& metrics);
  std::string render() const;

 private:
  std::map<std::string, std::string> entries_;  // name -> rendered block
};

}  // namespace derpd::worker
