// derpprobe's derpProber: fetches the DERP map every -interval (the
// "derpmap-probe") and keeps one probe per node and node pair in the
// Prober, adding and removing them as the map changes: TLS per node, STUN
// per node and address family, DERP delivery ("mesh"), bandwidth ("bw") and
// queuing delay ("qd") for every ordered pair of nodes of a region,
// including a node with itself. Runs unprivileged.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "common/proto/derpmap/derpmap.hpp"
#include "probe/checks.hpp"
#include "probe/prober.hpp"

namespace derpd::probe {

struct DerpProberOptions {
  std::string mapSource;                       // -derp-map
  std::string fixedMapJson;                    // when set: this map, never fetched (the monitor's self map)
  std::chrono::milliseconds meshInterval{15000};
  std::chrono::milliseconds stunInterval{15000};
  std::chrono::milliseconds tlsInterval{15000};
  std::chrono::milliseconds bwInterval{0};     // 0 = no bandwidth probes
  int64_t bwSize = 1000000;
  int qdPacketsPerSecond = 0;                  // 0 = no queuing-delay probes
  std::chrono::milliseconds qdPacketTimeout{5000};
  std::chrono::milliseconds qdOnceWindow{3000};  // --once: how long a qd probe sends
  std::string regionCode;                      // empty = every region
  std::string tailscaledSocket = "/var/run/tailscale/tailscaled.sock";
  DialSettings dial;
};

class DerpProber {
 public:
  // A failed fetch within this age of the last good map reuses that map.
  static constexpr std::chrono::minutes kMapReuse{10};

  DerpProber(Prober& prober, DerpProberOptions opts) : prober_(prober), opts_(std::move(opts)) {}

  // The class of the "derpmap-probe": fetch, then add/remove node probes.
  ProbeClass mapProbeClass();

  // The map in use (nullopt before the first good fetch).
  std::optional<derpmap::DerpMap> currentMap() const;

 private:
  Result<void> probeMap(const ProbeContext& ctx);
  // Adds the probes the map wants and removes the others (mu_ not held).
  void syncProbes(const derpmap::DerpMap& m);
  Result<std::pair<derpmap::Node, derpmap::Node>> nodePair(const std::string& a, const std::string& b) const;
  bool skipRegion(const derpmap::Region& r) const {
    return !opts_.regionCode.empty() && r.regionCode != opts_.regionCode;
  }
  void add(const std::string& name, std::chrono::milliseconds interval, const Labels& labels, ProbeClass pc,
           const std::string& logLine);

  ProbeClass tlsClass(const std::string& node);
  ProbeClass udpClass(const std::string& ip, int port);
  ProbeClass meshClass(const std::string& from, const std::string& to);
  ProbeClass bwClass(const std::string& from, const std::string& to);
  ProbeClass qdClass(const std::string& from, const std::string& to);

  Prober& prober_;
  const DerpProberOptions opts_;

  mutable std::mutex mu_;  // guards the map state below
  std::optional<derpmap::DerpMap> last_;
  Clock::time_point lastAt_{};
  std::map<std::string, derpmap::Node> nodes_;  // by name

  std::mutex syncMu_;            // one sync at a time (map probe vs /debug/probe-run)
  std::set<std::string> added_;  // probes this prober registered; guarded by syncMu_
};

}  // namespace derpd::probe
