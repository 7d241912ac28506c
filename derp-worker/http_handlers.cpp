#include "http_handlers.hpp"

#include <arpa/inet.h>
#include <sodium.h>

#include <cstring>
#include <utility>
#include <vector>

#include "common/util/text.hpp"

namespace derpd::worker {

namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

const char* reasonPhrase(int status) {
  switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    default: return "Unknown";
  }
}

const char* kCsp =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; "
    "block-all-mixed-content; object-src 'none'";

// Go's response layout: the handler's headers (sorted by name, as Go writes
// them), then Date, then Content-Length, then a sniffed Content-Type and
// Connection: close.
struct Response {
  int status = 200;
  Headers headers;           // already in Go's sorted order
  std::string body;
  bool contentLength = true;  // false for 204 and for HEAD with no body
  std::string sniffedType;    // appended after Content-Length
  bool close = false;
};

std::string render(const Response& r, bool head, long now) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reasonPhrase(r.status) + "\r\n";
  for (const auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
  out += "Date: " + http::httpDate(now) + "\r\n";
  if (r.contentLength) out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  if (!r.sniffedType.empty()) out += "Content-Type: " + r.sniffedType + "\r\n";
  if (r.close) out += "Connection: close\r\n";
  out += "\r\n";
  if (!head) out += r.body;
  return out;
}

Response errorResponse(int status, const std::string& msg) {
  Response r;
  r.status = status;
  r.headers = {{"Content-Type", "text/plain; charset=utf-8"}, {"X-Content-Type-Options", "nosniff"}};
  r.body = msg;
  return r;
}

// Browser security headers; `contentType` slots into sorted order.
Headers browserHeaders(const std::string& contentType, bool debugPage, bool connectionClose = false) {
  Headers h;
  if (connectionClose) h.emplace_back("Connection", "close");
  h.emplace_back("Content-Security-Policy",
                 debugPage ? std::string(kCsp) + "; style-src 'self' 'unsafe-inline'" : std::string(kCsp));
  if (!contentType.empty()) h.emplace_back("Content-Type", contentType);
  h.emplace_back("Strict-Transport-Security", "max-age=63072000; includeSubDomains");
  h.emplace_back("X-Content-Type-Options", "nosniff");
  h.emplace_back("X-Frame-Options", "DENY");
  return h;
}

bool validChallenge(const std::string& c) {
  if (c.empty() || c.size() > 64) return false;
  for (char ch : c) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_';
    if (!ok) return false;
  }
  return true;
}

Response generate204(const http::RequestHead& req) {
  Response r;
  r.status = 204;
  r.contentLength = false;
  if (const std::string* c = req.get("X-Tailscale-Challenge"); c && validChallenge(*c)) {
    r.headers.emplace_back("X-Tailscale-Response", "response " + *c);
  }
  return r;
}

std::string homePage(bool derpEnabled, bool showDebug) {
  std::string s =
      "<html><body>\n"
      "<h1>DERP</h1>\n"
      "<p>\n"
      "  This is a <a href=\"https://tailscale.com/\">Tailscale</a> DERP server.\n"
      "</p>\n";
  if (!derpEnabled) s += "<p>Status: disabled</p>\n";
  s +=
      "<p>\n"
      "  Documentation:\n"
      "</p>\n"
      "<ul>\n"
      "  <li><a href=\"https://tailscale.com/kb/1232/derp-servers\">About DERP</a></li>\n"
      "  <li><a href=\"https://pkg.go.dev/tailscale.com/derp\">Protocol & Go docs</a></li>\n"
      "  <li><a href=\"https://github.com/tailscale/tailscale/tree/main/cmd/derper#derp\">How to run a "
      "DERP server</a></li>\n"
      "</ul>\n";
  if (showDebug) s += "<p>Debug info at <a href='/debug/'>/debug/</a>.</p>\n";
  return s;
}

bool inPrefix(const uint8_t* a, const uint8_t* p, int bits) {
  int full = bits / 8, rem = bits % 8;
  if (std::memcmp(a, p, full) != 0) return false;
  if (rem == 0) return true;
  uint8_t mask = uint8_t(0xff << (8 - rem));
  return (a[full] & mask) == (p[full] & mask);
}

bool isMapped4(const Ip16& ip) {
  static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(ip.data(), kMapped, 12) == 0;
}

// Go's http.Redirect puts the URL through hexEscapeNonASCII for Location.
std::string hexEscapeNonAscii(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    auto b = static_cast<unsigned char>(c);
    if (b < 0x80) {
      out += c;
    } else {
      out += '%';
      out += kHex[b >> 4];
      out += kHex[b & 15];
    }
  }
  return out;
}

Response redirect(const std::string& location) {
  Response r;
  r.status = 302;
  r.headers = {{"Content-Type", "text/html; charset=utf-8"}, {"Location", location}};
  r.body = "<a href=\"" + location + "\">Found</a>.\n\n";
  return r;
}

// Go's ServeMux answer to "/debug" when only "/debug/" is registered: 301
// to "/debug/" with the query kept (http.Redirect: a body for GET only, a
// Content-Type for GET and HEAD). No access check: derper's mux redirects
// before any debug handler runs.
Response debugSlashRedirect(const http::RequestHead& req) {
  std::string location = "/debug/";
  if (!req.query.empty()) location += "?" + req.query;
  Response r;
  r.status = 301;
  if (req.method == "GET" || req.method == "HEAD") r.headers.emplace_back("Content-Type", "text/html; charset=utf-8");
  r.headers.emplace_back("Location", hexEscapeNonAscii(location));
  if (req.method == "GET") r.body = "<a href=\"" + htmlEscape(location) + "\">Moved Permanently</a>.\n\n";
  return r;
}

bool allowedFor(const http::RequestHead& req, const HttpContext& ctx) {
  static const DebugAccess kNone;
  return debugAllowed(req, ctx.peerIp16, ctx.debugAccess ? *ctx.debugAccess : kNone);
}

// The /debug/ index in derper's shape (tsweb/debug.go DebugHandler.ServeHTTP
// and cmd/derper's KVs): "<html><body><h1>NAME debug</h1><ul>", one
// "<li><b>K:</b> V</li>" per value, one "<li><a href=U>U</a> (DESC)</li>" per
// page, and nothing after (derper closes no tags either).
std::string debugIndex(const DebugInfo& info) {
  std::string s = "<html><body><h1>derpd debug</h1><ul>";
  auto kv = [&](const char* k, const std::string& v) { s += "<li><b>" + std::string(k) + ":</b> " + htmlEscape(v) + "</li>"; };
  kv("Uptime", goDurationSeconds(info.uptimeSec));
  kv("Version", info.version);
  kv("Machine", info.machine);
  kv("TLS hostname", info.tlsHostname);
  kv("Mesh key", info.meshKey ? "true" : "false");
  auto link = [&](const char* url, const char* desc) {
    s += "<li><a href=\"" + std::string(url) + "\">" + url + "</a> (" + htmlEscape(desc) + ")</li>";
  };
  link("/debug/vars", "Metrics (JSON)");
  link("/debug/varz", "Metrics (Prometheus)");
  link("/debug/check", "Consistency check");
  return s;
}

enum class DebugRoute { Index, Varz, Vars, Check, GoRuntime, Unknown };

DebugRoute debugRoute(const std::string& path) {
  if (path == "/debug/") return DebugRoute::Index;
  if (path == "/debug/varz") return DebugRoute::Varz;
  if (path == "/debug/vars") return DebugRoute::Vars;
  if (path == "/debug/check") return DebugRoute::Check;
  if (path.rfind("/debug/pprof/", 0) == 0 || path == "/debug/gc" || path == "/debug/traffic" ||
      path == "/debug/set-mutex-profile-fraction") {
    return DebugRoute::GoRuntime;
  }
  return DebugRoute::Unknown;
}

// Everything under /debug/ (PROTOCOL.md §7.2). derper registers the index as
// tsweb's DebugHandler (access check, then 404 for any path it does not
// serve itself) and each page with tsweb.Protected (access check; in -dev
// mode the 403 names TS_ALLOW_DEBUG_IP) around debugBrowserHeaderHandler (the
// browser headers with the relaxed debug CSP). The index itself gets the
// plain AddBrowserHeaders, as the captured derper response shows.
Response debugResponse(const http::RequestHead& req, const HttpContext& ctx) {
  const DebugRoute route = debugRoute(req.path);
  if (!allowedFor(req, ctx)) {
    std::string msg = "debug access denied";
    if (ctx.dev && route != DebugRoute::Index && route != DebugRoute::Unknown) {
      msg += "; to permit access, set TS_ALLOW_DEBUG_IP=" + ctx.peerIp;
    }
    return errorResponse(403, msg + "\n");
  }
  Response r;
  switch (route) {
    case DebugRoute::Index:
      r.headers = browserHeaders("", false);
      r.body = debugIndex(ctx.debugInfo ? ctx.debugInfo() : DebugInfo{});
      r.sniffedType = "text/html; charset=utf-8";
      return r;
    case DebugRoute::Varz:
      // derper's promvarz handler sets no Content-Type: Go sniffs text/plain.
      r.headers = browserHeaders("", true);
      r.body = ctx.varz ? ctx.varz() : std::string();
      if (!r.body.empty()) r.sniffedType = "text/plain; charset=utf-8";
      return r;
    case DebugRoute::Vars:
      r.headers = browserHeaders("application/json; charset=utf-8", true);
      r.body = ctx.vars ? ctx.vars() : std::string("{\n}\n");
      return r;
    case DebugRoute::Check: {
      std::vector<std::string> errs = ctx.check ? ctx.check() : std::vector<std::string>{};
      if (errs.empty()) {
        r.headers = browserHeaders("", true);
        r.body = "derp.Server ConsistencyCheck okay";
        r.sniffedType = "text/plain; charset=utf-8";
        return r;
      }
      // derper: http.Error(w, err.Error(), 500) after the browser headers,
      // its errors joined with ", "; here one per line.
      r.status = 500;
      r.headers = browserHeaders("text/plain; charset=utf-8", true);
      for (const std::string& e : errs) r.body += e + "\n";
      return r;
    }
    case DebugRoute::GoRuntime:
      // derper's pprof/ (+ pprof/profile, goroutine dumps), gc, traffic and
      // set-mutex-profile-fraction inspect or tune the Go runtime (profiles,
      // goroutines, the garbage collector, mutex profiling) or shell out to
      // `ss`; there is no Go runtime here, so they are not found, and the
      // index does not link them. Profile derp-worker with perf instead.
      return errorResponse(404, "404 page not found\n");
    case DebugRoute::Unknown:
      break;
  }
  return errorResponse(404, "404 page not found\n");
}

bool isAsciiSpace(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

bool isUnicodeSpace(uint32_t r) {
  return r == 0x85 || r == 0xa0 || r == 0x1680 || (r >= 0x2000 && r <= 0x200a) || r == 0x2028 || r == 0x2029 ||
         r == 0x202f || r == 0x205f || r == 0x3000;
}

// Decodes one UTF-8 sequence of 2..3 bytes at s (enough for every Unicode
// space); 0 when it is not one.
size_t decodeSpace(std::string_view s) {
  auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  if (s.size() >= 2 && (b(0) & 0xe0) == 0xc0 && (b(1) & 0xc0) == 0x80) {
    uint32_t r = (uint32_t(b(0) & 0x1f) << 6) | (b(1) & 0x3f);
    return r >= 0x80 && isUnicodeSpace(r) ? 2 : 0;
  }
  if (s.size() >= 3 && (b(0) & 0xf0) == 0xe0 && (b(1) & 0xc0) == 0x80 && (b(2) & 0xc0) == 0x80) {
    uint32_t r = (uint32_t(b(0) & 0x0f) << 12) | (uint32_t(b(1) & 0x3f) << 6) | (b(2) & 0x3f);
    return r >= 0x800 && isUnicodeSpace(r) ? 3 : 0;
  }
  return 0;
}

}  // namespace

bool isLoopbackIp(const Ip16& ip) {
  if (isMapped4(ip)) return ip[12] == 127;
  static const Ip16 kV6Loopback = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return ip == kV6Loopback;
}

bool isTailscaleIp(const Ip16& ip) {
  if (isMapped4(ip)) {
    const uint8_t* b = ip.data() + 12;
    static const uint8_t cgnat[4] = {100, 64, 0, 0};
    static const uint8_t chromeos[4] = {100, 115, 92, 0};
    return inPrefix(b, cgnat, 10) && !inPrefix(b, chromeos, 23);
  }
  static const uint8_t ula[6] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0};
  return inPrefix(ip.data(), ula, 48);
}

std::optional<Ip16> parseIp16(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN || text.find('\0') != std::string_view::npos) return std::nullopt;
  std::string s(text);
  Ip16 ip{};
  in_addr a4;
  if (inet_pton(AF_INET, s.c_str(), &a4) == 1) {
    ip[10] = 0xff;
    ip[11] = 0xff;
    std::memcpy(&ip[12], &a4, 4);
    return ip;
  }
  in6_addr a6;
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) {
    std::memcpy(ip.data(), a6.s6_addr, 16);
    return ip;
  }
  return std::nullopt;
}

std::string_view trimGoSpace(std::string_view s) {
  for (;;) {
    if (!s.empty() && isAsciiSpace(static_cast<unsigned char>(s.front()))) {
      s.remove_prefix(1);
    } else if (size_t n = decodeSpace(s)) {
      s.remove_prefix(n);
    } else {
      break;
    }
  }
  for (;;) {
    if (!s.empty() && isAsciiSpace(static_cast<unsigned char>(s.back()))) {
      s.remove_suffix(1);
      continue;
    }
    size_t n = 0;
    for (size_t len : {size_t(2), size_t(3)}) {
      if (s.size() >= len && decodeSpace(s.substr(s.size() - len)) == len) n = len;
    }
    if (n == 0) break;
    s.remove_suffix(n);
  }
  return s;
}

std::optional<std::array<uint8_t, 32>> debugKeyDigest(std::string_view fileContent) {
  std::string_view key = trimGoSpace(fileContent);
  if (key.empty()) return std::nullopt;
  std::array<uint8_t, 32> d{};
  crypto_hash_sha256(d.data(), reinterpret_cast<const unsigned char*>(key.data()), key.size());
  return d;
}

std::string goDurationSeconds(long seconds) {
  if (seconds <= 0) return "0s";
  long h = seconds / 3600, m = (seconds % 3600) / 60, s = seconds % 60;
  if (h > 0) return std::to_string(h) + "h" + std::to_string(m) + "m" + std::to_string(s) + "s";
  if (m > 0) return std::to_string(m) + "m" + std::to_string(s) + "s";
  return std::to_string(s) + "s";
}

bool debugAllowed(const http::RequestHead& req, const Ip16& peer, const DebugAccess& access) {
  // tsweb's allowDebugAccessWithKey: GET only, the first valid debugkey
  // pair, non-empty. Both sides are compared as SHA-256 digests with a
  // constant-time compare (derper uses ==).
  if (req.method == "GET" && access.keyDigest) {
    if (auto k = http::queryValue(req.query, "debugkey"); k && !k->empty()) {
      std::array<uint8_t, 32> d{};
      crypto_hash_sha256(d.data(), reinterpret_cast<const unsigned char*>(k->data()), k->size());
      bool same = sodium_memcmp(d.data(), access.keyDigest->data(), d.size()) == 0;
      sodium_memzero(d.data(), d.size());
      if (same) return true;
    }
  }
  // r.Header.Get("X-Forwarded-For") != "": the first such header, non-empty.
  if (const std::string* xff = req.get("X-Forwarded-For"); xff && !xff->empty()) return false;
  if (isLoopbackIp(peer) || isTailscaleIp(peer)) return true;
  return access.allowIp && *access.allowIp == peer;
}

std::string plainTextResponse(int status, const std::string& body, long nowUnix, bool close) {
  Response r = errorResponse(status, body);
  r.close = close;
  return render(r, false, nowUnix);
}

HttpAction handleHttpRequest(const http::RequestHead& req, const HttpContext& ctx) {
  HttpAction a;
  const bool head = req.method == "HEAD";
  const std::string& path = req.path;
  Response r;

  // TLS mode's port-80 listener (PROTOCOL.md §7.3) hands a RequestURI that
  // starts with "/debug" to the main mux (tsweb.Port80Handler), below.
  static constexpr std::string_view kAcmePrefix = "/.well-known/acme-challenge/";
  if (ctx.port80 && path == "/generate_204") {
    r = generate204(req);
  } else if (ctx.port80 && ctx.acmeHttpToken && path.rfind(kAcmePrefix, 0) == 0) {
    // autocert's HTTPHandler: host policy (403), then the token (404).
    std::string host = req.get("Host") ? *req.get("Host") : std::string();
    if (size_t colon = host.rfind(':'); colon != std::string::npos && host.find(']') == std::string::npos &&
                                        host.find(':') == colon)
      host.resize(colon);
    for (char& c : host) c = char(std::tolower(static_cast<unsigned char>(c)));
    std::string want = ctx.acmeHostname;
    for (char& c : want) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (host != want) {
      r = errorResponse(403, "acme/autocert: host \"" + host + "\" not configured in HostWhitelist\n");
    } else if (auto keyAuth = ctx.acmeHttpToken(path.substr(kAcmePrefix.size()))) {
      r.sniffedType = "text/plain; charset=utf-8";
      r.body = *keyAuth;
    } else {
      r = errorResponse(404, "acme/autocert: certificate cache miss\n");
    }
  } else if (ctx.port80 && req.target.rfind("/debug", 0) != 0) {
    if (req.method != "GET" && req.method != "HEAD") {
      r = errorResponse(400, "Use HTTPS\n");
    } else {
      const std::string* host = req.get("Host");
      std::string target = req.target;
      if (target == "/" && allowedFor(req, ctx)) target = "/debug/";
      r = redirect("https://" + (host ? *host : std::string()) + target);
      if (head) r.contentLength = false;
    }
  } else if (path == "/derp") {
    if (!ctx.derpEnabled) {
      r = errorResponse(404, "derp server disabled\n");
    } else {
      const std::string* up = req.get("Upgrade");
      std::string upgrade;
      if (up) for (char c : *up) upgrade += char(std::tolower(static_cast<unsigned char>(c)));
      const std::string* proto = req.get("Sec-WebSocket-Protocol");
      if (upgrade == "websocket" && proto && proto->find("derp") != std::string::npos) {
        a.kind = HttpAction::Kind::WebSocketUpgrade;
        return a;
      }
      if (upgrade != "websocket" && upgrade != "derp") {
        r = errorResponse(426, "DERP requires connection upgrade\n");
      } else {
        a.kind = HttpAction::Kind::DerpUpgrade;
        return a;
      }
    }
  } else if (path == "/derp/probe" || path == "/derp/latency-check") {
    if (req.method == "GET" || head) {
      r.headers = {{"Access-Control-Allow-Origin", "*"}};
      r.contentLength = !head;
    } else {
      r = errorResponse(405, "bogus probe method\n");
    }
  } else if (path == "/generate_204") {
    r = generate204(req);
  } else if (path == "/robots.txt") {
    r.headers = browserHeaders("", false);
    r.body = "User-agent: *\nDisallow: /\n";
    r.sniffedType = "text/plain; charset=utf-8";
  } else if (path == "/bootstrap-dns") {
    r.headers = browserHeaders("application/json", false, true);
    if (ctx.bootstrapDns) r.body = ctx.bootstrapDns(http::queryValue(req.query, "q").value_or(""), ctx.peerIp);
    a.close = true;
  } else if (path == "/debug") {
    r = debugSlashRedirect(req);
  } else if (path.rfind("/debug/", 0) == 0) {
    r = debugResponse(req, ctx);
  } else {
    r.headers = browserHeaders("text/html; charset=utf-8", false);
    r.body = homePage(ctx.derpEnabled, allowedFor(req, ctx));
  }
  if (head && r.body.empty() && r.status != 204) r.contentLength = r.contentLength && !head;
  a.response = render(r, head, ctx.nowUnix);
  return a;
}

}  // namespace derpd::worker
