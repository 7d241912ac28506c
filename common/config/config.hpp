// derpd's configuration: every cmd/derper flag (PROTOCOL.md §8) with derper's
// name, meaning and default, plus derpd's own keys. Sources, lowest first:
// defaults, the config file (`key = value` lines), the command line (Go flag
// syntax). Pure parsing: no I/O except reading the config file in loadConfig().
// Included by the supervisor (root, before any privilege drop) and by tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::config {

using Duration = std::chrono::nanoseconds;

// Everything a Config holds that the file and the flags can set. Compared with
// ==, so a rendered config can be checked to re-parse to the same values.
struct Settings {
  // --- cmd/derper flags ---
  std::string addr = ":443";                        // -a
  int httpPort = 80;                                // -http-port (-1 = off)
  int stunPort = 3478;                              // -stun-port
  bool stun = true;                                 // -stun
  bool derp = true;                                 // -derp
  bool dev = false;                                 // -dev
  std::string keyFile;                              // -c (derper's key file)
  std::string certMode = "letsencrypt";             // -certmode
  std::string certDir;                              // -certdir (default from the environment)
  std::string hostname = "derp.tailscale.com";      // -hostname
  std::string meshPskFile;                          // -mesh-psk-file (default: search)
  std::string meshWith;                             // -mesh-with
  std::string meshCaFile;                           // derpd: CAs for mesh peers' TLS
  std::string bootstrapDnsNames;                    // -bootstrap-dns-names
  std::string unpublishedBootstrapDnsNames;         // -unpublished-bootstrap-dns-names
  bool verifyClients = false;                       // -verify-clients
  std::string verifyClientUrl;                      // -verify-client-url
  bool verifyClientUrlFailOpen = true;              // -verify-client-url-fail-open
  std::string verifyClientsSocket = "/var/run/tailscale/tailscaled.sock";  // derpd: LocalAPI socket
  double acceptConnectionLimit = std::numeric_limits<double>::infinity();  // conn/s
  int64_t acceptConnectionBurst = std::numeric_limits<int64_t>::max();     // Go MaxInt
  Duration tcpKeepaliveTime = std::chrono::minutes(10);  // -tcp-keepalive-time
  Duration tcpUserTimeout = std::chrono::seconds(15);    // -tcp-user-timeout
  bool version = false;                             // -version
  std::string acmeEmail;                            // -acme-email (derper HEAD)
  std::string acmeEabKid;                           // -acme-eab-kid (derper HEAD)
  std::string acmeEabKey;                           // -acme-eab-key (derper HEAD)

  // --- derpd's own keys ---
  std::string acmeDirectoryUrl = "https://acme-v02.api.letsencrypt.org/directory";  // --acme-directory-url
  std::string acmeCaFile;                           // --acme-ca-file (empty = system store)
  std::string acmeChallenges = "tls-alpn-01,http-01";  // --acme-challenges, in preference order
  bool forceTls = false;                            // --force-tls: TLS whatever -a's port
  std::string bootstrapDnsServer;                   // --bootstrap-dns-server (empty = resolv.conf)
  std::string configFile = "/etc/derpd/derpd.conf";  // --config
  std::string user = "_derpd";                      // --user
  std::string certUser = "_derpd-cert";             // --cert-user
  std::string runtimeDir = "/run/derpd";            // --runtime-dir
  bool seccomp = true;                              // --seccomp: per-role syscall filters after the drop
  bool tlsOwnRecords = true;                        // --tls-own-records: TLS 1.3 records in derp-worker
  std::string stateDir = "/var/lib/derpd";          // --state-dir
  std::string logFile;                              // --log-file (empty = stderr)
  std::string logLevel = "info";                    // --log-level
  std::string logFormat = "auto";                   // --log-format: auto|plain|journal
  int threads = 0;                                  // --threads (0 = CPUs)
  Duration drainTimeout = std::chrono::seconds(5);  // --drain-timeout
  Duration childWatchdog = std::chrono::seconds(10);  // --child-watchdog (0 = off)
  int64_t maxConnections = 50000;                   // --max-connections (0 = no cap)
  int64_t maxHandshakes = 10000;                    // --max-handshakes (0 = no cap)
  bool monitor = false;                             // --monitor: run derpd-probe as the monitor role
  std::string monitorDerpMap;                       // --monitor-derp-map (empty = this server alone)
  std::string monitorCaFile;                        // --monitor-ca-file (empty = system roots)
  Duration monitorInterval = std::chrono::seconds(15);  // --monitor-interval
  std::string monitorListen;                        // --monitor-listen (empty = no status page)

  bool operator==(const Settings&) const = default;
};

// Where a value came from, for logs: "default", "flag -a", "/etc/derpd/derpd.conf:12".
struct Origin {
  enum class Kind { Default, File, Flag };
  Kind kind = Kind::Default;
  std::string file;  // Kind::File only
  int line = 0;      // Kind::File only
  std::string describe(std::string_view key) const;
};

struct Config : Settings {
  bool help = false;  // -h / -help / --help was given; nothing else was parsed
  // One entry per key that was set by the file or a flag; absent = default.
  std::map<std::string, Origin, std::less<>> origins;

  Origin originOf(std::string_view key) const;
};

// What the defaults depend on: environment variables and whether a file
// exists (derper's -certdir and -mesh-psk-file defaults). Injected for tests.
struct Env {
  std::function<std::optional<std::string>(const std::string&)> getenv;
  std::function<bool(const std::string&)> fileExists;
  static Env system();
};

// derper's defaults, with -certdir and -mesh-psk-file computed as derper does.
Config defaultConfig(const Env& env = Env::system());

// All keys in canonical (sorted) order.
const std::vector<std::string>& keyNames();

// Parses config-file text on top of `cfg` (keys recorded as from fileName:line).
// Does not validate cross-key rules; see validate().
Result<void> applyConfigText(Config& cfg, std::string_view text, const std::string& fileName);

// defaults + text + validate(). Used by the golden tests and the fuzzer.
Result<Config> parseConfigText(std::string_view text, const std::string& fileName,
                               const Env& env = Env::system());

// How an error names a setting: "FILE:LINE: key = value" when the value came
// from the config file, else "-key value".
std::string describeSetting(const Config& cfg, std::string_view key);

// Cross-key and range checks: ports, -certmode, -mesh-with needs a key, URL scheme...
Result<void> validate(const Config& cfg);

// The command line alone (argv without argv[0]): unknown flags, missing
// arguments, values that do not parse. These are Go flag errors, which
// derper reports with exit status 2; loadConfig's other errors are about the
// configuration (the file, cross-key rules).
Result<void> checkFlags(const std::vector<std::string>& args);

// The whole thing: argv without argv[0]. Reads --config FILE (or the default
// path, which may be absent), then applies the flags, then validates. With
// -h/-help/--help returns a Config with help = true; with -version the file is
// not read (so --version works with a broken config).
Result<Config> loadConfig(const std::vector<std::string>& args, const Env& env = Env::system());

// Every key as `key = value`, sorted, quoted when needed; parseConfigText()
// of the output gives the same Settings.
std::string renderConfig(const Config& cfg);

// One value in canonical form (as renderConfig writes it, unquoted).
std::string renderValue(const Config& cfg, std::string_view key);

// The --help text: every flag, its default and one line of meaning.
std::string usage(const Env& env);
std::string usage();

// -acme-challenges: a comma-separated list of tls-alpn-01 and http-01
// (spaces around items allowed), in order of preference.
Result<std::vector<std::string>> parseAcmeChallenges(std::string_view s);

// Go syntax helpers, exposed for tests.
Result<Duration> parseGoDuration(std::string_view s);  // time.ParseDuration
std::string formatGoDuration(Duration d);              // time.Duration.String
Result<int64_t> parseGoInt(std::string_view s);        // strconv.ParseInt(s, 0, 64)
Result<double> parseGoFloat(std::string_view s);       // strconv.ParseFloat(s, 64)
Result<bool> parseGoBool(std::string_view s);          // strconv.ParseBool

}  // namespace derpd::config
