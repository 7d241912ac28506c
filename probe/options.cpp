#include "options.hpp"

#include "common/config/config.hpp"
#include "common/config/go_flags.hpp"

namespace derpd::probe {

namespace {

using Set = std::function<Result<void>(Options&, const std::string&)>;

// A Go duration flag; negative values are refused, zero only where allowed.
Set durationFlag(std::chrono::milliseconds Options::*field, bool zeroOk) {
  return [field, zeroOk](Options& o, const std::string& v) -> Result<void> {
    auto d = config::parseGoDuration(v);
    if (!d) return makeError("invalid duration \"" + v + "\"");
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
    if (ms.count() < 0 || (!zeroOk && ms.count() == 0)) return makeError("want a positive duration");
    o.*field = ms;
    return okResult();
  };
}

Set boolFlag(bool Options::*field) {
  return [field](Options& o, const std::string& v) -> Result<void> {
    auto b = config::flagBool(v);
    if (!b) return makeError(b.error());
    o.*field = *b;
    return okResult();
  };
}

Set stringFlag(std::string Options::*field) {
  return [field](Options& o, const std::string& v) -> Result<void> {
    o.*field = v;
    return okResult();
  };
}

const config::GoFlagTable<Options>& flags() {
  static const config::GoFlagTable<Options> kFlags = [] {
    config::GoFlagTable<Options> t = {
        {"derp-map", {false, [](Options& o, const std::string& v) -> Result<void> {
                        if (v.empty()) return makeError("empty DERP map source");
                        o.derpMap = v;
                        return okResult();
                      }}},
        {"listen", {false, stringFlag(&Options::listen)}},
        {"once", {true, boolFlag(&Options::once)}},
        {"spread", {true, boolFlag(&Options::spread)}},
        {"interval", {false, durationFlag(&Options::interval, false)}},
        {"mesh-interval", {false, durationFlag(&Options::meshInterval, true)}},
        {"stun-interval", {false, durationFlag(&Options::stunInterval, true)}},
        {"tls-interval", {false, durationFlag(&Options::tlsInterval, true)}},
        {"bw-interval", {false, durationFlag(&Options::bwInterval, true)}},
        {"bw-probe-size-bytes", {false, [](Options& o, const std::string& v) -> Result<void> {
                                   auto i = config::parseGoInt(v);
                                   if (!i || *i < 0 || *i > (int64_t(1) << 30))
                                     return makeError("want a size from 0 to 1073741824");
                                   o.bwProbeSizeBytes = *i;
                                   return okResult();
                                 }}},
        {"qd-packets-per-second", {false, [](Options& o, const std::string& v) -> Result<void> {
                                     auto i = config::flagInt(v);
                                     if (!i || *i < 0 || *i > 10000) return makeError("want 0 to 10000");
                                     o.qdPacketsPerSecond = *i;
                                     return okResult();
                                   }}},
        {"qd-packet-timeout", {false, durationFlag(&Options::qdPacketTimeout, false)}},
        {"region-code", {false, stringFlag(&Options::regionCode)}},
        {"mesh-psk-file", {false, stringFlag(&Options::meshPskFile)}},
        {"ca-file", {false, stringFlag(&Options::caFile)}},
        {"tailscaled-socket", {false, stringFlag(&Options::tailscaledSocket)}},
        {"qd-once-window", {false, durationFlag(&Options::qdOnceWindow, false)}},
        {"plain-http", {true, boolFlag(&Options::plainHttp)}},
        {"derp-map-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
                           auto i = config::flagInt(v);
                           if (!i || *i < 0) return makeError("bad fd");
                           o.derpMapFd = *i;
                           return okResult();
                         }}},
        {"mesh-key-fd", {false, [](Options& o, const std::string& v) -> Result<void> {
                           auto i = config::flagInt(v);
                           if (!i || *i < 0) return makeError("bad fd");
                           o.meshKeyFd = *i;
                           return okResult();
                         }}},
    };
    config::addChildRoleFlags(t);
    return t;
  }();
  return kFlags;
}

}  // namespace

Result<Options> parseOptions(const std::vector<std::string>& args) {
  Options o;
  if (auto r = config::parseGoFlags(args, flags(), o); !r) return makeError(r.error());
  if (!o.chrootDir.empty()) return makeError("--chroot: derpd-probe needs DNS and CA files; run it unchrooted");
  if (!o.control.empty() && o.once) return makeError("-once and --control exclude each other");
  return o;
}

std::string usage() {
  return R"(usage: derpd-probe [flags]

Probes the DERP servers of a DERP map as Tailscale's derpprobe does: TLS
certificates, STUN over IPv4 and IPv6, DERP delivery between every ordered
pair of nodes of a region (a node with itself included), optional bandwidth
and queuing-delay probes. With -once it runs every probe once, prints a table
and exits 0 when all passed, 1 otherwise; else it keeps probing and serves a
status page, /healthz and Prometheus metrics (/metrics, /debug/varz).

derpprobe's flags:
  -derp-map SRC               the DERP map: https:// or http:// URL, file://PATH or
                              a path, or "local" (tailscaled's LocalAPI)
                              (default "https://login.tailscale.com/derpmap/default")
  -listen ADDR                status page address (default ":8030"; port 0 picks one)
  -once                       probe once, print the results, exit 0 (all good) or 1
  -spread=BOOL                spread first runs over each interval (default true)
  -interval D                 DERP map refresh interval (default 15s)
  -mesh-interval D            DERP delivery probes (default 15s; 0 = off)
  -stun-interval D            STUN probes (default 15s; 0 = off)
  -tls-interval D             TLS probes (default 15s; 0 = off)
  -bw-interval D              bandwidth probes (default 0 = off)
  -bw-probe-size-bytes N      bandwidth probe size (default 1000000)
  -qd-packets-per-second N    queuing-delay probes at N 260-byte packets per
                              second (default 0 = off)
  -qd-packet-timeout D        a qd packet later than this counts as dropped (default 5s)
  -region-code CODE           probe only this region (default: all)
  -mesh-psk-file PATH         mesh key for the probe clients (servers that verify
                              clients let mesh peers in)
  -version                    print the version and exit

derpd's own:
  --ca-file PATH              trust these PEM roots instead of the system's
                              (SSL_CERT_FILE is honoured too)
  --plain-http                speak DERP over http:// (also TS_DEBUG_USE_DERP_HTTP=1);
                              TLS probes are then not run
  --tailscaled-socket PATH    tailscaled's socket for -derp-map local
                              (default /var/run/tailscale/tailscaled.sock)
  --qd-once-window D          with -once, how long each qd probe sends (default 3s);
                              every packet must come back
  --log-level LEVEL           trace, debug, info, warn or error (default info)
  -h, --help                  this text

Run by derpd as its monitor role: --control ipc://PATH, --mesh-key-fd N,
--derp-map-fd N (a fixed map instead of -derp-map), --user U (then a seccomp
system call filter, unless --seccomp=false).
)";
}

}  // namespace derpd::probe
