// derp-worker's HTTP endpoints (PROTOCOL.md §7) as a pure function from a
// request head to an action: a complete response (byte-exact with derper's
// but for the Date value and the values of the /debug/ pages), or a DERP /
// WebSocket takeover. Also the /debug/ access rule (§7.2) and its startup
// helpers. Included by derp-worker only.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/proto/http/http.hpp"

namespace derpd::worker {

// An IP address as 16 bytes; IPv4 (and IPv4-mapped IPv6) as ::ffff:a.b.c.d,
// so a mapped address is the IPv4 address, as Go's RemoteAddr makes it.
using Ip16 = std::array<uint8_t, 16>;

// Who may see /debug/ besides loopback and Tailscale peers (PROTOCOL.md
// §7.2). Built once in main before the sandbox (the key file is unreachable
// from the chroot), read-only afterwards.
struct DebugAccess {
  // SHA-256 of the debug key (the trimmed content of the key file); unset:
  // no ?debugkey= access. Only the digest is kept, and requests compare the
  // digest of what they present with it in constant time, so neither the
  // key's bytes nor its length leak through timing.
  std::optional<std::array<uint8_t, 32>> keyDigest;
  // $TS_ALLOW_DEBUG_IP: exactly one address. derper compares it with the
  // peer's address as a string (no list, no prefix); here both are parsed,
  // so only spelling differences (case, zero compression) match in addition.
  std::optional<Ip16> allowIp;
};

// What the /debug/ index shows (derper: tsweb.Debugger's KVs).
struct DebugInfo {
  long uptimeSec = 0;
  std::string version;
  std::string machine;      // host name (uname nodename)
  std::string tlsHostname;  // -hostname
  bool meshKey = false;
};

struct HttpContext {
  bool derpEnabled = true;
  bool port80 = false;        // the TLS-mode port-80 listener
  bool dev = false;           // -dev: the 403 of debug pages names TS_ALLOW_DEBUG_IP
  std::string peerIp;         // textual IP of the TCP peer (IPv4-mapped shown as IPv4)
  Ip16 peerIp16{};            // the same address as bytes
  const DebugAccess* debugAccess = nullptr;  // null: loopback/Tailscale peers only
  long nowUnix = 0;
  // The /debug/ pages' data, called only for an allowed request.
  std::function<std::string()> varz;                      // /debug/varz body
  std::function<std::string()> vars;                      // /debug/vars body (JSON)
  std::function<std::vector<std::string>()> check;        // /debug/check: errors, empty = okay
  std::function<DebugInfo()> debugInfo;                   // /debug/ index values
  // /bootstrap-dns body for the ?q= value and peerIp; null: empty body.
  std::function<std::string(std::string_view q, const std::string& peerIp)> bootstrapDns;
  // Port 80 in ACME mode: the key authorization of an HTTP-01 token (nullopt:
  // unknown), and the host name the host policy allows. Null: no ACME.
  std::function<std::optional<std::string>(const std::string& token)> acmeHttpToken;
  std::string acmeHostname;
};

struct HttpAction {
  enum class Kind { Respond, DerpUpgrade, WebSocketUpgrade } kind = Kind::Respond;
  std::string response;   // Respond: the whole response
  bool close = false;     // Respond: close the connection afterwards
};

HttpAction handleHttpRequest(const http::RequestHead& req, const HttpContext& ctx);

// Go's http.Error-style plain-text response (used for 4xx/5xx).
std::string plainTextResponse(int status, const std::string& body, long nowUnix, bool close);

// derper's tsweb.AllowDebugAccess (PROTOCOL.md §7.2), in this order:
//  1. a GET whose query has a non-empty `debugkey` equal to the debug key
//     (Go's r.FormValue: the first valid pair) -> allowed, whatever else;
//  2. a non-empty X-Forwarded-For (Go's Header.Get: the first one) -> refused;
//  3. a peer that is loopback (127/8, ::1), a Tailscale address
//     (100.64.0.0/10 minus 100.115.92.0/23, fd7a:115c:a1e0::/48) or the
//     $TS_ALLOW_DEBUG_IP address -> allowed; anything else refused.
// `peer` is the TCP peer; an IPv4-mapped address counts as IPv4.
bool debugAllowed(const http::RequestHead& req, const Ip16& peer, const DebugAccess& access);

bool isLoopbackIp(const Ip16& ip);
bool isTailscaleIp(const Ip16& ip);

// IPv4, IPv6 or IPv4-mapped IPv6 text (no zone, no brackets) -> 16 bytes.
std::optional<Ip16> parseIp16(std::string_view text);

// Go's bytes.TrimSpace: ASCII white space and the Unicode White_Space code
// points (U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F,
// U+205F, U+3000) at both ends.
std::string_view trimGoSpace(std::string_view s);

// The DebugAccess::keyDigest of a key file's content (trimmed as derper
// does); nullopt when nothing is left after trimming.
std::optional<std::array<uint8_t, 32>> debugKeyDigest(std::string_view fileContent);

// Go's time.Duration.String for whole seconds ("0s", "59s", "1m40s", "26h0m5s").
std::string goDurationSeconds(long seconds);

}  // namespace derpd::worker
