// /debug/ (PROTOCOL.md §7.2): derper's access rule (tsweb.AllowDebugAccess),
// the pages' responses against the captured derper ones, and /debug/vars
// holding the same metrics as /debug/varz.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/proto/http/http.hpp"
#include "http_handlers.hpp"
#include "server.hpp"
#include "support/vectors.hpp"

namespace derpd::worker {
namespace {

const char* kDebugCsp =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; "
    "block-all-mixed-content; object-src 'none'; style-src 'self' 'unsafe-inline'";

Ip16 ip(const char* text) {
  auto p = parseIp16(text);
  EXPECT_TRUE(p.has_value()) << text;
  return p.value_or(Ip16{});
}

http::RequestHead request(const std::string& target, const std::string& method = "GET",
                          std::vector<http::Header> headers = {}) {
  http::RequestHead req;
  req.method = method;
  req.target = target;
  auto q = target.find('?');
  req.path = target.substr(0, q);
  req.query = q == std::string::npos ? "" : target.substr(q + 1);
  req.headers = std::move(headers);
  return req;
}

bool allowed(const char* peer, const http::RequestHead& req = request("/debug/"), const DebugAccess& a = {}) {
  return debugAllowed(req, ip(peer), a);
}

// ---------------------------------------------------------------------------
// The access rule

TEST(DebugAccessRule, Loopback) {
  EXPECT_TRUE(allowed("127.0.0.1"));
  EXPECT_TRUE(allowed("127.255.255.254"));
  EXPECT_TRUE(allowed("127.1.2.3"));
  EXPECT_TRUE(allowed("::1"));
  EXPECT_TRUE(allowed("::ffff:127.0.0.1"));  // IPv4-mapped counts as IPv4
  EXPECT_FALSE(allowed("126.255.255.255"));
  EXPECT_FALSE(allowed("128.0.0.1"));
  EXPECT_FALSE(allowed("::2"));
  EXPECT_FALSE(allowed("::127.0.0.1"));      // IPv4-compatible is IPv6, not loopback
  EXPECT_FALSE(allowed("0.0.0.0"));
  EXPECT_FALSE(allowed("::"));
  EXPECT_TRUE(isLoopbackIp(ip("127.0.0.1")));
  EXPECT_FALSE(isLoopbackIp(ip("100.64.0.1")));
}

TEST(DebugAccessRule, TailscaleIPv4RangeAndChromeOsHole) {
  // 100.64.0.0/10: both edges in, both neighbours out.
  EXPECT_TRUE(allowed("100.64.0.0"));
  EXPECT_TRUE(allowed("100.64.0.1"));
  EXPECT_TRUE(allowed("100.100.100.100"));
  EXPECT_TRUE(allowed("100.127.255.255"));
  EXPECT_FALSE(allowed("100.63.255.255"));
  EXPECT_FALSE(allowed("100.128.0.0"));
  // 100.115.92.0/23 (ChromeOS VMs) is carved out: edges and neighbours.
  EXPECT_TRUE(allowed("100.115.91.255"));
  EXPECT_FALSE(allowed("100.115.92.0"));
  EXPECT_FALSE(allowed("100.115.92.5"));
  EXPECT_FALSE(allowed("100.115.93.255"));
  EXPECT_TRUE(allowed("100.115.94.0"));
  // IPv4-mapped forms are the IPv4 addresses.
  EXPECT_TRUE(allowed("::ffff:100.64.0.1"));
  EXPECT_FALSE(allowed("::ffff:100.115.92.1"));
  EXPECT_FALSE(allowed("::ffff:100.128.0.0"));
  EXPECT_TRUE(isTailscaleIp(ip("100.101.102.103")));
  EXPECT_FALSE(isTailscaleIp(ip("127.0.0.1")));
}

TEST(DebugAccessRule, TailscaleIPv6Range) {
  EXPECT_TRUE(allowed("fd7a:115c:a1e0::"));
  EXPECT_TRUE(allowed("fd7a:115c:a1e0::1"));
  EXPECT_TRUE(allowed("fd7a:115c:a1e0:ab12:4843:cd96:6200:1"));
  EXPECT_TRUE(allowed("fd7a:115c:a1e0:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_TRUE(allowed("FD7A:115C:A1E0::53"));
  EXPECT_FALSE(allowed("fd7a:115c:a1df:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(allowed("fd7a:115c:a1e1::"));
  EXPECT_FALSE(allowed("fd7a:115c::1"));
  // IPv4 Tailscale addresses in other IPv6 forms are not Tailscale IPs (Go: Is4() false).
  EXPECT_FALSE(allowed("64:ff9b::100.64.0.1"));
  EXPECT_FALSE(allowed("::100.64.0.1"));
}

TEST(DebugAccessRule, PublicAddressesAreRefused) {
  for (const char* p : {"192.0.2.1", "8.8.8.8", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.1.1",
                        "2001:db8::1", "fe80::1", "fc00::1", "::ffff:192.0.2.1"}) {
    EXPECT_FALSE(allowed(p)) << p;
  }
}

TEST(DebugAccessRule, XForwardedForRefusesEvenLoopback) {
  auto xff = [](const char* v) { return request("/debug/", "GET", {{"X-Forwarded-For", v}}); };
  EXPECT_FALSE(allowed("127.0.0.1", xff("203.0.113.9")));
  EXPECT_FALSE(allowed("::1", xff("203.0.113.9")));
  EXPECT_FALSE(allowed("100.64.0.1", xff("127.0.0.1")));
  EXPECT_FALSE(allowed("fd7a:115c:a1e0::1", xff("fd7a:115c:a1e0::2")));
  EXPECT_FALSE(allowed("127.0.0.1", request("/debug/", "GET", {{"x-forwarded-for", "1.2.3.4"}})));
  // Go's r.Header.Get(...) != "": an empty value (the first of the
  // header's lines) does not count.
  EXPECT_TRUE(allowed("127.0.0.1", xff("")));
  EXPECT_TRUE(allowed("127.0.0.1", request("/debug/", "GET", {{"X-Forwarded-For", ""}, {"X-Forwarded-For", "1.2.3.4"}})));
  EXPECT_FALSE(allowed("127.0.0.1", request("/debug/", "GET", {{"X-Forwarded-For", "1.2.3.4"}, {"X-Forwarded-For", ""}})));
}

TEST(DebugAccessRule, DebugKey) {
  DebugAccess a;
  a.keyDigest = debugKeyDigest("  s3cret-key\n");  // trimmed, as derper trims the file
  ASSERT_TRUE(a.keyDigest.has_value());
  const std::vector<http::Header> proxied = {{"X-Forwarded-For", "203.0.113.9"}};
  // The right key wins over everything else: a public peer behind a proxy.
  EXPECT_TRUE(allowed("192.0.2.1", request("/debug/vars?debugkey=s3cret-key", "GET", proxied), a));
  EXPECT_TRUE(allowed("192.0.2.1", request("/debug/?x=1&debugkey=s3cret-key", "GET"), a));
  // Wrong, missing, empty, prefix, longer, differently cased: refused.
  for (const char* t : {"/debug/vars?debugkey=wrong", "/debug/vars", "/debug/vars?debugkey=",
                        "/debug/vars?debugkey=s3cret", "/debug/vars?debugkey=s3cret-key2",
                        "/debug/vars?debugkey=S3CRET-KEY", "/debug/vars?debugkey=%20s3cret-key",
                        "/debug/vars?debugkey=s3cret-key%0A", "/debug/vars?DebugKey=s3cret-key"}) {
    EXPECT_FALSE(allowed("192.0.2.1", request(t, "GET", proxied), a)) << t;
  }
  // GET only (derper: r.Method != "GET" -> no key access).
  EXPECT_FALSE(allowed("192.0.2.1", request("/debug/vars?debugkey=s3cret-key", "HEAD"), a));
  EXPECT_FALSE(allowed("192.0.2.1", request("/debug/vars?debugkey=s3cret-key", "POST"), a));
  // Go's r.FormValue: the first valid pair; bad pairs skipped.
  EXPECT_FALSE(allowed("192.0.2.1", request("/debug/?debugkey=wrong&debugkey=s3cret-key"), a));
  EXPECT_TRUE(allowed("192.0.2.1", request("/debug/?debugkey=s3cret-key&debugkey=wrong"), a));
  EXPECT_TRUE(allowed("192.0.2.1", request("/debug/?a=1;b=2&debugkey=s3cret-key"), a));
  EXPECT_TRUE(allowed("192.0.2.1", request("/debug/?debugkey=%zz&debugkey=s3cret-key"), a));
  // The query is URL-decoded before comparing.
  DebugAccess spaced;
  spaced.keyDigest = debugKeyDigest("a b+c/d");
  EXPECT_TRUE(allowed("192.0.2.1", request("/debug/?debugkey=a+b%2Bc%2Fd"), spaced));
  EXPECT_FALSE(allowed("192.0.2.1", request("/debug/?debugkey=a+b+c%2Fd"), spaced));
  // Without a key configured, no ?debugkey= opens anything.
  EXPECT_FALSE(allowed("192.0.2.1", request("/debug/?debugkey=s3cret-key"), DebugAccess{}));
  EXPECT_FALSE(allowed("192.0.2.1", request("/debug/?debugkey="), DebugAccess{}));
  // A wrong key does not close what the address allows.
  EXPECT_TRUE(allowed("127.0.0.1", request("/debug/?debugkey=wrong"), a));
}

TEST(DebugAccessRule, AllowDebugIpIsOneAddress) {
  DebugAccess a;
  a.allowIp = parseIp16("192.0.2.7");
  ASSERT_TRUE(a.allowIp.has_value());
  EXPECT_TRUE(allowed("192.0.2.7", request("/debug/"), a));
  EXPECT_TRUE(allowed("::ffff:192.0.2.7", request("/debug/"), a));
  EXPECT_FALSE(allowed("192.0.2.8", request("/debug/"), a));
  EXPECT_FALSE(allowed("192.0.2.6", request("/debug/"), a));
  // X-Forwarded-For is checked first.
  EXPECT_FALSE(allowed("192.0.2.7", request("/debug/", "GET", {{"X-Forwarded-For", "192.0.2.7"}}), a));
  DebugAccess v6;
  v6.allowIp = parseIp16("2001:db8::7");
  EXPECT_TRUE(allowed("2001:0DB8:0:0:0:0:0:7", request("/debug/"), v6));
  EXPECT_FALSE(allowed("2001:db8::8", request("/debug/"), v6));
  // derper takes exactly one address: lists, prefixes, zones, padding do not parse.
  for (const char* bad : {"", "192.0.2.0/24", "192.0.2.7,192.0.2.8", "192.0.2.7 192.0.2.8", " 192.0.2.7",
                          "192.0.2.7 ", "fe80::1%eth0", "[::1]", "localhost", "192.0.2"}) {
    EXPECT_FALSE(parseIp16(bad).has_value()) << "'" << bad << "'";
  }
}

TEST(DebugAccessRule, KeyFileTrimmingIsGoBytesTrimSpace) {
  EXPECT_EQ(trimGoSpace(" \t\r\n\v\fkey \n"), "key");
  EXPECT_EQ(trimGoSpace("\xc2\xa0key\xe3\x80\x80"), "key");          // U+00A0, U+3000
  EXPECT_EQ(trimGoSpace("\xe2\x80\x83k e y\xc2\x85"), "k e y");      // U+2003, U+0085
  EXPECT_EQ(trimGoSpace("key\xc2"), "key\xc2");                      // invalid UTF-8 stays
  EXPECT_EQ(trimGoSpace("\xe2\x80\x8bkey"), "\xe2\x80\x8bkey");      // U+200B is not White_Space
  EXPECT_EQ(trimGoSpace(""), "");
  EXPECT_EQ(trimGoSpace(" \n\xc2\xa0 "), "");
  EXPECT_FALSE(debugKeyDigest("").has_value());
  EXPECT_FALSE(debugKeyDigest(" \r\n\t").has_value());
  EXPECT_EQ(debugKeyDigest("\tk\r\n"), debugKeyDigest("k"));
  EXPECT_NE(debugKeyDigest("k"), debugKeyDigest("K"));
}

// ---------------------------------------------------------------------------
// The pages

HttpContext allowedContext() {
  HttpContext ctx;
  ctx.peerIp = "127.0.0.1";
  ctx.peerIp16 = ip("127.0.0.1");
  ctx.nowUnix = 1790000000;
  ctx.varz = [] { return std::string("# TYPE derp_accepts counter\nderp_accepts 3\n"); };
  ctx.vars = [] { return std::string("{\n\"derp\": {\"accepts\": 3}\n}\n"); };
  ctx.check = [] { return std::vector<std::string>{}; };
  ctx.debugInfo = [] {
    DebugInfo i;
    i.uptimeSec = 100;
    i.version = "0.1.0-abc";
    i.machine = "vm";
    i.tlsHostname = "derp.example.com";
    i.meshKey = true;
    return i;
  };
  return ctx;
}

struct Parsed {
  std::string head;  // status line and headers, CRLFs kept, without the blank line
  std::string body;
  std::vector<std::string> lines;  // head lines
};

Parsed split(const std::string& response) {
  Parsed p;
  auto e = response.find("\r\n\r\n");
  EXPECT_NE(e, std::string::npos);
  p.head = response.substr(0, e);
  p.body = response.substr(e + 4);
  size_t pos = 0;
  while (pos <= p.head.size()) {
    auto n = p.head.find("\r\n", pos);
    if (n == std::string::npos) n = p.head.size();
    p.lines.push_back(p.head.substr(pos, n - pos));
    pos = n + 2;
  }
  return p;
}

// The head lines, with the values of Date and Content-Length masked and
// Transfer-Encoding (derper chunks bodies over 2 KiB) left out.
std::vector<std::string> maskedHead(const std::string& response) {
  std::vector<std::string> out;
  for (auto& l : split(response).lines) {
    if (l.rfind("Date: ", 0) == 0) {
      out.push_back("Date: <date>");
    } else if (l.rfind("Content-Length: ", 0) == 0 || l.rfind("Transfer-Encoding: ", 0) == 0) {
      out.push_back("<length>");
    } else {
      out.push_back(l);
    }
  }
  return out;
}

HttpAction get(const std::string& target, const HttpContext& ctx, const std::string& method = "GET",
               std::vector<http::Header> headers = {}) {
  return handleHttpRequest(request(target, method, std::move(headers)), ctx);
}

TEST(DebugPages, IndexHasDerpersHeadersAndShape) {
  HttpAction a = get("/debug/", allowedContext());
  ASSERT_EQ(a.kind, HttpAction::Kind::Respond);
  std::string want = test::readVectorFile("http/debug_index.response");
  // Same headers in the same order (derper's index has the plain browser
  // CSP, not the debug one, and a sniffed Content-Type).
  EXPECT_EQ(maskedHead(a.response), maskedHead(want));
  Parsed got = split(a.response);
  EXPECT_NE(a.response.find("\r\nContent-Length: " + std::to_string(got.body.size()) + "\r\n"), std::string::npos);
  EXPECT_EQ(got.body,
            "<html><body><h1>derpd debug</h1><ul>"
            "<li><b>Uptime:</b> 1m40s</li>"
            "<li><b>Version:</b> 0.1.0-abc</li>"
            "<li><b>Machine:</b> vm</li>"
            "<li><b>TLS hostname:</b> derp.example.com</li>"
            "<li><b>Mesh key:</b> true</li>"
            "<li><a href=\"/debug/vars\">/debug/vars</a> (Metrics (JSON))</li>"
            "<li><a href=\"/debug/varz\">/debug/varz</a> (Metrics (Prometheus))</li>"
            "<li><a href=\"/debug/check\">/debug/check</a> (Consistency check)</li>");
  // derper's body has the same key/value items in the same order, format
  // and escaping (only the values and the h1 name differ).
  std::string derperBody = split(want).body;
  for (const char* item : {"<html><body><h1>derper debug</h1><ul><li><b>Uptime:</b> 1m40s</li><li><b>Version:</b> ",
                           "</li><li><b>Machine:</b> ", "</li><li><b>TLS hostname:</b> derp.tailscale.com</li>"
                           "<li><b>Mesh key:</b> true</li>",
                           "<li><a href=\"/debug/varz\">/debug/varz</a> (Metrics (Prometheus))</li>",
                           "<li><a href=\"/debug/check\">/debug/check</a> (Consistency check)</li>"}) {
    EXPECT_NE(derperBody.find(item), std::string::npos) << item;
  }
  // The values are HTML-escaped.
  HttpContext ctx = allowedContext();
  ctx.debugInfo = [] {
    DebugInfo i;
    i.tlsHostname = "<b>&\"'";
    return i;
  };
  EXPECT_NE(get("/debug/", ctx).response.find("<li><b>TLS hostname:</b> &lt;b&gt;&amp;&#34;&#39;</li>"
                                              "<li><b>Mesh key:</b> false</li>"),
            std::string::npos);
}

TEST(DebugPages, VarzHasDerpersHeaders) {
  HttpAction a = get("/debug/varz", allowedContext());
  std::vector<std::string> want = maskedHead(test::readVectorFile("http/debug_varz.response"));
  std::vector<std::string> got = maskedHead(a.response);
  // derper: Content-Type sniffed (after Date), then chunked; here after Content-Length.
  EXPECT_EQ(got, (std::vector<std::string>{want[0], want[1], want[2], want[3], want[4], "Date: <date>",
                                           "<length>", "Content-Type: text/plain; charset=utf-8"}));
  EXPECT_EQ(want[6], "Content-Type: text/plain; charset=utf-8");
  EXPECT_EQ(split(a.response).body, "# TYPE derp_accepts counter\nderp_accepts 3\n");
}

TEST(DebugPages, VarsIsJsonWithDerpersHeaders) {
  HttpAction a = get("/debug/vars", allowedContext());
  std::vector<std::string> want = maskedHead(test::readVectorFile("http/debug_vars.response"));
  std::vector<std::string> got = maskedHead(a.response);
  EXPECT_EQ(got, want);
  EXPECT_EQ(split(a.response).body, "{\n\"derp\": {\"accepts\": 3}\n}\n");
  EXPECT_EQ(got[2], "Content-Type: application/json; charset=utf-8");
}

TEST(DebugPages, CheckFailureIs500WithOneErrorPerLine) {
  HttpContext ctx = allowedContext();
  ctx.check = [] { return std::vector<std::string>{"current_connections = 3 != 2 in the registry", "key x: y"}; };
  HttpAction a = get("/debug/check", ctx);
  Parsed p = split(a.response);
  EXPECT_EQ(p.lines[0], "HTTP/1.1 500 Internal Server Error");
  EXPECT_EQ(p.lines[1], std::string("Content-Security-Policy: ") + kDebugCsp);
  EXPECT_EQ(p.lines[2], "Content-Type: text/plain; charset=utf-8");
  EXPECT_EQ(p.lines[3], "Strict-Transport-Security: max-age=63072000; includeSubDomains");
  EXPECT_EQ(p.lines[4], "X-Content-Type-Options: nosniff");
  EXPECT_EQ(p.lines[5], "X-Frame-Options: DENY");
  EXPECT_EQ(p.body, "current_connections = 3 != 2 in the registry\nkey x: y\n");
  ctx.check = [] { return std::vector<std::string>{}; };
  EXPECT_EQ(split(get("/debug/check", ctx).response).body, "derp.Server ConsistencyCheck okay");
}

TEST(DebugPages, DeniedPagesAnd403Text) {
  HttpContext ctx = allowedContext();
  ctx.peerIp = "192.0.2.1";
  ctx.peerIp16 = ip("192.0.2.1");
  int calls = 0;
  ctx.varz = ctx.vars = [&] { ++calls; return std::string("x"); };
  ctx.check = [&] { ++calls; return std::vector<std::string>{}; };
  for (const char* t : {"/debug/", "/debug/varz", "/debug/vars", "/debug/check", "/debug/pprof/", "/debug/gc",
                        "/debug/nope"}) {
    HttpAction a = get(t, ctx);
    Parsed p = split(a.response);
    EXPECT_EQ(p.lines[0], "HTTP/1.1 403 Forbidden") << t;
    EXPECT_EQ(p.body, "debug access denied\n") << t;
    EXPECT_EQ(a.response.find("Content-Security-Policy"), std::string::npos) << t;
  }
  EXPECT_EQ(calls, 0) << "a refused request must not run the page";
  // -dev: derper's tsweb.Protected (every page, not the index nor unknown
  // paths) names the variable that would open it.
  ctx.dev = true;
  for (const char* t : {"/debug/varz", "/debug/vars", "/debug/check", "/debug/pprof/goroutine", "/debug/traffic",
                        "/debug/set-mutex-profile-fraction", "/debug/gc"}) {
    EXPECT_EQ(split(get(t, ctx).response).body,
              "debug access denied; to permit access, set TS_ALLOW_DEBUG_IP=192.0.2.1\n")
        << t;
  }
  EXPECT_EQ(split(get("/debug/", ctx).response).body, "debug access denied\n");
  EXPECT_EQ(split(get("/debug/nope", ctx).response).body, "debug access denied\n");
}

TEST(DebugPages, GoRuntimePagesAndUnknownPathsAreNotFound) {
  HttpContext ctx = allowedContext();
  for (const char* t : {"/debug/pprof/", "/debug/pprof/profile", "/debug/pprof/goroutine?debug=2", "/debug/gc",
                        "/debug/traffic", "/debug/set-mutex-profile-fraction?rate=1", "/debug/nope",
                        "/debug/vars/", "/debug/varz/x"}) {
    Parsed p = split(get(t, ctx).response);
    EXPECT_EQ(p.lines[0], "HTTP/1.1 404 Not Found") << t;
    EXPECT_EQ(p.body, "404 page not found\n") << t;
  }
}

TEST(DebugPages, DebugRedirectsToSlash) {
  HttpContext ctx;  // no access needed: Go's mux redirects before the debug handler
  ctx.peerIp16 = ip("192.0.2.1");
  Parsed g = split(get("/debug", ctx).response);
  EXPECT_EQ(g.lines[0], "HTTP/1.1 301 Moved Permanently");
  EXPECT_EQ(g.lines[1], "Content-Type: text/html; charset=utf-8");
  EXPECT_EQ(g.lines[2], "Location: /debug/");
  EXPECT_EQ(g.body, "<a href=\"/debug/\">Moved Permanently</a>.\n\n");
  Parsed q = split(get("/debug?debugkey=a&b=<", ctx).response);
  EXPECT_EQ(q.lines[2], "Location: /debug/?debugkey=a&b=<");
  EXPECT_EQ(q.body, "<a href=\"/debug/?debugkey=a&amp;b=&lt;\">Moved Permanently</a>.\n\n");
  Parsed h = split(get("/debug", ctx, "HEAD").response);
  EXPECT_EQ(h.lines, (std::vector<std::string>{"HTTP/1.1 301 Moved Permanently", "Content-Type: text/html; charset=utf-8",
                                               "Location: /debug/", h.lines[3]}));
  EXPECT_EQ(h.body, "");
  Parsed post = split(get("/debug", ctx, "POST").response);
  EXPECT_EQ(post.lines[1], "Location: /debug/");
  EXPECT_EQ(post.lines[3], "Content-Length: 0");
  // Not "/debugger" (the home page, as Go's mux does).
  EXPECT_EQ(split(get("/debugger", ctx).response).lines[0], "HTTP/1.1 200 OK");
}

TEST(DebugPages, HomePageLinkFollowsTheRule) {
  HttpContext ctx = allowedContext();
  const std::string link = "<p>Debug info at <a href='/debug/'>/debug/</a>.</p>\n";
  EXPECT_NE(get("/", ctx).response.find(link), std::string::npos);
  ctx.peerIp16 = ip("192.0.2.1");
  EXPECT_EQ(get("/", ctx).response.find(link), std::string::npos);
  DebugAccess a;
  a.keyDigest = debugKeyDigest("k");
  ctx.debugAccess = &a;
  EXPECT_NE(get("/?debugkey=k", ctx).response.find(link), std::string::npos);
  EXPECT_EQ(get("/?debugkey=j", ctx).response.find(link), std::string::npos);
}

TEST(DebugPages, Port80HandsDebugToTheMainMux) {
  HttpContext ctx = allowedContext();
  ctx.port80 = true;
  EXPECT_EQ(split(get("/debug/vars", ctx).response).body, "{\n\"derp\": {\"accepts\": 3}\n}\n");
  EXPECT_EQ(split(get("/debug", ctx).response).lines[0], "HTTP/1.1 301 Moved Permanently");
  // tsweb.Port80Handler: any RequestURI starting "/debug" goes to the main
  // mux, where "/debugx" is the home page.
  Parsed other = split(get("/debugx", ctx).response);
  EXPECT_EQ(other.lines[0], "HTTP/1.1 200 OK");
  EXPECT_NE(other.body.find("This is a <a href=\"https://tailscale.com/\">Tailscale</a> DERP server."),
            std::string::npos);
  ctx.peerIp16 = ip("192.0.2.1");
  EXPECT_EQ(split(get("/debug/vars", ctx).response).lines[0], "HTTP/1.1 403 Forbidden");
  EXPECT_EQ(split(get("/", ctx).response).lines[0], "HTTP/1.1 302 Found");
}

TEST(DebugPages, GoDurationFormat) {
  EXPECT_EQ(goDurationSeconds(0), "0s");
  EXPECT_EQ(goDurationSeconds(1), "1s");
  EXPECT_EQ(goDurationSeconds(59), "59s");
  EXPECT_EQ(goDurationSeconds(60), "1m0s");
  EXPECT_EQ(goDurationSeconds(100), "1m40s");
  EXPECT_EQ(goDurationSeconds(3599), "59m59s");
  EXPECT_EQ(goDurationSeconds(3600), "1h0m0s");
  EXPECT_EQ(goDurationSeconds(93784), "26h3m4s");
}

// ---------------------------------------------------------------------------
// /debug/vars holds exactly /debug/varz's metrics (Server)

// Prometheus text -> "name{value}" (label name dropped) -> value.
std::map<std::string, double> promValues(const std::string& text) {
  std::map<std::string, double> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    if (line.empty() || line[0] == '#') continue;
    auto sp = line.rfind(' ');
    std::string name = line.substr(0, sp);
    if (auto b = name.find('{'); b != std::string::npos) {
      auto q = name.find('"', b);
      name = name.substr(0, b) + "{" + name.substr(q + 1, name.size() - q - 3) + "}";
    }
    out[name] = std::stod(line.substr(sp + 1));
  }
  return out;
}

// derper's varz naming applied to the vars JSON: gauge_/counter_ stripped
// from each part, parts joined by "_", label maps' keys as {value}. "derp"
// and "tls_listener" are expvar sets (maps of metrics), other objects are
// label maps.
std::map<std::string, double> varsValues(const nlohmann::json& j) {
  auto strip = [](std::string s) {
    for (const char* p : {"gauge_", "counter_"}) {
      if (s.rfind(p, 0) == 0) return s.substr(std::string(p).size());
    }
    return s;
  };
  std::map<std::string, double> out;
  auto add = [&](const std::string& name, const nlohmann::json& v) {
    if (v.is_object()) {
      for (auto& [k, x] : v.items()) out[name + "{" + k + "}"] = x.get<double>();
    } else {
      out[name] = v.get<double>();
    }
  };
  for (auto& [k, v] : j.items()) {
    if (k == "derp" || k == "tls_listener") {
      for (auto& [k2, v2] : v.items()) add(k + "_" + strip(k2), v2);
    } else {
      add(strip(k), v);
    }
  }
  return out;
}

TEST(DebugVars, SameMetricsAsVarzInDerpersShape) {
  ServerConfig cfg;
  cfg.privateKey = crypto::NodePrivate::generate();
  Server server(std::move(cfg));
  server.setPeerMetrics({ipc::RoleMetrics{ipc::Role::StunWorker,
                                          {{"stun_requests", "type=\"success\"", 5, ipc::MetricType::Counter},
                                           {"stun_requests", "type=\"not_stun\"", 2, ipc::MetricType::Counter},
                                           {"derpd_stun_sockets", "", 2, ipc::MetricType::Gauge},
                                           {"derp_accepts", "", 99, ipc::MetricType::Counter}}}});
  std::string body = server.vars();
  ASSERT_TRUE(nlohmann::json::accept(body)) << body;
  auto j = nlohmann::json::parse(body);
  // derper's raw names (tests/vectors/http/debug_vars.body).
  EXPECT_EQ(j["derp"]["gauge_current_connections"], 0);
  EXPECT_EQ(j["derp"]["accepts"], 0);
  EXPECT_EQ(j["derp"]["counter_packets_dropped_reason"].size(), 7u);
  EXPECT_EQ(j["derp"]["counter_packets_dropped_reason"]["unknown_dest"], 0);
  EXPECT_EQ(j["derp"]["counter_packets_received_kind"]["disco"], 0);
  EXPECT_TRUE(j.contains("derp_websocket_accepts"));
  EXPECT_TRUE(j.contains("counter_uptime_sec"));
  EXPECT_TRUE(j.contains("process_start_unix_time"));
  EXPECT_FALSE(j.contains("tls_listener")) << "plain HTTP: no TLS metrics, as in varz";
  EXPECT_EQ(j["counter_stun_requests"]["success"], 5);
  EXPECT_EQ(j["gauge_derpd_stun_sockets"], 2);
  // Every key derper's capture has in the "derp" set that derp-worker also
  // has in varz is spelled the same.
  auto derper = nlohmann::json::parse(test::readVectorFile("http/debug_vars.body"));
  for (auto& [k, v] : j["derp"].items()) {
    EXPECT_TRUE(derper["derp"].contains(k)) << "derp." << k << " is not a derper name";
  }
  // varz and vars: the same metrics and values (the fd count may move
  // between the two calls, and uptime may tick).
  auto fromVars = varsValues(j);
  auto fromVarz = promValues(server.varz());
  std::set<std::string> a, b;
  for (auto& [k, v] : fromVars) a.insert(k);
  for (auto& [k, v] : fromVarz) b.insert(k);
  EXPECT_EQ(a, b);
  for (auto& [k, v] : fromVarz) {
    if (k.find("file_descriptors") != std::string::npos || k.find("open_fds") != std::string::npos ||
        k.find("uptime") != std::string::npos || k.find("memstats") != std::string::npos ||
        k.find("resident") != std::string::npos) {
      continue;
    }
    EXPECT_EQ(fromVars[k], v) << k;
  }
  // The layout of expvar's handler: one top-level var per line.
  EXPECT_EQ(body.rfind("{\n\"counter_derpd_accept_errors\": {", 0), 0u) << body.substr(0, 80);
  EXPECT_EQ(body.substr(body.size() - 3), "\n}\n");
  EXPECT_NE(body.find("\"counter_stun_requests\": {\"not_stun\": 2, \"success\": 5},\n"), std::string::npos);
}

}  // namespace
}  // namespace derpd::worker
