// derp-worker's command line: derper's flag names and Go flag syntax
// (-x / --x, -x=v or -x v; bools take a value only with '=').
// Included by derp-worker only.
#pragma once

#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::worker {

struct Options {
  std::string addr = ":443";          // -a
  bool dev = false;                   // -dev
  std::string configPath;             // -c
  std::string certMode = "letsencrypt";  // -certmode
  std::string certDir;                // -certdir
  std::string hostname = "derp.tailscale.com";  // -hostname
  int httpPort = 80;                  // -http-port
  std::string meshPskFile;            // -mesh-psk-file
  bool derpEnabled = true;            // -derp
  int threads = 0;                    // --threads (0 = CPU count)
  std::string logLevel = "info";      // --log-level
  bool version = false;               // -version
  bool help = false;                  // -h / --help
  bool addrSet = false;               // -a given explicitly
};

// Parses argv (without argv[0]). Errors name the flag.
Result<Options> parseOptions(const std::vector<std::string>& args);
std::string usage();

// Splits "host:port" / "[v6]:port" / ":port". Empty host = all addresses.
struct HostPort {
  std::string host;
  int port = 0;
};
Result<HostPort> splitHostPort(const std::string& addr);

}  // namespace derpd::worker
