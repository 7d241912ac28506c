#include "common/config/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <variant>

#include "common/net/mesh_hosts.hpp"

namespace derpd::config {

namespace {

// ---------------------------------------------------------------------------
// The key table: one row per flag / config-file key.

using Member = std::variant<std::string Settings::*, bool Settings::*, int Settings::*,
                            int64_t Settings::*, double Settings::*, Duration Settings::*>;

struct KeyDef {
  std::string_view name;
  Member member;
  bool derper;             // a cmd/derper flag (else one of derpd's own keys)
  std::string_view meaning;
};

const std::vector<KeyDef>& keyTable() {
  static const std::vector<KeyDef> kKeys = {
      {"a", &Settings::addr, true,
       "listen address: \":port\", \"ip:port\" or \"[ip6]:port\"; TLS when the port is 443 "
       "or -certmode is manual, plain HTTP otherwise (-dev: \":3340\")"},
      {"accept-connection-burst", &Settings::acceptConnectionBurst, true,
       "burst size of the accept rate limiter"},
      {"accept-connection-limit", &Settings::acceptConnectionLimit, true,
       "accept rate limit of the main listener in connections per second; beyond it a new "
       "connection is accepted and closed at once"},
      {"acme-eab-key", &Settings::acmeEabKey, true,
       "ACME External Account Binding MAC key (base64url), with -acme-eab-kid"},
      {"acme-eab-kid", &Settings::acmeEabKid, true,
       "ACME External Account Binding key id, for CAs that require one"},
      {"acme-email", &Settings::acmeEmail, true,
       "contact e-mail address of the ACME account (optional)"},
      {"bootstrap-dns-names", &Settings::bootstrapDnsNames, true,
       "comma-separated host names whose addresses /bootstrap-dns publishes"},
      {"c", &Settings::keyFile, true,
       "server key file (JSON {\"PrivateKey\": ...}), created 0600 when missing; when empty, "
       "<state-dir>/derper.key (-dev: a fresh random key)"},
      {"certdir", &Settings::certDir, true,
       "directory of the ACME cache (letsencrypt) or of HOSTNAME.crt/HOSTNAME.key (manual)"},
      {"certmode", &Settings::certMode, true,
       "how to get the TLS certificate: letsencrypt (ACME, renewed by derpd's cert-agent) or "
       "manual (HOSTNAME.crt/.key in -certdir, reloaded on change; an IP hostname without "
       "files gets a self-signed certificate)"},
      {"derp", &Settings::derp, true,
       "serve DERP on /derp; false answers 404 there and still serves the other endpoints"},
      {"dev", &Settings::dev, true,
       "development mode: listen on :3340 with a fresh random server key"},
      {"hostname", &Settings::hostname, true,
       "TLS host name: the certificate's name (letsencrypt host policy, manual file stem)"},
      {"http-port", &Settings::httpPort, true,
       "port of the plain HTTP listener in TLS mode (ACME HTTP-01, redirects); -1 disables it"},
      {"mesh-psk-file", &Settings::meshPskFile, true,
       "file holding the mesh key; clients presenting it are trusted mesh peers; the "
       "default is the first existing of /home/derp/keys/derp-mesh.key, $HOME/keys/derp-mesh.key"},
      {"mesh-with", &Settings::meshWith, true,
       "comma-separated hosts (name or name:port) of the DERP servers of this region to mesh "
       "with, dialled as https://HOST/derp (this server's own entry is skipped); needs "
       "-mesh-psk-file"},
      {"stun", &Settings::stun, true, "run the STUN server (stun-worker) on the host of -a"},
      {"stun-port", &Settings::stunPort, true, "UDP port of the STUN server"},
      {"tcp-keepalive-time", &Settings::tcpKeepaliveTime, true,
       "TCP keepalive idle time of accepted connections"},
      {"tcp-user-timeout", &Settings::tcpUserTimeout, true,
       "TCP_USER_TIMEOUT of accepted connections: how long sent data may stay unacknowledged"},
      {"unpublished-bootstrap-dns-names", &Settings::unpublishedBootstrapDnsNames, true,
       "comma-separated host names /bootstrap-dns resolves only when asked for by name (?q=)"},
      {"verify-client-url", &Settings::verifyClientUrl, true,
       "admission URL: each connecting client's keys are POSTed to it; it must answer "
       "{\"Allow\": true}"},
      {"verify-client-url-fail-open", &Settings::verifyClientUrlFailOpen, true,
       "admit clients when -verify-client-url cannot be reached (and when derpd's mesh-helper "
       "cannot be asked)"},
      {"verify-clients", &Settings::verifyClients, true,
       "admit only clients that the local tailscaled knows (its LocalAPI socket)"},
      {"version", &Settings::version, true, "print the version and exit"},

      {"acme-ca-file", &Settings::acmeCaFile, false,
       "PEM file of the CA certificates that verify the ACME server's HTTPS certificate; "
       "empty: the system's"},
      {"acme-challenges", &Settings::acmeChallenges, false,
       "ACME challenge types to use, in order of preference (tls-alpn-01 on the TLS port, "
       "http-01 on -http-port)"},
      {"acme-directory-url", &Settings::acmeDirectoryUrl, false,
       "ACME directory URL of the certificate authority (letsencrypt mode)"},
      {"cert-user", &Settings::certUser, false,
       "system user the certificate agent runs as when derpd starts as root"},
      {"bootstrap-dns-server", &Settings::bootstrapDnsServer, false,
       "DNS server (IP or IP:port) /bootstrap-dns resolves its names with; empty: the "
       "first nameserver of /etc/resolv.conf"},
      {"child-watchdog", &Settings::childWatchdog, false,
       "a child (or one of derp-worker's event loops) that shows no sign of life for this long "
       "is killed with SIGKILL and restarted like a dead one; 0 turns the watchdog off"},
      {"config", &Settings::configFile, false,
       "derpd config file of \"key = value\" lines (keys are these flag names); a missing "
       "default file is ignored"},
      {"drain-timeout", &Settings::drainTimeout, false,
       "on SIGTERM/SIGINT, how long connected clients get to leave before derpd exits"},
      {"force-tls", &Settings::forceTls, false,
       "serve TLS even when the port of -a is not 443 (derper serves TLS only on 443 or with "
       "-certmode manual); the certificate comes from -certmode"},
      {"log-file", &Settings::logFile, false, "log to this file (empty: stderr)"},
      {"mesh-ca-file", &Settings::meshCaFile, false,
       "PEM file of the CA certificates that verify mesh peers' TLS certificates; empty: the "
       "system's ($SSL_CERT_FILE is honoured)"},
      {"log-format", &Settings::logFormat, false,
       "auto, plain or journal: journal lines start with a syslog priority (<3> ...) and carry no "
       "timestamp; auto is journal when stderr is systemd's journal stream (JOURNAL_STREAM)"},
      {"log-level", &Settings::logLevel, false, "trace, debug, info, warn or error"},
      {"max-connections", &Settings::maxConnections, false,
       "accepted connections alive at once on the main listener (0: no cap); beyond it a new "
       "connection is closed at once"},
      {"max-handshakes", &Settings::maxHandshakes, false,
       "connections still in TLS, HTTP or the DERP handshake (0: no cap); beyond it the oldest "
       "of them is closed for the new one"},
      {"monitor", &Settings::monitor, false,
       "run the monitor role: derpd-probe probing this server (or -monitor-derp-map) with "
       "its results in /debug/varz as derpprobe_* metrics"},
      {"monitor-ca-file", &Settings::monitorCaFile, false,
       "PEM file of the CA certificates the monitor trusts; empty: the system's"},
      {"monitor-derp-map", &Settings::monitorDerpMap, false,
       "DERP map the monitor probes (URL, file or \"local\"); empty: a map of this server alone"},
      {"monitor-interval", &Settings::monitorInterval, false,
       "interval of every monitor probe class and of its map refresh"},
      {"monitor-listen", &Settings::monitorListen, false,
       "address of the monitor's status page and /metrics (empty: none)"},
      {"runtime-dir", &Settings::runtimeDir, false,
       "directory (0700) of the control-plane sockets"},
      {"seccomp", &Settings::seccomp, false,
       "when started as root, each child ends its sandbox with a seccomp filter of the system "
       "calls its role needs (any other kills it); false turns the filters off, for debugging"},
      {"state-dir", &Settings::stateDir, false, "directory of derpd's persistent state"},
      {"threads", &Settings::threads, false,
       "DERP event-loop threads (0: one per CPU)"},
      {"tls-own-records", &Settings::tlsOwnRecords, false,
       "after a TLS 1.3 handshake, derp-worker frees OpenSSL's connection object and seals and "
       "opens the records itself (about 10 kB less per connected client); false keeps OpenSSL "
       "for every connection"},
      {"user", &Settings::user, false,
       "system user the workers run as when derpd starts as root"},
      {"verify-clients-socket", &Settings::verifyClientsSocket, false,
       "tailscaled's LocalAPI Unix socket, for -verify-clients"},
  };
  return kKeys;
}

const KeyDef* findKey(std::string_view name) {
  for (const KeyDef& k : keyTable()) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

bool isBoolKey(const KeyDef& k) { return std::holds_alternative<bool Settings::*>(k.member); }

std::string quoteGo(std::string_view s) {
  // Close enough to Go's %q for messages: escapes quotes, backslashes, controls.
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

// ---------------------------------------------------------------------------
// Go value syntax.

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equalFold(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// strconv's underscoreOK: '_' only between digits or after a base prefix.
bool underscoreOk(std::string_view s) {
  char saw = '^';
  size_t i = 0;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  bool hex = false;
  if (s.size() >= 2 && s[0] == '0' &&
      (lower(s[1]) == 'b' || lower(s[1]) == 'o' || lower(s[1]) == 'x')) {
    i = 2;
    saw = '0';
    hex = lower(s[1]) == 'x';
  }
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if ((c >= '0' && c <= '9') || (hex && lower(c) >= 'a' && lower(c) <= 'f')) {
      saw = '0';
      continue;
    }
    if (c == '_') {
      if (saw != '0') return false;
      saw = '_';
      continue;
    }
    if (saw == '_') return false;
    saw = '!';
  }
  return saw != '_';
}

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && isSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && isSpace(s.back())) s.remove_suffix(1);
  return s;
}

// filepath.Clean for the absolute/relative paths derper's defaults build.
std::string cleanPath(std::string_view p) {
  if (p.empty()) return ".";
  const bool rooted = p.front() == '/';
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view part = p.substr(i, j - i);
    if (part.empty() || part == ".") {
      // skip
    } else if (part == "..") {
      if (!parts.empty() && parts.back() != "..") {
        parts.pop_back();
      } else if (!rooted) {
        parts.push_back(part);
      }
    } else {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out = rooted ? "/" : "";
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k > 0) out += '/';
    out += parts[k];
  }
  return out.empty() ? "." : out;
}

// ---------------------------------------------------------------------------
// Setting and rendering one value.

Result<void> setValue(Settings& s, const KeyDef& k, std::string_view v) {
  struct Visitor {
    Settings& s;
    std::string_view v;
    Result<void> operator()(std::string Settings::*m) const {
      s.*m = std::string(v);
      return {};
    }
    Result<void> operator()(bool Settings::*m) const {
      auto b = parseGoBool(v);
      if (!b) return makeError(b.error() + " (want true or false; also 1, 0, t, f, T, F, TRUE, FALSE, True, False)");
      s.*m = *b;
      return {};
    }
    Result<void> operator()(int Settings::*m) const {
      auto i = parseGoInt(v);
      if (!i) return makeError(i.error());
      if (*i < std::numeric_limits<int>::min() || *i > std::numeric_limits<int>::max()) {
        return makeError("value out of range");
      }
      s.*m = static_cast<int>(*i);
      return {};
    }
    Result<void> operator()(int64_t Settings::*m) const {
      auto i = parseGoInt(v);
      if (!i) return makeError(i.error());
      s.*m = *i;
      return {};
    }
    Result<void> operator()(double Settings::*m) const {
      auto f = parseGoFloat(v);
      if (!f) return makeError(f.error());
      if (std::isnan(*f)) return makeError("NaN is not allowed");
      s.*m = *f;
      return {};
    }
    Result<void> operator()(Duration Settings::*m) const {
      auto d = parseGoDuration(v);
      if (!d) return makeError(d.error());
      s.*m = *d;
      return {};
    }
  };
  return std::visit(Visitor{s, v}, k.member);
}

std::string formatFloat(double d) {
  if (std::isinf(d)) return d > 0 ? "+Inf" : "-Inf";
  if (std::isnan(d)) return "NaN";
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, d);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, p);
}

std::string getValue(const Settings& s, const KeyDef& k) {
  struct Visitor {
    const Settings& s;
    std::string operator()(std::string Settings::*m) const { return s.*m; }
    std::string operator()(bool Settings::*m) const { return s.*m ? "true" : "false"; }
    std::string operator()(int Settings::*m) const { return std::to_string(s.*m); }
    std::string operator()(int64_t Settings::*m) const { return std::to_string(s.*m); }
    std::string operator()(double Settings::*m) const { return formatFloat(s.*m); }
    std::string operator()(Duration Settings::*m) const { return formatGoDuration(s.*m); }
  };
  return std::visit(Visitor{s}, k.member);
}

bool needsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (isSpace(c) || c == '#' || c == '"' || c == '\\' || u < 0x20 || u == 0x7f) return true;
  }
  return false;
}

std::string quoteValue(std::string_view v) {
  if (!needsQuotes(v)) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

// ---------------------------------------------------------------------------
// Config-file lines.

// Parses the text after '=' into a value: trims, strips a trailing comment,
// unquotes. Errors are messages without the file:line prefix.
Result<std::string> parseFileValue(std::string_view raw) {
  std::string_view rest = trim(raw);
  if (!rest.empty() && rest.front() == '"') {
    std::string out;
    size_t i = 1;
    for (;; ++i) {
      if (i >= rest.size()) return makeError("unterminated quoted value");
      const char c = rest[i];
      if (c == '"') break;
      if (c == '\\') {
        if (i + 1 >= rest.size()) return makeError("unterminated quoted value");
        const char e = rest[i + 1];
        if (e != '"' && e != '\\') {
          return makeError(std::string("bad escape \\") + e + " in quoted value (only \\\" and \\\\)");
        }
        out += e;
        ++i;
        continue;
      }
      out += c;
    }
    std::string_view after = trim(rest.substr(i + 1));
    if (!after.empty() && after.front() != '#') {
      return makeError("unexpected text after the closing quote");
    }
    return out;
  }
  // Unquoted: a '#' preceded by whitespace starts a comment.
  for (size_t i = 1; i < rest.size(); ++i) {
    if (rest[i] == '#' && isSpace(rest[i - 1])) {
      rest = trim(rest.substr(0, i));
      break;
    }
  }
  return std::string(rest);
}

std::string joinPath(std::string_view a, std::string_view b) {
  std::string s(a);
  s += '/';
  s += b;
  return cleanPath(s);
}

bool hasNewlineOrNul(std::string_view s) {
  return s.find('\n') != std::string_view::npos || s.find('\0') != std::string_view::npos;
}

// Splits "-a" style arguments into (key, value) assignments, as Go's flag
// package does. Sets help and returns early on -h/-help/--help.
struct Assignment {
  const KeyDef* key;
  std::string value;
};

Result<std::vector<Assignment>> parseFlags(const std::vector<std::string>& args, bool& help) {
  std::vector<Assignment> out;
  Settings scratch;  // each value is checked as it is read, so its error names the flag
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() < 2 || arg[0] != '-') {
      return makeError("unexpected argument " + quoteGo(arg) + " (derpd takes only flags)");
    }
    size_t minuses = 1;
    if (arg[1] == '-') {
      minuses = 2;
      if (arg.size() == 2) {  // "--" ends the flags
        if (i + 1 < args.size()) {
          return makeError("unexpected argument " + quoteGo(args[i + 1]) + " (derpd takes only flags)");
        }
        break;
      }
    }
    std::string name = arg.substr(minuses);
    if (name.empty() || name[0] == '-' || name[0] == '=') return makeError("bad flag syntax: " + arg);
    std::string value;
    bool hasValue = false;
    if (auto eq = name.find('=', 1); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      hasValue = true;
    }
    const KeyDef* k = findKey(name);
    if (k == nullptr) {
      if (name == "help" || name == "h") {
        help = true;
        return out;
      }
      return makeError("flag provided but not defined: -" + name);
    }
    if (isBoolKey(*k)) {
      if (!hasValue) value = "true";
      if (auto r = setValue(scratch, *k, value); !r) {
        return makeError("invalid boolean value " + quoteGo(value) + " for -" + name + ": " + r.error());
      }
    } else {
      if (!hasValue) {
        if (i + 1 >= args.size()) return makeError("flag needs an argument: -" + name);
        value = args[++i];
      }
      if (auto r = setValue(scratch, *k, value); !r) {
        return makeError("invalid value " + quoteGo(value) + " for flag -" + name + ": " + r.error());
      }
    }
    out.push_back({k, std::move(value)});
  }
  return out;
}

Result<void> checkAddr(const std::string& addr) {
  std::string_view port;
  if (!addr.empty() && addr[0] == '[') {
    const auto close = addr.find(']');
    if (close == std::string::npos || close + 1 >= addr.size() || addr[close + 1] != ':') {
      return makeError("-a " + quoteGo(addr) + ": want \"[ip6]:port\"");
    }
    port = std::string_view(addr).substr(close + 2);
  } else {
    const auto colon = addr.rfind(':');
    if (colon == std::string::npos) return makeError("-a " + quoteGo(addr) + ": missing port");
    if (addr.substr(0, colon).find(':') != std::string::npos) {
      return makeError("-a " + quoteGo(addr) + ": an IPv6 address needs brackets, \"[ip6]:port\"");
    }
    port = std::string_view(addr).substr(colon + 1);
  }
  if (port.empty()) return makeError("-a " + quoteGo(addr) + ": missing port");
  const bool digits = std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) {
    int p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p > 65535) {
      return makeError("-a " + quoteGo(addr) + ": port out of range (0 to 65535)");
    }
    return {};
  }
  const bool name = std::all_of(port.begin(), port.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
  });
  if (!name) return makeError("-a " + quoteGo(addr) + ": bad port");
  return {};
}

// Reads a regular file of at most 1 MiB into out; returns 0 or an errno value.
int readSmallFile(const std::string& path, std::string& out) {
  constexpr size_t kMaxConfigBytes = 1 << 20;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = 0;
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    err = errno;
  } else if (S_ISDIR(st.st_mode)) {
    err = EISDIR;
  } else {
    char buf[8192];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        err = errno;
        break;
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
      if (out.size() > kMaxConfigBytes) {
        err = EFBIG;
        break;
      }
    }
  }
  ::close(fd);
  return err;
}

}  // namespace

// ---------------------------------------------------------------------------
// Go syntax helpers.

Result<bool> parseGoBool(std::string_view v) {
  if (v == "1" || v == "t" || v == "T" || v == "true" || v == "TRUE" || v == "True") return true;
  if (v == "0" || v == "f" || v == "F" || v == "false" || v == "FALSE" || v == "False") return false;
  return makeError("parse error");
}

Result<int64_t> parseGoInt(std::string_view s) {
  const std::string_view s0 = s;
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty()) return makeError("parse error");
  unsigned base = 10;
  if (s[0] == '0') {
    if (s.size() >= 3 && lower(s[1]) == 'b') {
      base = 2;
      s.remove_prefix(2);
    } else if (s.size() >= 3 && lower(s[1]) == 'o') {
      base = 8;
      s.remove_prefix(2);
    } else if (s.size() >= 3 && lower(s[1]) == 'x') {
      base = 16;
      s.remove_prefix(2);
    } else {
      base = 8;
      s.remove_prefix(1);
    }
  }
  uint64_t n = 0;
  bool underscores = false;
  bool overflow = false;
  for (char c : s) {
    unsigned d;
    if (c == '_') {
      underscores = true;
      continue;
    } else if (c >= '0' && c <= '9') {
      d = static_cast<unsigned>(c - '0');
    } else if (lower(c) >= 'a' && lower(c) <= 'z') {
      d = static_cast<unsigned>(lower(c) - 'a' + 10);
    } else {
      return makeError("parse error");
    }
    if (d >= base) return makeError("parse error");
    if (overflow) continue;
    if (n > (std::numeric_limits<uint64_t>::max() - d) / base) {
      overflow = true;
      continue;
    }
    n = n * base + d;
  }
  if (underscores && !underscoreOk(s0)) return makeError("parse error");
  constexpr uint64_t kCutoff = uint64_t{1} << 63;
  if (overflow || (!neg && n >= kCutoff) || (neg && n > kCutoff)) return makeError("value out of range");
  if (neg) return n == kCutoff ? std::numeric_limits<int64_t>::min() : -static_cast<int64_t>(n);
  return static_cast<int64_t>(n);
}

Result<double> parseGoFloat(std::string_view s) {
  double sign = 1;
  std::string_view body = s;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    if (body[0] == '-') sign = -1;
    body.remove_prefix(1);
  }
  if (equalFold(body, "inf") || equalFold(body, "infinity")) {
    return sign * std::numeric_limits<double>::infinity();
  }
  if (equalFold(s, "nan")) return std::numeric_limits<double>::quiet_NaN();
  if (body.empty()) return makeError("parse error");
  std::string digits;
  if (body.find('_') != std::string_view::npos) {
    if (!underscoreOk(body)) return makeError("parse error");
    for (char c : body) {
      if (c != '_') digits += c;
    }
  } else {
    digits = std::string(body);
  }
  auto fmt = std::chars_format::general;
  std::string_view text = digits;
  if (text.size() >= 2 && text[0] == '0' && lower(text[1]) == 'x') {
    text.remove_prefix(2);
    // Go requires the 'p' exponent on a hexadecimal mantissa.
    if (text.find_first_of("pP") == std::string_view::npos) return makeError("parse error");
    fmt = std::chars_format::hex;
  }
  // from_chars takes no sign of its own here: the sign was consumed above.
  if (text.empty() || text[0] == '+' || text[0] == '-') return makeError("parse error");
  double d = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), d, fmt);
  if (ec == std::errc::result_out_of_range) return makeError("value out of range");
  if (ec != std::errc() || p != text.data() + text.size()) return makeError("parse error");
  if (std::isinf(d)) return makeError("value out of range");
  return sign * d;
}

Result<Duration> parseGoDuration(std::string_view s) {
  // time.ParseDuration: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+, or "0".
  const std::string orig(s);
  auto invalid = [&orig]() { return makeError("time: invalid duration " + quoteGo(orig)); };
  constexpr uint64_t kMax = uint64_t{1} << 63;
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return Duration(0);
  if (s.empty()) return invalid();
  uint64_t total = 0;
  while (!s.empty()) {
    if (!(s[0] == '.' || (s[0] >= '0' && s[0] <= '9'))) return invalid();
    // Integer part.
    uint64_t v = 0;
    size_t i = 0;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      if (v > kMax / 10) return invalid();
      v = v * 10 + static_cast<uint64_t>(s[i] - '0');
      if (v > kMax) return invalid();
    }
    const bool pre = i > 0;
    s.remove_prefix(i);
    // Fraction.
    uint64_t f = 0;
    double scale = 1;
    bool post = false;
    if (!s.empty() && s[0] == '.') {
      s.remove_prefix(1);
      size_t j = 0;
      bool over = false;
      for (; j < s.size() && s[j] >= '0' && s[j] <= '9'; ++j) {
        if (over) continue;
        if (f > (kMax - 1) / 10) {
          over = true;
          continue;
        }
        const uint64_t y = f * 10 + static_cast<uint64_t>(s[j] - '0');
        if (y > kMax) {
          over = true;
          continue;
        }
        f = y;
        scale *= 10;
      }
      post = j > 0;
      s.remove_prefix(j);
    }
    if (!pre && !post) return invalid();
    // Unit.
    size_t u = 0;
    while (u < s.size() && s[u] != '.' && !(s[u] >= '0' && s[u] <= '9')) ++u;
    if (u == 0) return makeError("time: missing unit in duration " + quoteGo(orig));
    const std::string_view unitName = s.substr(0, u);
    s.remove_prefix(u);
    uint64_t unit = 0;
    if (unitName == "ns") {
      unit = 1;
    } else if (unitName == "us" || unitName == "\xc2\xb5s" || unitName == "\xce\xbcs") {
      unit = 1000;
    } else if (unitName == "ms") {
      unit = 1000000;
    } else if (unitName == "s") {
      unit = 1000000000;
    } else if (unitName == "m") {
      unit = 60ULL * 1000000000;
    } else if (unitName == "h") {
      unit = 3600ULL * 1000000000;
    } else {
      return makeError("time: unknown unit " + quoteGo(unitName) + " in duration " + quoteGo(orig));
    }
    if (v > kMax / unit) return invalid();
    v *= unit;
    if (f > 0) {
      v += static_cast<uint64_t>(static_cast<double>(f) * (static_cast<double>(unit) / scale));
      if (v > kMax) return invalid();
    }
    total += v;
    if (total > kMax) return invalid();
  }
  if (neg) {
    if (total == kMax) return Duration(std::numeric_limits<int64_t>::min());
    return Duration(-static_cast<int64_t>(total));
  }
  if (total > kMax - 1) return invalid();
  return Duration(static_cast<int64_t>(total));
}

std::string formatGoDuration(Duration d) {
  // time.Duration.String, built right to left.
  const int64_t ns = d.count();
  const bool neg = ns < 0;
  uint64_t u = neg ? (~static_cast<uint64_t>(ns) + 1) : static_cast<uint64_t>(ns);
  std::string r;  // reversed
  auto fmtFrac = [&r](uint64_t v, int prec) {
    bool print = false;
    for (int i = 0; i < prec; ++i) {
      const uint64_t digit = v % 10;
      print = print || digit != 0;
      if (print) r += static_cast<char>('0' + digit);
      v /= 10;
    }
    if (print) r += '.';
    return v;
  };
  auto fmtInt = [&r](uint64_t v) {
    if (v == 0) {
      r += '0';
      return;
    }
    while (v > 0) {
      r += static_cast<char>('0' + v % 10);
      v /= 10;
    }
  };
  constexpr uint64_t kSecond = 1000000000;
  if (u < kSecond) {
    int prec = 0;
    r += 's';
    if (u == 0) return "0s";
    if (u < 1000) {
      r += 'n';
    } else if (u < 1000000) {
      prec = 3;
      r += "\xb5\xc2";  // "µ" reversed
    } else {
      prec = 6;
      r += 'm';
    }
    u = fmtFrac(u, prec);
    fmtInt(u);
  } else {
    r += 's';
    u = fmtFrac(u, 9);
    fmtInt(u % 60);
    u /= 60;
    if (u > 0) {
      r += 'm';
      fmtInt(u % 60);
      u /= 60;
      if (u > 0) {
        r += 'h';
        fmtInt(u);
      }
    }
  }
  if (neg) r += '-';
  std::reverse(r.begin(), r.end());
  return r;
}

// ---------------------------------------------------------------------------

std::string Origin::describe(std::string_view key) const {
  switch (kind) {
    case Kind::Default:
      return "default";
    case Kind::File:
      return file + ":" + std::to_string(line);
    case Kind::Flag:
      return "flag -" + std::string(key);
  }
  return "default";
}

Origin Config::originOf(std::string_view key) const {
  if (auto it = origins.find(key); it != origins.end()) return it->second;
  return Origin{};
}

Env Env::system() {
  Env e;
  e.getenv = [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
  e.fileExists = [](const std::string& path) {
    struct stat st{};
    return ::stat(path.c_str(), &st) == 0;
  };
  return e;
}

Config defaultConfig(const Env& env) {
  Config c;
  auto get = [&env](const char* name) {
    if (!env.getenv) return std::string();
    return env.getenv(name).value_or("");
  };
  // tsweb.DefaultCertDir("derper-certs"): os.UserCacheDir()/tailscale/derper-certs,
  // or "" when the cache dir is unknown (no $HOME, or a relative $XDG_CACHE_HOME).
  std::string cache = get("XDG_CACHE_HOME");
  if (cache.empty()) {
    const std::string home = get("HOME");
    if (!home.empty()) cache = home + "/.cache";
  } else if (cache[0] != '/') {
    cache.clear();
  }
  c.certDir = cache.empty() ? "" : joinPath(cache, "tailscale/derper-certs");
  // derper's defaultMeshPSKFile(): the first that exists (os.Stat), else "".
  // filepath.Join(os.Getenv("HOME"), ...) is relative when $HOME is empty.
  const std::string home = get("HOME");
  const std::string tries[] = {"/home/derp/keys/derp-mesh.key",
                               home.empty() ? std::string("keys/derp-mesh.key")
                                            : joinPath(home, "keys/derp-mesh.key")};
  for (const std::string& p : tries) {
    if (env.fileExists && env.fileExists(p)) {
      c.meshPskFile = p;
      break;
    }
  }
  return c;
}

const std::vector<std::string>& keyNames() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> v;
    for (const KeyDef& k : keyTable()) v.emplace_back(k.name);
    std::sort(v.begin(), v.end());
    return v;
  }();
  return kNames;
}

Result<void> applyConfigText(Config& cfg, std::string_view text, const std::string& fileName) {
  std::map<std::string, int, std::less<>> seen;
  int lineNo = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++lineNo;
    auto fail = [&](const std::string& msg) {
      return makeError(fileName + ":" + std::to_string(lineNo) + ": " + msg);
    };
    const std::string_view t = trim(line);
    if (t.empty() || t.front() == '#') continue;
    const size_t eq = t.find('=');
    if (eq == std::string_view::npos) return fail("expected \"key = value\"");
    const std::string_view key = trim(t.substr(0, eq));
    if (key.empty()) return fail("missing key before '='");
    const KeyDef* k = findKey(key);
    if (k == nullptr) return fail("unknown key " + quoteGo(key));
    if (auto it = seen.find(key); it != seen.end()) {
      return fail("duplicate key " + quoteGo(key) + " (first set on line " + std::to_string(it->second) + ")");
    }
    seen.emplace(std::string(key), lineNo);
    auto value = parseFileValue(t.substr(eq + 1));
    if (!value) return fail(value.error() + " for key " + quoteGo(key));
    if (auto r = setValue(cfg, *k, *value); !r) {
      return fail("invalid value " + quoteGo(*value) + " for key " + quoteGo(key) + ": " + r.error());
    }
    cfg.origins[std::string(key)] = Origin{Origin::Kind::File, fileName, lineNo};
  }
  return {};
}

// How an error names a key: "FILE:LINE: key" when the value came from the
// config file, else the flag "-key" (a default or the command line).
std::string where(const Config& cfg, std::string_view key) {
  const Origin o = cfg.originOf(key);
  if (o.kind == Origin::Kind::File) return o.file + ":" + std::to_string(o.line) + ": " + std::string(key);
  return "-" + std::string(key);
}

std::string describeSetting(const Config& cfg, std::string_view key) {
  const Origin o = cfg.originOf(key);
  const std::string v = renderValue(cfg, key);
  if (o.kind == Origin::Kind::File) return o.file + ":" + std::to_string(o.line) + ": " + std::string(key) + " = " + v;
  return "-" + std::string(key) + " " + v;
}

Result<void> validate(const Config& cfg) {
  for (const KeyDef& k : keyTable()) {
    if (auto m = std::get_if<std::string Settings::*>(&k.member)) {
      if (hasNewlineOrNul(cfg.*(*m))) {
        return makeError(where(cfg, k.name) + ": value contains a newline or NUL byte");
      }
    }
  }
  if (auto r = checkAddr(cfg.addr); !r) {
    if (cfg.originOf("a").kind != Origin::Kind::File) return r;
    return makeError(where(cfg, "a") + ": " + r.error());
  }
  if (cfg.httpPort < -1 || cfg.httpPort > 65535) {
    return makeError(where(cfg, "http-port") + " " + std::to_string(cfg.httpPort) + " out of range (-1 to 65535)");
  }
  if (cfg.stunPort < 0 || cfg.stunPort > 65535) {
    return makeError(where(cfg, "stun-port") + " " + std::to_string(cfg.stunPort) + " out of range (0 to 65535)");
  }
  if (cfg.certMode != "manual" && cfg.certMode != "letsencrypt") {
    return makeError(where(cfg, "certmode") + " " + quoteGo(cfg.certMode) + " unsupported (manual or letsencrypt)");
  }
  if (!cfg.meshWith.empty() && cfg.meshPskFile.empty()) {
    return makeError(where(cfg, "mesh-with") + " requires -mesh-psk-file");
  }
  if (auto hosts = net::parseMeshWith(cfg.meshWith); !hosts) {
    if (cfg.originOf("mesh-with").kind != Origin::Kind::File) return std::move(hosts).takeError();
    return makeError(where(cfg, "mesh-with") + ": " + hosts.error());
  }
  if (cfg.verifyClients && cfg.verifyClientsSocket.empty()) {
    return makeError(where(cfg, "verify-clients") + " needs verify-clients-socket (tailscaled's LocalAPI socket)");
  }
  if (!cfg.verifyClientUrl.empty()) {
    const std::string_view u = cfg.verifyClientUrl;
    size_t hostStart = 0;
    if (u.size() > 7 && equalFold(u.substr(0, 7), "http://")) {
      hostStart = 7;
    } else if (u.size() > 8 && equalFold(u.substr(0, 8), "https://")) {
      hostStart = 8;
    }
    if (hostStart == 0 || u[hostStart] == '/') {
      return makeError(where(cfg, "verify-client-url") + " " + quoteGo(u) + " must be an http:// or https:// URL with a host");
    }
  }
  if (cfg.acceptConnectionLimit < 0) return makeError(where(cfg, "accept-connection-limit") + " must not be negative");
  if (cfg.acceptConnectionBurst < 0) return makeError(where(cfg, "accept-connection-burst") + " must not be negative");
  if (cfg.logLevel != "trace" && cfg.logLevel != "debug" && cfg.logLevel != "info" &&
      cfg.logLevel != "warn" && cfg.logLevel != "error") {
    return makeError(where(cfg, "log-level") + " " + quoteGo(cfg.logLevel) + ": want trace, debug, info, warn or error");
  }
  if (cfg.threads < 0 || cfg.threads > 256) {
    return makeError(where(cfg, "threads") + " " + std::to_string(cfg.threads) + " out of range (0 to 256)");
  }
  if (cfg.drainTimeout.count() < 0) return makeError(where(cfg, "drain-timeout") + " must not be negative");
  if (cfg.childWatchdog.count() != 0 && cfg.childWatchdog < std::chrono::seconds(3))
    return makeError(where(cfg, "child-watchdog") + " must be 0 (off) or at least 3s (children report every 1-2 s)");
  if (cfg.maxConnections < 0) return makeError(where(cfg, "max-connections") + " must not be negative");
  if (cfg.maxHandshakes < 0) return makeError(where(cfg, "max-handshakes") + " must not be negative");
  if (cfg.monitorInterval < std::chrono::milliseconds(100))
    return makeError(where(cfg, "monitor-interval") + " must be at least 100ms");
  if (cfg.user.empty()) return makeError(where(cfg, "user") + " must not be empty");
  if (cfg.certUser.empty()) return makeError(where(cfg, "cert-user") + " must not be empty");
  {
    const std::string& u = cfg.acmeDirectoryUrl;
    const bool http = u.size() > 7 && equalFold(u.substr(0, 7), "http://") && u[7] != '/';
    const bool https = u.size() > 8 && equalFold(u.substr(0, 8), "https://") && u[8] != '/';
    if (!http && !https)
      return makeError(where(cfg, "acme-directory-url") + " " + quoteGo(u) + " must be an https:// (or http://) URL with a host");
  }
  if (auto c = parseAcmeChallenges(cfg.acmeChallenges); !c)
    return makeError(where(cfg, "acme-challenges") + " " + quoteGo(cfg.acmeChallenges) + ": " + c.error());
  if (cfg.acmeEabKid.empty() != cfg.acmeEabKey.empty())
    return makeError(where(cfg, "acme-eab-kid") + " and -acme-eab-key go together: set both or neither");
  if (cfg.runtimeDir.empty() || cfg.runtimeDir[0] != '/') {
    return makeError(where(cfg, "runtime-dir") + " " + quoteGo(cfg.runtimeDir) + " must be an absolute path");
  }
  if (cfg.stateDir.empty() || cfg.stateDir[0] != '/') {
    return makeError(where(cfg, "state-dir") + " " + quoteGo(cfg.stateDir) + " must be an absolute path");
  }
  if (cfg.configFile.empty()) return makeError(where(cfg, "config") + " must not be empty");
  if (cfg.logFormat != "auto" && cfg.logFormat != "plain" && cfg.logFormat != "journal")
    return makeError(where(cfg, "log-format") + " " + quoteGo(cfg.logFormat) + ": want auto, plain or journal");
  return {};
}

Result<std::vector<std::string>> parseAcmeChallenges(std::string_view s) {
  std::vector<std::string> out;
  for (;;) {
    const size_t comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item != "tls-alpn-01" && item != "http-01")
      return makeError("want a comma-separated list of tls-alpn-01 and http-01");
    out.emplace_back(item);
    if (comma == std::string_view::npos) return out;
    s.remove_prefix(comma + 1);
  }
}

Result<Config> parseConfigText(std::string_view text, const std::string& fileName, const Env& env) {
  Config cfg = defaultConfig(env);
  if (auto r = applyConfigText(cfg, text, fileName); !r) return std::move(r).takeError();
  if (auto r = validate(cfg); !r) return std::move(r).takeError();
  return cfg;
}

Result<void> checkFlags(const std::vector<std::string>& args) {
  bool help = false;
  auto flags = parseFlags(args, help);
  if (!flags) return std::move(flags).takeError();
  return {};
}

Result<Config> loadConfig(const std::vector<std::string>& args, const Env& env) {
  bool help = false;
  auto flags = parseFlags(args, help);
  if (!flags) return std::move(flags).takeError();
  Config cfg = defaultConfig(env);
  if (help) {
    cfg.help = true;
    return cfg;
  }
  bool explicitFile = false;
  bool version = false;
  std::string path = cfg.configFile;
  for (const Assignment& a : *flags) {
    if (a.key->name == "config") {
      explicitFile = true;
      path = a.value;
    }
    if (a.key->name == "version") version = parseGoBool(a.value).ok() && *parseGoBool(a.value);
  }
  if (!version) {
    std::string text;
    int err = readSmallFile(path, text);
    if (err == ENOENT && !explicitFile) {
      // The default path may be absent: defaults apply.
    } else if (err != 0) {
      return makeError("config file " + path + ": " + std::strerror(err));
    } else if (auto r = applyConfigText(cfg, text, path); !r) {
      return std::move(r).takeError();
    }
  }
  for (const Assignment& a : *flags) {
    // Already checked in parseFlags; cannot fail here.
    if (auto r = setValue(cfg, *a.key, a.value); !r) return std::move(r).takeError();
    cfg.origins[std::string(a.key->name)] = Origin{Origin::Kind::Flag, "", 0};
  }
  if (!explicitFile) cfg.origins.erase("config");  // the file cannot name another file
  cfg.configFile = path;
  if (auto r = validate(cfg); !r) return std::move(r).takeError();
  return cfg;
}

std::string renderValue(const Config& cfg, std::string_view key) {
  const KeyDef* k = findKey(key);
  return k == nullptr ? std::string() : getValue(cfg, *k);
}

std::string renderConfig(const Config& cfg) {
  std::string out;
  for (const std::string& name : keyNames()) {
    out += name;
    out += " = ";
    out += quoteValue(getValue(cfg, *findKey(name)));
    out += '\n';
  }
  return out;
}

std::string usage(const Env& env) {
  const Config def = defaultConfig(env);
  auto typeName = [](const KeyDef& k) -> std::string_view {
    struct V {
      std::string_view operator()(std::string Settings::*) const { return "string"; }
      std::string_view operator()(bool Settings::*) const { return ""; }
      std::string_view operator()(int Settings::*) const { return "int"; }
      std::string_view operator()(int64_t Settings::*) const { return "int"; }
      std::string_view operator()(double Settings::*) const { return "float"; }
      std::string_view operator()(Duration Settings::*) const { return "duration"; }
    };
    return std::visit(V{}, k.member);
  };
  auto section = [&](bool derper) {
    std::vector<const KeyDef*> keys;
    for (const KeyDef& k : keyTable()) {
      if (k.derper == derper) keys.push_back(&k);
    }
    std::sort(keys.begin(), keys.end(), [](const KeyDef* a, const KeyDef* b) { return a->name < b->name; });
    std::string out;
    for (const KeyDef* k : keys) {
      out += "  -";
      out += k->name;
      if (auto t = typeName(*k); !t.empty()) {
        out += ' ';
        out += t;
      }
      out += "\n        ";
      out += k->meaning;
      std::string d = getValue(def, *k);
      if (std::holds_alternative<std::string Settings::*>(k->member)) d = quoteGo(d);
      out += " (default ";
      out += d;
      out += ")\n";
    }
    return out;
  };
  std::string out =
      "usage: derpd [flags]\n"
      "\n"
      "derpd is a DERP relay server, a drop-in replacement for Tailscale's derper.\n"
      "Flags use Go's syntax: -name value, -name=value or --name; a boolean takes a\n"
      "value only with '=' (-stun=false). Every flag may also be set in the config file\n"
      "as a \"name = value\" line (name without dashes, # comments); flags override it.\n"
      "\n"
      "derper's flags:\n";
  out += section(true);
  out += "\nderpd's own flags:\n";
  out += section(false);
  out += "  -h, -help, --help\n        print this text and exit\n";
  return out;
}

std::string usage() { return usage(Env::system()); }

}  // namespace derpd::config
