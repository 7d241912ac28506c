// derp-worker's command line: derper's flag names and Go flag syntax
// (-x / --x, -x=v or -x v; bools take a value only with '=').
// Included by derp-worker only.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::worker {

// Defaults of the connection caps (docs/SECURITY.md has the arithmetic).
inline constexpr int64_t kDefaultMaxConnections = 50000;
inline constexpr int64_t kDefaultMaxHandshakes = 10000;

struct Options {
  std::string addr = ":443";          // -a
  bool dev = false;                   // -dev
  std::string configPath;             // -c
  std::string certMode = "letsencrypt";  // -certmode
  std::string certDir;                // -certdir
  std::string hostname = "derp.tailscale.com";  // -hostname
  int httpPort = 80;                  // -http-port
  std::string meshPskFile;            // -mesh-psk-file
  std::string meshWith;               // -mesh-with: hosts to dial (PROTOCOL.md §6)
  std::string meshCaFile;             // --mesh-ca-file: CAs for mesh peers' TLS
  bool derpEnabled = true;            // -derp
  int threads = 0;                    // --threads (0 = CPU count)
  double acceptConnectionLimit = std::numeric_limits<double>::infinity();  // -accept-connection-limit
  int64_t acceptConnectionBurst = std::numeric_limits<int64_t>::max();     // -accept-connection-burst
  int64_t maxConnections = kDefaultMaxConnections;  // --max-connections (0 = no cap)
  int64_t maxHandshakes = kDefaultMaxHandshakes;    // --max-handshakes (0 = no cap)
  std::chrono::milliseconds drainTimeout{5000};  // --drain-timeout (Go duration)
  std::string logLevel = "info";      // --log-level
  bool version = false;               // -version
  bool help = false;                  // -h / --help
  bool addrSet = false;               // -a given explicitly
  // --debug-key-file: the /debug/ key (PROTOCOL.md §7.2), read once before
  // the sandbox. Unset: $TS_DEBUG_KEY_PATH, as derper. Given as "": none.
  std::string debugKeyFile;
  bool debugKeyFileSet = false;
  // Set by derpd when it starts this process (not for interactive use):
  int listenFd = -1;                  // --listen-fd: inherited main listener
  int port80Fd = -1;                  // --port80-fd: inherited port-80 listener
  int keyFd = -1;                     // --key-fd: pipe carrying the key file's bytes
  int meshKeyFd = -1;                 // --mesh-key-fd: pipe carrying the mesh key
  std::string bootstrapDnsNames;      // -bootstrap-dns-names
  std::string unpublishedBootstrapDnsNames;  // -unpublished-bootstrap-dns-names
  std::string bootstrapDnsServer;     // --bootstrap-dns-server (empty: /etc/resolv.conf)
  std::string control;                // --control: derpd's control endpoint (ipc://...)
  bool seccomp = true;                // --seccomp=false: no syscall filter after the drop
  bool tlsOwnRecords = true;          // --tls-own-records: TLS 1.3 records without OpenSSL's object
  bool tlsFromControl = false;        // --tls-from-control: TLS, certificates from cert-agent
  bool meshPeersFromControl = false;  // --mesh-peers-from-control: addresses from mesh-helper
  bool verifyViaControl = false;      // --verify-via-control: admission asked of mesh-helper
  bool verifyFailOpen = true;         // -verify-client-url-fail-open
  std::string user;                   // --user: drop to this user (when root)
  std::string chrootDir;              // --chroot: empty directory to chroot into
  // --stall-loop-for-test MS: tests only; once Ready, event loop 0 blocks
  // for MS ms (derpd's child-watchdog must notice).
  int stallLoopForTestMs = 0;
};

// Parses argv (without argv[0]). Errors name the flag.
Result<Options> parseOptions(const std::vector<std::string>& args);
std::string usage();


}  // namespace derpd::worker
