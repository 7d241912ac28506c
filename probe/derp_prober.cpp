#include "derp_prober.hpp"

#include <memory>
#include <vector>

#include "common/client/transport.hpp"
#include "common/config/config.hpp"
#include "common/log/log.hpp"
#include "probe/map_source.hpp"

namespace derpd::probe {

namespace {

std::string every(std::chrono::milliseconds d) { return config::formatGoDuration(d); }

bool isIp(const std::string& s) { return client::isIpLiteral(s); }

}  // namespace

ProbeClass DerpProber::mapProbeClass() {
  return ProbeClass{[this](const ProbeContext& ctx) { return probeMap(ctx); }, "derp_map", {}, nullptr};
}

std::optional<derpmap::DerpMap> DerpProber::currentMap() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

Result<void> DerpProber::probeMap(const ProbeContext& ctx) {
  auto timeout = ctx.left(std::chrono::milliseconds(60000));
  if (timeout.count() <= 0) timeout = std::chrono::milliseconds(1);
  MapFetchResult r = opts_.fixedMapJson.empty()
                         ? fetchMap(opts_.mapSource, opts_.dial, opts_.tailscaledSocket, timeout)
                         : decodeMap(opts_.fixedMapJson, "the DERP map from derpd");
  if (!r.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (r.unreachable && last_ && Clock::now() - lastAt_ < kMapReuse) {
      LOG_WARN("Error while fetching DERP map, using cached one: {}", r.error);
      return okResult();
    }
    if (last_) LOG_WARN("DERP map not updated ({}); probing the last good map", r.error);
    return makeError(r.error);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = r.map;
    lastAt_ = Clock::now();
    nodes_.clear();
    for (const auto& [_, region] : r.map.regions) {
      if (skipRegion(region)) continue;
      for (const auto& n : region.nodes) nodes_[n.name] = n;  // STUNOnly nodes are probed too
    }
  }
  syncProbes(r.map);
  return okResult();
}

void DerpProber::add(const std::string& name, std::chrono::milliseconds interval, const Labels& labels,
                     ProbeClass pc, const std::string& logLine) {
  if (prober_.has(name)) return;
  LOG_INFO("{}", logLine);
  if (auto r = prober_.run(name, interval, labels, std::move(pc)); !r) {
    LOG_WARN("adding probe {}: {}", name, r.error());
    return;
  }
  added_.insert(name);
}

void DerpProber::syncProbes(const derpmap::DerpMap& m) {
  std::lock_guard<std::mutex> sync(syncMu_);
  std::set<std::string> want;
  for (const auto& [_, region] : m.regions) {
    if (skipRegion(region)) continue;
    for (const derpmap::Node& server : region.nodes) {
      const Labels labels = {{"region", region.regionCode},
                             {"region_id", std::to_string(region.regionId)},
                             {"hostname", server.hostName}};
      const std::string base = "derp/" + region.regionCode + "/" + server.name;
      if (opts_.tlsInterval.count() > 0 && !opts_.dial.plainHttp) {
        std::string n = base + "/tls";
        want.insert(n);
        add(n, opts_.tlsInterval, labels, tlsClass(server.name),
            "adding DERP TLS probe for " + server.name + " (" + region.regionName + ") every " +
                every(opts_.tlsInterval));
      }
      if (opts_.stunInterval.count() > 0) {
        const auto port = server.effectiveStunPort();
        // Go at the reference skips only "" here; an address that is not an
        // IP ("none") disables the family too (PROTOCOL.md §10).
        for (int v6 = 1; v6 >= 0; --v6) {
          const std::string& ip = v6 ? server.ipv6 : server.ipv4;
          if (!port || ip.empty() || !isIp(ip)) continue;
          std::string n = base + (v6 ? "/udp6" : "/udp");
          want.insert(n);
          add(n, opts_.stunInterval, labels, udpClass(ip, *port),
              "adding DERP UDP probe for " + server.name + " (" + n + ") every " + every(opts_.stunInterval));
        }
      }
      for (const derpmap::Node& to : region.nodes) {
        const std::string pair = "derp/" + region.regionCode + "/" + server.name + "/" + to.name;
        const std::string desc = server.name + "->" + to.name + " (" + region.regionName + ")";
        if (opts_.meshInterval.count() > 0) {
          want.insert(pair + "/mesh");
          add(pair + "/mesh", opts_.meshInterval, labels, meshClass(server.name, to.name),
              "adding DERP mesh probe for " + desc + " every " + every(opts_.meshInterval));
        }
        if (opts_.bwInterval.count() > 0 && opts_.bwSize > 0) {
          want.insert(pair + "/bw");
          add(pair + "/bw", opts_.bwInterval, labels, bwClass(server.name, to.name),
              "adding DERP bandwidth probe for " + desc + " " + std::to_string(opts_.bwSize) + " bytes every " +
                  every(opts_.bwInterval));
        }
        if (opts_.qdPacketsPerSecond > 0) {
          want.insert(pair + "/qd");
          add(pair + "/qd", std::chrono::milliseconds(-10000), labels, qdClass(server.name, to.name),
              "adding DERP queuing delay probe for " + desc);
        }
      }
    }
  }
  for (auto it = added_.begin(); it != added_.end();) {
    if (want.count(*it)) {
      ++it;
      continue;
    }
    LOG_INFO("removing DERP probe {}", *it);
    prober_.remove(*it);
    it = added_.erase(it);
  }
}

Result<std::pair<derpmap::Node, derpmap::Node>> DerpProber::nodePair(const std::string& a,
                                                                      const std::string& b) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto ia = nodes_.find(a);
  if (ia == nodes_.end()) return makeError("could not find derp node " + a);
  auto ib = nodes_.find(b);
  if (ib == nodes_.end()) return makeError("could not find derp node " + b);
  return std::make_pair(ia->second, ib->second);
}

ProbeClass DerpProber::tlsClass(const std::string& node) {
  return ProbeClass{[this, node](const ProbeContext& ctx) -> Result<void> {
                      auto p = nodePair(node, node);
                      if (!p) return makeError(p.error());
                      const derpmap::Node& n = p->first;
                      return checkTls(ctx, n.hostName, n.effectiveDerpPort(), opts_.dial, n.insecureForTests);
                    },
                    "tls", {}, nullptr};
}

ProbeClass DerpProber::udpClass(const std::string& ip, int port) {
  return ProbeClass{[ip, port](const ProbeContext& ctx) { return checkStun(ctx, ip, port); }, "derp_udp", {},
                    nullptr};
}

ProbeClass DerpProber::meshClass(const std::string& from, const std::string& to) {
  return ProbeClass{[this, from, to](const ProbeContext& ctx) -> Result<void> {
                      auto p = nodePair(from, to);
                      if (!p) return makeError(p.error());
                      return checkPair(ctx, p->first, p->second, 8, true, opts_.dial, nullptr);
                    },
                    "derp_mesh", {{"derp_path", from == to ? "single" : "mesh"}}, nullptr};
}

ProbeClass DerpProber::bwClass(const std::string& from, const std::string& to) {
  struct State {
    std::mutex mu;
    double transferSeconds = 0;
  };
  auto st = std::make_shared<State>();
  const int64_t size = opts_.bwSize;
  return ProbeClass{
      [this, from, to, st, size](const ProbeContext& ctx) -> Result<void> {
        auto p = nodePair(from, to);
        if (!p) return makeError(p.error());
        double secs = 0;
        // IsProber false, as derpprobe: keeps the servers' logs quiet.
        auto r = checkPair(ctx, p->first, p->second, size, false, opts_.dial, &secs);
        std::lock_guard<std::mutex> lock(st->mu);
        st->transferSeconds += secs;
        return r;
      },
      "derp_bw",
      {{"derp_path", from == to ? "single" : "mesh"}},
      [st, size] {
        std::lock_guard<std::mutex> lock(st->mu);
        return std::vector<MetricSample>{
            {"derp_bw_probe_size_bytes", "Payload size of the bandwidth prober", MetricSample::Kind::Gauge,
             double(size), {}, {}, 0, 0},
            {"derp_bw_transfer_time_seconds_total", "Time it took to transfer data", MetricSample::Kind::Counter,
             st->transferSeconds, {}, {}, 0, 0},
        };
      }};
}

ProbeClass DerpProber::qdClass(const std::string& from, const std::string& to) {
  auto stats = std::make_shared<QdStats>();
  const bool once = prober_.settings().once;
  return ProbeClass{[this, from, to, stats, once](const ProbeContext& ctx) -> Result<void> {
                      auto p = nodePair(from, to);
                      if (!p) return makeError(p.error());
                      if (once) {
                        // A continuous probe has no end: --once sends for a
                        // window, and every packet must come back.
                        ProbeContext window(Clock::now() + opts_.qdOnceWindow, nullptr);
                        return runQueuingDelay(window, p->first, p->second, opts_.qdPacketsPerSecond,
                                               opts_.qdPacketTimeout, opts_.dial, *stats, true);
                      }
                      return runQueuingDelay(ctx, p->first, p->second, opts_.qdPacketsPerSecond,
                                             opts_.qdPacketTimeout, opts_.dial, *stats, false);
                    },
                    "derp_qd", {{"derp_path", from == to ? "single" : "mesh"}},
                    [stats] { return stats->samples(); }};
}

}  // namespace derpd::probe
