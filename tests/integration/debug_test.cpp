// /debug/ of the real derp-worker (PROTOCOL.md §7.2): the index, /debug/vars
// (derper's expvar JSON), /debug/check (with clients connected, and while
// loops relay and clients come and go), the /debug redirect, the debug key
// (--debug-key-file, $TS_DEBUG_KEY_PATH, read before the sandbox), the
// X-Forwarded-For refusal, and, as root in a network namespace of the
// test's own, peers that are not loopback: Tailscale, ChromeOS, public and
// $TS_ALLOW_DEBUG_IP addresses.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "common/proc/sandbox.hpp"
#include "common/util/version.hpp"
#include "support/harness.hpp"
#include "support/vectors.hpp"

namespace derpd::test {
namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

const char* kBrowserCsp =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; "
    "block-all-mixed-content; object-src 'none'";
const char* kDebugCsp =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; "
    "block-all-mixed-content; object-src 'none'; style-src 'self' 'unsafe-inline'";
const char* kDenied = "debug access denied\n";

// One request with "Connection: close" to 127.0.0.1:port; the parsed response.
Result<HttpResponse> request(uint16_t port, const std::string& method, const std::string& target,
                             const Headers& headers = {}) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  req += "\r\n";
  RawResponse raw = rawHttp(port, req);
  if (!raw.error.empty()) return makeError(raw.error);
  auto r = parseHttpResponse(raw.data, method == "HEAD");
  if (!r) return makeError("no complete response in '" + raw.data.substr(0, 300) + "'");
  return std::move(*r);
}

Result<nlohmann::json> vars(const WorkerProcess& w) {
  auto r = httpGet(w, "/debug/vars");
  if (!r.ok()) return makeError(r.error());
  if (r->status != 200) return makeError("status " + r->statusLine);
  if (!nlohmann::json::accept(r->body)) return makeError("not JSON: " + r->body.substr(0, 300));
  return nlohmann::json::parse(r->body);
}

std::optional<int64_t> currentConnections(const WorkerProcess& w) {
  auto j = vars(w);
  if (!j.ok() || !(*j).contains("derp")) return std::nullopt;
  return (*j)["derp"].value("gauge_current_connections", int64_t(-1));
}

class DebugTest : public WorkerTest {
 protected:
  // A key file "  <key>\n" (derper trims it).
  std::string writeDebugKey(const std::string& key, const std::string& name = "debug.key") {
    std::string path = tmp().file(name);
    EXPECT_TRUE(writeFile(path, "  " + key + "\n", 0600));
    return path;
  }
};

// The index: derper's shape and headers, this server's values, links to the
// pages that exist.
TEST_F(DebugTest, IndexPage) {
  WorkerConfig cfg;
  cfg.mesh = true;
  cfg.extra = {"-hostname", "derp.example.<test>"};
  WorkerProcess* w = startWorker(cfg);
  ASSERT_NE(w, nullptr);
  auto r = httpGet(*w, "/debug/");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 200) << r->statusLine;
  EXPECT_EQ(r->header("Content-Security-Policy").value_or(""), kBrowserCsp);  // derper: AddBrowserHeaders
  EXPECT_EQ(r->header("Content-Type").value_or(""), "text/html; charset=utf-8");
  EXPECT_EQ(r->header("X-Frame-Options").value_or(""), "DENY");
  EXPECT_EQ(r->header("X-Content-Type-Options").value_or(""), "nosniff");
  EXPECT_EQ(r->header("Strict-Transport-Security").value_or(""), "max-age=63072000; includeSubDomains");
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  std::regex shape(
      "<html><body><h1>derpd debug</h1><ul>"
      "<li><b>Uptime:</b> ([0-9]+h)?([0-9]+m)?[0-9]+s</li>"
      "<li><b>Version:</b> ([^<]*)</li>"
      "<li><b>Machine:</b> ([^<]*)</li>"
      "<li><b>TLS hostname:</b> derp\\.example\\.&lt;test&gt;</li>"
      "<li><b>Mesh key:</b> true</li>"
      "<li><a href=\"/debug/vars\">/debug/vars</a> \\(Metrics \\(JSON\\)\\)</li>"
      "<li><a href=\"/debug/varz\">/debug/varz</a> \\(Metrics \\(Prometheus\\)\\)</li>"
      "<li><a href=\"/debug/check\">/debug/check</a> \\(Consistency check\\)</li>");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r->body, m, shape)) << r->body;
  EXPECT_EQ(m[3].str(), std::string(DERPD_VERSION "-") + gitRev());
  EXPECT_EQ(m[4].str(), host);
  // The linked pages answer; derper's Go-runtime pages do not exist here.
  for (const char* page : {"/debug/vars", "/debug/varz", "/debug/check"}) {
    auto p = httpGet(*w, page);
    ASSERT_TRUE(p.ok()) << p.error();
    EXPECT_EQ(p->status, 200) << page;
    EXPECT_EQ(p->header("Content-Security-Policy").value_or(""), kDebugCsp) << page;
  }
  for (const char* page : {"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/gc", "/debug/traffic",
                           "/debug/set-mutex-profile-fraction?rate=1", "/debug/nope"}) {
    auto p = httpGet(*w, page);
    ASSERT_TRUE(p.ok()) << p.error();
    EXPECT_EQ(p->status, 404) << page;
    EXPECT_EQ(p->body, "404 page not found\n") << page;
  }
  // Without a mesh key the index says so.
  WorkerProcess* plain = startWorker({});
  ASSERT_NE(plain, nullptr);
  auto r2 = httpGet(*plain, "/debug/");
  ASSERT_TRUE(r2.ok()) << r2.error();
  EXPECT_NE(r2->body.find("<li><b>TLS hostname:</b> derp.tailscale.com</li><li><b>Mesh key:</b> false</li>"),
            std::string::npos)
      << r2->body;
}

// /debug/vars: derper's expvar JSON (raw names, "derp" set, label maps as
// nested objects); derp.gauge_current_connections follows the clients.
TEST_F(DebugTest, VarsCountsConnectedClients) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  auto r = httpGet(*w, "/debug/vars");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("Content-Type").value_or(""), "application/json; charset=utf-8");
  EXPECT_EQ(r->header("Content-Security-Policy").value_or(""), kDebugCsp);
  EXPECT_EQ(currentConnections(*w), 0);
  {
    DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
    DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
    DERPD_ASSERT_CONNECT(c, dial(*w, keys::carol()));
    // A Pong comes after the server registered the client.
    for (auto* cl : {a.get(), b.get(), c.get()}) ASSERT_TRUE(pingPong(*cl, {1, 2, 3, 4, 5, 6, 7, 8}));
    ASSERT_TRUE(exchange(*a, *b, patternBytes(300, 1)));
    auto j = vars(*w);
    ASSERT_TRUE(j.ok()) << j.error();
    const auto& derp = (*j)["derp"];
    EXPECT_EQ(derp["gauge_current_connections"], 3) << j->dump();
    EXPECT_EQ(derp["gauge_clients_local"], 3);
    EXPECT_EQ(derp["accepts"], 3);
    EXPECT_EQ(derp["packets_received"], 2);
    EXPECT_EQ(derp["packets_sent"], 2);
    EXPECT_EQ(derp["got_ping"], 3);
    EXPECT_EQ(derp["counter_packets_received_kind"]["other"], 2);
    EXPECT_EQ(derp["counter_packets_dropped_reason"].size(), 7u);
    EXPECT_TRUE((*j)["counter_uptime_sec"].is_number());
    EXPECT_TRUE((*j)["counter_derpd_conn_closes"].is_object());
    // The same figure as /debug/varz's.
    EXPECT_EQ(metric(*w, "derp_current_connections"), 3.0);
  }
  EXPECT_TRUE(waitFor([&] { return currentConnections(*w) == 0; }, kIoTimeout))
      << "derp.gauge_current_connections after the clients left: " << currentConnections(*w).value_or(-1);
}

// /debug/check: derper's okay response byte for byte with clients (one
// key twice: a duplicate set) connected.
TEST_F(DebugTest, CheckOkayWithClientsConnected) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  DERPD_ASSERT_CONNECT(c1, dial(*w, keys::carol()));
  DERPD_ASSERT_CONNECT(c2, dial(*w, keys::carol()));
  for (auto* cl : {a.get(), b.get(), c1.get(), c2.get()}) ASSERT_TRUE(pingPong(*cl, {8, 7, 6, 5, 4, 3, 2, 1}));
  ASSERT_TRUE(exchange(*a, *b, patternBytes(500, 2)));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_keys", [](double v) { return v == 1; }));
  auto got = rawHttp(w->port(), readVectorFile("http/debug_check.request"));
  ASSERT_TRUE(got.error.empty()) << got.error;
  EXPECT_TRUE(httpSameExceptDate(got.data, readVectorFile("http/debug_check.response")));
  EXPECT_FALSE(got.serverClosed) << "keep-alive, as derper";
}

// /debug/check is safe while the loops relay and clients (duplicates
// included) connect and leave: every answer is okay.
TEST_F(DebugTest, CheckStaysOkayWhileRelayingAndChurning) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  ASSERT_TRUE(exchange(*a, *b, patternBytes(100, 3)));
  std::atomic<bool> stop{false};
  std::atomic<int> exchanges{0}, churns{0};
  // Written by their thread only, read after the joins; `failed` (set after
  // the write) is what the main thread looks at meanwhile.
  std::string relayError, churnError;
  std::atomic<bool> failed{false};
  std::thread relay([&] {
    for (int i = 0; i < 100000 && !stop.load(); i++) {
      auto r = exchange(*a, *b, patternBytes(64 + size_t(i % 1000), uint8_t(i)));
      if (!r) {
        relayError = r.message();
        failed.store(true);
        return;
      }
      exchanges++;
    }
  });
  std::thread churn([&] {
    for (int i = 0; i < 100000 && !stop.load(); i++) {
      auto c1 = dial(*w, keys::carol());
      auto c2 = dial(*w, keys::carol());  // a duplicate of c1
      auto d = dial(*w, keys::fast());
      if (!c1.ok() || !c2.ok() || !d.ok()) {
        churnError = "dial: " + (c1.ok() ? std::string() : c1.error()) + (c2.ok() ? "" : c2.error()) +
                     (d.ok() ? "" : d.error());
        failed.store(true);
        return;
      }
      churns++;
    }
  });
  int checks = 0;
  std::string checkError;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (; checks < 10000 && std::chrono::steady_clock::now() < deadline; checks++) {
    if (checks >= 40 && exchanges.load() >= 20 && churns.load() >= 20) break;
    if (failed.load()) break;
    auto r = httpGet(*w, "/debug/check");
    if (!r.ok() || r->status != 200 || r->body != "derp.Server ConsistencyCheck okay") {
      checkError = r.ok() ? r->statusLine + "\n" + r->body : r.error();
      break;
    }
  }
  stop = true;
  relay.join();
  churn.join();
  EXPECT_TRUE(checkError.empty()) << "after " << checks << " checks: " << checkError;
  EXPECT_TRUE(relayError.empty()) << relayError;
  EXPECT_TRUE(churnError.empty()) << churnError;
  EXPECT_GE(checks, 40);
  EXPECT_GE(exchanges.load(), 20);
  EXPECT_GE(churns.load(), 20);
  // Quiet again: the gauges are back and the check still holds.
  EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 2; }));
  auto r = httpGet(*w, "/debug/check");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->body, "derp.Server ConsistencyCheck okay");
}

TEST_F(DebugTest, DebugRedirectsToSlash) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  auto r = request(w->port(), "GET", "/debug");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 301) << r->statusLine;
  EXPECT_EQ(r->header("Location").value_or(""), "/debug/");
  EXPECT_EQ(r->body, "<a href=\"/debug/\">Moved Permanently</a>.\n\n");
  auto q = request(w->port(), "GET", "/debug?debugkey=x");
  ASSERT_TRUE(q.ok()) << q.error();
  EXPECT_EQ(q->header("Location").value_or(""), "/debug/?debugkey=x");
  // Go's mux redirects before any access check.
  auto xff = request(w->port(), "GET", "/debug", {{"X-Forwarded-For", "203.0.113.9"}});
  ASSERT_TRUE(xff.ok()) << xff.error();
  EXPECT_EQ(xff->status, 301);
}

// Through a proxy (X-Forwarded-For) every debug page is refused, the way
// derper answers (tests/vectors/http/debug_forbidden_xff).
TEST_F(DebugTest, ForwardedForIsRefused) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  auto got = rawHttp(w->port(), readVectorFile("http/debug_forbidden_xff.request"));
  EXPECT_TRUE(httpSameExceptDate(got.data, readVectorFile("http/debug_forbidden_xff.response")));
  for (const char* page : {"/debug/", "/debug/vars", "/debug/varz", "/debug/check", "/debug/pprof/"}) {
    auto r = httpGet(*w, page, {{"X-Forwarded-For", "203.0.113.9"}});
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->status, 403) << page;
    EXPECT_EQ(r->body, kDenied) << page;
  }
  auto home = httpGet(*w, "/", {{"X-Forwarded-For", "203.0.113.9"}});
  ASSERT_TRUE(home.ok()) << home.error();
  EXPECT_EQ(home->body.find("/debug/"), std::string::npos) << "no debug link for a refused peer";
}

// --debug-key-file: the right ?debugkey= opens /debug/ even through a
// proxy; a wrong or missing one does not; GET only.
TEST_F(DebugTest, DebugKeyFile) {
  WorkerConfig cfg;
  cfg.extra = {"--debug-key-file", writeDebugKey("k3y-\xc3\xa9-42")};
  WorkerProcess* w = startWorker(cfg);
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->waitForLog("/debug/ key loaded from", Millis(100)));
  EXPECT_EQ(w->logText().find("k3y-"), std::string::npos) << "the key must not be logged";
  const Headers proxied = {{"X-Forwarded-For", "203.0.113.9"}};
  auto ok = request(w->port(), "GET", "/debug/vars?debugkey=k3y-%C3%A9-42", proxied);
  ASSERT_TRUE(ok.ok()) << ok.error();
  EXPECT_EQ(ok->status, 200) << ok->statusLine << "\n" << ok->body;
  EXPECT_TRUE(nlohmann::json::accept(ok->body));
  auto index = request(w->port(), "GET", "/debug/?debugkey=k3y-%C3%A9-42", proxied);
  ASSERT_TRUE(index.ok()) << index.error();
  EXPECT_EQ(index->status, 200);
  auto home = request(w->port(), "GET", "/?debugkey=k3y-%C3%A9-42", proxied);
  ASSERT_TRUE(home.ok()) << home.error();
  EXPECT_NE(home->body.find("<a href='/debug/'>"), std::string::npos);
  for (const char* target : {"/debug/vars?debugkey=wrong", "/debug/vars?debugkey=k3y-%C3%A9-4",
                             "/debug/vars?debugkey=", "/debug/vars", "/debug/check?debugkey=K3Y-%C3%A9-42"}) {
    auto r = request(w->port(), "GET", target, proxied);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->status, 403) << target;
    EXPECT_EQ(r->body, kDenied) << target;
  }
  auto head = request(w->port(), "HEAD", "/debug/vars?debugkey=k3y-%C3%A9-42", proxied);
  ASSERT_TRUE(head.ok()) << head.error();
  EXPECT_EQ(head->status, 403) << "derper accepts the key on GET only";
  // Loopback without a proxy still needs no key.
  auto local = request(w->port(), "GET", "/debug/vars?debugkey=wrong");
  ASSERT_TRUE(local.ok()) << local.error();
  EXPECT_EQ(local->status, 200);
}

// $TS_DEBUG_KEY_PATH is the default for --debug-key-file; an explicit
// empty --debug-key-file= turns it off.
TEST_F(DebugTest, DebugKeyFromEnvironment) {
  std::string key = writeDebugKey("env-key");
  ASSERT_EQ(::setenv("TS_DEBUG_KEY_PATH", key.c_str(), 1), 0);
  WorkerProcess* w = startWorker({});
  WorkerConfig off;
  off.extra = {"--debug-key-file="};
  WorkerProcess* w2 = startWorker(off);
  ::unsetenv("TS_DEBUG_KEY_PATH");
  ASSERT_NE(w, nullptr);
  ASSERT_NE(w2, nullptr);
  const Headers proxied = {{"X-Forwarded-For", "203.0.113.9"}};
  auto r = request(w->port(), "GET", "/debug/varz?debugkey=env-key", proxied);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 200);
  auto r2 = request(w2->port(), "GET", "/debug/varz?debugkey=env-key", proxied);
  ASSERT_TRUE(r2.ok()) << r2.error();
  EXPECT_EQ(r2->status, 403);
}

// An explicit key file that cannot be used stops the start with a clear
// message; from $TS_DEBUG_KEY_PATH it only turns key access off (derper
// would silently never match).
TEST_F(DebugTest, UnusableDebugKeyFile) {
  std::string empty = tmp().file("empty.key");
  ASSERT_TRUE(writeFile(empty, " \n\t\n", 0600));
  std::string missing = tmp().file("missing.key");
  for (const auto& [path, why] : {std::pair{missing, std::string("No such file or directory")},
                                  std::pair{empty, std::string("the file is empty")}}) {
    SCOPED_TRACE(path);
    WorkerProcess p;
    auto r = p.start({"-c", writeServerKeyFile(), "-a", "127.0.0.1:0", "--debug-key-file", path});
    EXPECT_FALSE(r.ok()) << "derp-worker started with an unusable --debug-key-file";
    EXPECT_TRUE(waitFor([&] { return !p.running(); }, kIoTimeout));
    EXPECT_EQ(p.exitStatus(), 1);
    EXPECT_NE(p.logText().find("--debug-key-file " + path + ": " + why), std::string::npos) << p.logText();
  }
  ASSERT_EQ(::setenv("TS_DEBUG_KEY_PATH", missing.c_str(), 1), 0);
  WorkerProcess* w = startWorker({});
  ::unsetenv("TS_DEBUG_KEY_PATH");
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->waitForLog("TS_DEBUG_KEY_PATH " + missing + ": No such file or directory; /debug/ key access is off",
                            Millis(100)))
      << w->logText();
}

// $TS_ALLOW_DEBUG_IP is one address (derper compares it with the peer's
// address as a string); a list or a prefix is named in a warning and ignored.
TEST_F(DebugTest, AllowDebugIpMustBeOneAddress) {
  for (const char* bad : {"192.0.2.7,192.0.2.8", "100.64.0.0/10"}) {
    SCOPED_TRACE(bad);
    ASSERT_EQ(::setenv("TS_ALLOW_DEBUG_IP", bad, 1), 0);
    WorkerProcess* w = startWorker({});
    ::unsetenv("TS_ALLOW_DEBUG_IP");
    ASSERT_NE(w, nullptr);
    EXPECT_TRUE(w->waitForLog(std::string("TS_ALLOW_DEBUG_IP=\"") + bad + "\" is not one IP address; ignored",
                              Millis(100)))
        << w->logText();
  }
}

// The key file is read before the sandbox: as root with --user nobody and
// --chroot (the file is unreachable from there), the key still works.
TEST_F(DebugTest, DebugKeyReadBeforeSandbox) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the sandbox (chroot, user drop) is only entered as root";
  std::string emptyDir = tmp().file("empty");
  ASSERT_TRUE(proc::prepareEmptyDir(emptyDir).ok());
  WorkerConfig cfg;
  cfg.extra = {"--debug-key-file", writeDebugKey("sandboxed-key"), "--user", "nobody"};
#ifndef DERPD_SANITIZED
  // LeakSanitizer reads /proc at exit, which the chroot hides: sanitizer
  // builds check the user drop alone.
  cfg.extra.insert(cfg.extra.end(), {"--chroot", emptyDir});
#endif
  WorkerProcess* w = startWorker(cfg);
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->waitForLog("sandbox: uid", Millis(100))) << w->logText();
  auto r = request(w->port(), "GET", "/debug/vars?debugkey=sandboxed-key", {{"X-Forwarded-For", "203.0.113.9"}});
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->status, 200) << r->body;
}

// ---------------------------------------------------------------------------
// Peers that are not loopback: a network namespace of the test's own, with
// the test addresses on its loopback device. derp-worker runs inside it
// (ip netns exec) on a dual-stack socket; the test's client sockets are
// created inside it and bound to each source address in turn.

std::string ipBinary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

// Runs a shell command line; its exit status, output appended to *out.
int shell(const std::string& cmd, std::string* out) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  for (int i = 0; i < 1000; i++) {
    size_t n = std::fread(buf, 1, sizeof buf, p);
    if (n == 0) break;
    out->append(buf, n);
  }
  int st = ::pclose(p);
  EXPECT_TRUE(noSanitizerReport(*out, cmd));
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

class Netns {
 public:
  explicit Netns(std::string name) : name_(std::move(name)) {}
  ~Netns() {
    if (created_) {
      std::string out;
      shell(ip_ + " netns del " + name_, &out);
    }
  }
  // Creates the namespace with `addrs` on its loopback device; false (with
  // the reason) when this host cannot.
  bool create(const std::vector<std::string>& addrs, std::string* why) {
    ip_ = ipBinary();
    if (ip_.empty()) {
      *why = "no ip(8) binary";
      return false;
    }
    std::string out;
    if (shell(ip_ + " netns add " + name_, &out) != 0) {
      *why = "ip netns add: " + out;
      return false;
    }
    created_ = true;
    if (shell(ip_ + " -n " + name_ + " link set lo up", &out) != 0) {
      *why = "link set lo up: " + out;
      return false;
    }
    for (const auto& a : addrs) {
      bool v6 = a.find(':') != std::string::npos;
      std::string cmd = ip_ + " -n " + name_ + (v6 ? " -6" : "") + " addr add " + a + (v6 ? "/128 dev lo nodad" : "/32 dev lo");
      if (shell(cmd, &out) != 0) {
        *why = cmd + ": " + out;
        return false;
      }
    }
    return true;
  }
  const std::string& name() const { return name_; }
  const std::string& ip() const { return ip_; }

  // A TCP socket of this namespace bound to `src` (a thread enters the
  // namespace to create it; a socket keeps the namespace it was made in).
  int socketFrom(const std::string& src, std::string* why) const {
    int fd = -1;
    std::thread t([&] {
      int ns = ::open(("/var/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
        *why = std::string("setns: ") + std::strerror(errno);
        if (ns >= 0) ::close(ns);
        return;
      }
      ::close(ns);
      sockaddr_storage ss{};
      socklen_t len = 0;
      if (!sockaddrOf(src, 0, &ss, &len)) {
        *why = "bad address " + src;
        return;
      }
      fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        *why = "bind " + src + ": " + std::strerror(errno);
        ::close(fd);
        fd = -1;
      }
    });
    t.join();
    return fd;
  }

  static bool sockaddrOf(const std::string& ip, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
    auto* a4 = reinterpret_cast<sockaddr_in*>(ss);
    auto* a6 = reinterpret_cast<sockaddr_in6*>(ss);
    if (::inet_pton(AF_INET, ip.c_str(), &a4->sin_addr) == 1) {
      a4->sin_family = AF_INET;
      a4->sin_port = htons(port);
      *len = sizeof *a4;
      return true;
    }
    if (::inet_pton(AF_INET6, ip.c_str(), &a6->sin6_addr) == 1) {
      a6->sin6_family = AF_INET6;
      a6->sin6_port = htons(port);
      *len = sizeof *a6;
      return true;
    }
    return false;
  }

 private:
  std::string name_;
  std::string ip_;
  bool created_ = false;
};

// GET target from `src` to dst:port inside the namespace ("Connection:
// close"; reads to EOF, bounded).
Result<HttpResponse> getFrom(const Netns& ns, const std::string& src, const std::string& dst, uint16_t port,
                             const std::string& target, const Headers& headers = {}) {
  std::string why;
  int fd = ns.socketFrom(src, &why);
  if (fd < 0) return makeError(why);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_storage ss{};
  socklen_t len = 0;
  Netns::sockaddrOf(dst, port, &ss, &len);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    std::string e = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return makeError(e);
  }
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: derp\r\nConnection: close\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  req += "\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size())) {
    ::close(fd);
    return makeError("send failed");
  }
  std::string data;
  char buf[16384];
  for (int i = 0; i < 10000; i++) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    data.append(buf, size_t(n));
  }
  ::close(fd);
  auto r = parseHttpResponse(data);
  if (!r) return makeError("no complete response in '" + data.substr(0, 300) + "'");
  return std::move(*r);
}

// Stops a worker started outside the fixture and checks its log as the
// fixture would.
void finish(WorkerProcess& w) {
  auto r = w.stop(SIGTERM);
  EXPECT_TRUE(r.ok()) << r.error();
  if (r.ok()) {
    EXPECT_EQ(*r, 0);
  }
  auto errors = w.errorLines();
  EXPECT_TRUE(errors.empty()) << "error lines in the derp-worker log:\n" << w.logText();
}

TEST_F(DebugTest, NonLoopbackPeersInANetworkNamespace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create a network namespace";
  // The server address, then the sources.
  const std::vector<std::string> addrs = {"192.0.2.1",       "2001:db8::1",    "192.0.2.2",         "192.0.2.3",
                                          "100.64.0.2",      "100.127.255.254", "100.115.92.2",     "100.115.93.254",
                                          "100.115.94.1",    "fd7a:115c:a1e0::2", "fd7a:115c:a1e1::2", "2001:db8::2"};
  Netns ns("derpd-debug-test-" + std::to_string(::getpid()));
  std::string why;
  if (!ns.create(addrs, &why)) GTEST_SKIP() << "cannot set up a network namespace here: " << why;

  std::vector<std::string> common = {"netns", "exec", ns.name(), workerBinary(), "-a", ":0", "--threads", "2",
                                     "--log-level", "debug"};
  // A production-mode worker: address rules only.
  std::vector<std::string> args = common;
  args.insert(args.end(), {"-c", writeServerKeyFile()});
  WorkerProcess w;
  auto started = w.start(args, ns.ip());
  ASSERT_TRUE(started.ok()) << started.error() << "\n" << w.logText();
  struct Case {
    const char* src;
    int status;
  };
  for (const Case& c : {Case{"192.0.2.2", 403}, Case{"100.64.0.2", 200}, Case{"100.127.255.254", 200},
                        Case{"100.115.92.2", 403}, Case{"100.115.93.254", 403}, Case{"100.115.94.1", 200},
                        Case{"fd7a:115c:a1e0::2", 200}, Case{"fd7a:115c:a1e1::2", 403}, Case{"2001:db8::2", 403}}) {
    SCOPED_TRACE(c.src);
    bool v6 = std::string(c.src).find(':') != std::string::npos;
    auto r = getFrom(ns, c.src, v6 ? "2001:db8::1" : "192.0.2.1", w.port(), "/debug/vars");
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->status, c.status) << r->body;
    if (c.status == 403) {
      EXPECT_EQ(r->body, kDenied);
    } else {
      EXPECT_TRUE(nlohmann::json::accept(r->body)) << r->body.substr(0, 200);
    }
    auto home = getFrom(ns, c.src, v6 ? "2001:db8::1" : "192.0.2.1", w.port(), "/");
    ASSERT_TRUE(home.ok()) << home.error();
    EXPECT_EQ(home->body.find("<a href='/debug/'>") != std::string::npos, c.status == 200);
  }
  // A Tailscale peer behind a proxy is refused.
  auto xff = getFrom(ns, "100.64.0.2", "192.0.2.1", w.port(), "/debug/vars", {{"X-Forwarded-For", "100.64.0.9"}});
  ASSERT_TRUE(xff.ok()) << xff.error();
  EXPECT_EQ(xff->status, 403);
  finish(w);

  // -dev, $TS_ALLOW_DEBUG_IP and a debug key.
  args = common;
  args.insert(args.end(), {"-dev", "--debug-key-file", writeDebugKey("ns-key")});
  ASSERT_EQ(::setenv("TS_ALLOW_DEBUG_IP", "192.0.2.2", 1), 0);
  WorkerProcess dev;
  started = dev.start(args, ns.ip());
  ::unsetenv("TS_ALLOW_DEBUG_IP");
  ASSERT_TRUE(started.ok()) << started.error() << "\n" << dev.logText();
  EXPECT_TRUE(dev.waitForLog("TS_ALLOW_DEBUG_IP: /debug/ is also open to 192.0.2.2", Millis(100)));
  auto allowed = getFrom(ns, "192.0.2.2", "192.0.2.1", dev.port(), "/debug/check");
  ASSERT_TRUE(allowed.ok()) << allowed.error();
  EXPECT_EQ(allowed->status, 200);
  EXPECT_EQ(allowed->body, "derp.Server ConsistencyCheck okay");
  auto other = getFrom(ns, "192.0.2.3", "192.0.2.1", dev.port(), "/debug/check");
  ASSERT_TRUE(other.ok()) << other.error();
  EXPECT_EQ(other->status, 403);
  EXPECT_EQ(other->body, "debug access denied; to permit access, set TS_ALLOW_DEBUG_IP=192.0.2.3\n");
  auto index = getFrom(ns, "192.0.2.3", "192.0.2.1", dev.port(), "/debug/");
  ASSERT_TRUE(index.ok()) << index.error();
  EXPECT_EQ(index->body, kDenied) << "derper's index handler has no dev-mode hint";
  auto keyed = getFrom(ns, "192.0.2.3", "192.0.2.1", dev.port(), "/debug/check?debugkey=ns-key");
  ASSERT_TRUE(keyed.ok()) << keyed.error();
  EXPECT_EQ(keyed->status, 200);
  auto v6 = getFrom(ns, "2001:db8::2", "2001:db8::1", dev.port(), "/debug/check");
  ASSERT_TRUE(v6.ok()) << v6.error();
  EXPECT_EQ(v6->body, "debug access denied; to permit access, set TS_ALLOW_DEBUG_IP=2001:db8::2\n");
  finish(dev);
}

}  // namespace
}  // namespace derpd::test
