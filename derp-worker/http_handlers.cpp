#include "http_handlers.hpp"

#include <arpa/inet.h>

#include <cstring>
#include <utility>
#include <vector>

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

bool isTailscaleIp(const std::string& ip) {
  in_addr a4;
  in6_addr a6;
  if (inet_pton(AF_INET, ip.c_str(), &a4) == 1) {
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&a4);
    static const uint8_t cgnat[4] = {100, 64, 0, 0};
    static const uint8_t chromeos[4] = {100, 115, 92, 0};
    return inPrefix(b, cgnat, 10) && !inPrefix(b, chromeos, 23);
  }
  if (inet_pton(AF_INET6, ip.c_str(), &a6) == 1) {
    static const uint8_t ula[6] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0};
    return inPrefix(a6.s6_addr, ula, 48);
  }
  return false;
}

Response redirect(const std::string& location) {
  Response r;
  r.status = 302;
  r.headers = {{"Content-Type", "text/html; charset=utf-8"}, {"Location", location}};
  r.body = "<a href=\"" + location + "\">Found</a>.\n\n";
  return r;
}

Response debugResponse(const http::RequestHead& req, const HttpContext& ctx, bool& handled) {
  handled = true;
  if (req.path == "/debug") {
    Response r = redirect("/debug/");
    r.status = 301;
    r.body = "<a href=\"/debug/\">Moved Permanently</a>.\n\n";
    return r;
  }
  if (!debugAllowed(req, ctx.peerIp, ctx.peerLoopback)) {
    return errorResponse(403, ctx.dev ? "debug access denied; use a loopback or Tailscale address\n"
                                      : "debug access denied\n");
  }
  if (req.path == "/debug/varz") {
    Response r;
    r.headers = {{"Content-Type", "text/plain; version=0.0.4; charset=utf-8"}};
    r.body = ctx.varz ? ctx.varz() : std::string();
    return r;
  }
  if (req.path == "/debug/") {
    Response r;
    r.headers = browserHeaders("text/html; charset=utf-8", true);
    r.body =
        "<html><head><title>derpd debug</title></head><body>\n"
        "<h1>derpd debug</h1>\n"
        "<ul>\n"
        "<li><a href=\"/debug/varz\">/debug/varz</a> (Prometheus metrics)</li>\n"
        "</ul>\n"
        "</body></html>\n";
    return r;
  }
  return errorResponse(404, "404 page not found\n");
}

}  // namespace

bool debugAllowed(const http::RequestHead& req, const std::string& peerIp, bool peerLoopback) {
  if (req.get("X-Forwarded-For") != nullptr) return false;
  return peerLoopback || isTailscaleIp(peerIp);
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
  bool handled = false;

  if (ctx.port80) {
    // TLS mode's port-80 listener (PROTOCOL.md §7.3).
    if (path == "/generate_204") {
      r = generate204(req);
    } else if (req.target.rfind("/debug", 0) == 0) {
      r = debugResponse(req, ctx, handled);
    } else if (req.method != "GET" && req.method != "HEAD") {
      r = errorResponse(400, "Use HTTPS\n");
    } else {
      const std::string* host = req.get("Host");
      std::string target = req.target;
      if (target == "/" && debugAllowed(req, ctx.peerIp, ctx.peerLoopback)) target = "/debug/";
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
    // No names are published by this process: derper's empty body.
    r.headers = browserHeaders("application/json", false, true);
    a.close = true;
  } else if (path == "/debug" || path.rfind("/debug/", 0) == 0) {
    r = debugResponse(req, ctx, handled);
  } else {
    r.headers = browserHeaders("text/html; charset=utf-8", false);
    r.body = homePage(ctx.derpEnabled, debugAllowed(req, ctx.peerIp, ctx.peerLoopback));
  }
  if (head && r.body.empty() && r.status != 204) r.contentLength = r.contentLength && !head;
  a.response = render(r, head, ctx.nowUnix);
  return a;
}

}  // namespace derpd::worker
