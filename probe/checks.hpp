// The probe functions of derpd-probe (prober/derp.go and prober/tls.go at
// the reference commit): TLS certificate checks, STUN, DERP delivery between
// two nodes (mesh and bandwidth) and the continuous queuing-delay run. Each
// is bounded by its ProbeContext; none keeps state between runs except what
// the caller passes in. Runs unprivileged.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/client/derp_client.hpp"
#include "common/proto/derpmap/derpmap.hpp"
#include "probe/prober.hpp"

namespace derpd::probe {

// How probe clients reach nodes: trust, and the mesh key (HEAD derpprobe
// -mesh-psk-file: probe clients then skip the servers' admission checks).
struct DialSettings {
  std::string caFile;        // PEM bundle to trust; empty = the system's (SSL_CERT_FILE honoured)
  std::string meshKey;       // 64 hex; empty = none
  bool plainHttp = false;    // http:// instead of https:// (TS_DEBUG_USE_DERP_HTTP=1)
};

// A certificate whose expiry is closer than this fails the TLS probe.
inline constexpr std::chrono::hours kMinCertValidity{7 * 24};

// TLS to host:port with SNI host, the chain verified against the trusted
// roots for host; then every certificate except self-signed ones without
// key ids (SKI == AKI, i.e. derper's meta cert) must have NotBefore <= now
// and NotAfter > now + 7 days.
Result<void> checkTls(const ProbeContext& ctx, const std::string& host, int port, const DialSettings& ds,
                      bool insecure);

// One Tailscale binding request to ip:port from a fresh UDP socket; reads
// for 2 s at a time, resending until the deadline; the answer must carry
// the same transaction id.
Result<void> checkStun(const ProbeContext& ctx, const std::string& ip, int port);

// A fresh-key DERP client to node n (url from HostName and DERPPort, dialled
// at the node's IPv4 or IPv6 literal when it has one), handshake done.
Result<std::unique_ptr<client::Client>> connectNode(const ProbeContext& ctx, const derpmap::Node& n,
                                                    bool isProber, const DialSettings& ds);

// `size` bytes from a client on `from` to a client on `to`, in packets of at
// most 64 KiB with at most 30 in flight, checked for source, content and
// order. transferSeconds (when given) gets the time the transfer took.
Result<void> checkPair(const ProbeContext& ctx, const derpmap::Node& from, const derpmap::Node& to,
                       int64_t size, bool isProber, const DialSettings& ds, double* transferSeconds);

// Queuing-delay statistics of one qd probe (derp_qd_probe_* metrics).
struct QdStats {
  static constexpr double kBounds[] = {.005, .01, .025, .05, .1, .25, .5, 1};
  std::mutex mu;
  uint64_t buckets[8] = {};  // cumulative counts per bound
  uint64_t count = 0;
  double sum = 0;
  double dropped = 0;
  void add(double seconds);
  std::vector<MetricSample> samples();
};

// Sends 260-byte packets from `from` to `to` at pps, recording each one's
// delay; a packet not back within packetTimeout counts as dropped. Runs until
// the context ends (success) or a connection fails (error). With
// failOnDrop, a drop is an error (derpd-probe --once).
Result<void> runQueuingDelay(const ProbeContext& ctx, const derpmap::Node& from, const derpmap::Node& to,
                             int pps, std::chrono::milliseconds packetTimeout, const DialSettings& ds,
                             QdStats& stats, bool failOnDrop);

}  // namespace derpd::probe
