// derpd-probe's command line: derpprobe's flags with the same names,
// defaults and Go flag syntax, plus derpd's own (--ca-file, the monitor
// role's --control and --mesh-key-fd). Included by derpd-probe only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::probe {

struct Options {
  // derpprobe's flags
  std::string derpMap = "https://login.tailscale.com/derpmap/default";  // -derp-map
  std::string listen = ":8030";                                          // -listen
  bool once = false;                                                     // -once
  bool spread = true;                                                    // -spread
  std::chrono::milliseconds interval{15000};                             // -interval (map refresh)
  std::chrono::milliseconds meshInterval{15000};                         // -mesh-interval
  std::chrono::milliseconds stunInterval{15000};                         // -stun-interval
  std::chrono::milliseconds tlsInterval{15000};                          // -tls-interval
  std::chrono::milliseconds bwInterval{0};                               // -bw-interval (0 = off)
  int64_t bwProbeSizeBytes = 1000000;                                    // -bw-probe-size-bytes
  int qdPacketsPerSecond = 0;                                            // -qd-packets-per-second
  std::chrono::milliseconds qdPacketTimeout{5000};                       // -qd-packet-timeout
  std::string regionCode;                                                // -region-code
  std::string meshPskFile;                                               // -mesh-psk-file
  bool version = false;                                                  // -version
  bool help = false;
  // derpd's own
  std::string caFile;                          // --ca-file: PEM roots (default: system, SSL_CERT_FILE)
  std::string tailscaledSocket = "/var/run/tailscale/tailscaled.sock";  // --tailscaled-socket (-derp-map local)
  std::chrono::milliseconds qdOnceWindow{3000};  // --qd-once-window
  bool plainHttp = false;                      // --plain-http (or TS_DEBUG_USE_DERP_HTTP=1)
  std::string logLevel = "info";               // --log-level
  // the monitor role (under derpd)
  std::string control;                         // --control ipc://…
  bool seccomp = true;                         // --seccomp=false: no syscall filter after the drop
  int meshKeyFd = -1;                          // --mesh-key-fd
  int derpMapFd = -1;                          // --derp-map-fd: a fixed map from derpd
  std::string user;                            // --user (privilege drop when root)
  std::string chrootDir;                       // --chroot (refused: the probe needs DNS and CA files)
};

Result<Options> parseOptions(const std::vector<std::string>& args);
std::string usage();

}  // namespace derpd::probe
