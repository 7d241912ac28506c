// derpd-probe against real derpd nodes on loopback (TLS with a test CA,
// meshed): --once passes on a healthy cluster and fails exactly the probes a
// fault breaks (a node stopped; STUN off, a certificate 3 days from expiry
// and a mesh link that is not dialled, all at once); bad DERP map sources;
// the daemon's status page, /healthz, /metrics and /debug/probe-run, and the
// last good map kept when the map source breaks; -derp-map local; and
// derpd's monitor role reporting into /debug/varz.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "support/admission_fakes.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct ProbeRun {
  int exit = -1;
  std::string out, err;
};

// "PROBE RESULT LATENCY ERROR" rows of the --once table: name -> result.
std::map<std::string, std::string> tableResults(const std::string& out) {
  std::map<std::string, std::string> m;
  std::istringstream in(out);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string name, result;
    l >> name >> result;
    if (result == "good" || result == "bad") m[name] = result;
    if (result == "not") m[name] = "not run";
  }
  return m;
}

class ProbeTest : public WorkerTest {
 protected:
  void SetUp() override {
    WorkerTest::SetUp();
    certDir_ = tmp().file("certs");
    fs::create_directories(certDir_);
    auto c = makeTestCerts(certDir_, "localhost", {"localhost", "127.0.0.1"});
    ASSERT_TRUE(c.ok()) << c.error();
    caFile_ = c->caFile;
    caBundle_ = caFile_;
    meshKeyFile_ = writeMeshKeyFile();
    if (::geteuid() == 0) {
      ASSERT_EQ(::chmod(tmp().path().c_str(), 0755), 0);
    }
    makeReadable(certDir_);
  }

  static void makeReadable(const std::string& dir) {
    if (::geteuid() != 0) return;
    for (const auto& e : fs::directory_iterator(dir)) ::chmod(e.path().c_str(), 0644);
    ::chmod(dir.c_str(), 0755);
  }

  // A second certificate directory whose leaf (from its own CA) expires in
  // `days`; the CA joins the bundle every client and node trusts.
  std::string shortLivedCertDir(int days) {
    std::string dir = tmp().file("certs-short");
    fs::create_directories(dir);
    CertOptions o;
    o.validDays = days;
    o.leafSerial = 0x5107;
    auto c = makeTestCerts(dir, "localhost", {"localhost", "127.0.0.1"}, o);
    EXPECT_TRUE(c.ok()) << c.error();
    caBundle_ = tmp().file("ca-bundle.crt");
    writeFile(caBundle_, *readFile(caFile_) + *readFile(c->caFile));
    makeReadable(dir);
    return dir;
  }

  struct Node {
    std::string name;
    int port = 0;
    int stunPort = 0;
    WorkerProcess* w = nullptr;
  };

  // A derpd node in TLS mode (the shared test certificate unless certDir
  // says otherwise), STUN on a port from port 0 unless -stun=false is in
  // `extra`.
  Node startNode(const std::string& name, int port, const std::string& meshWith,
                 const std::vector<std::string>& extra = {}, const std::string& certDir = "") {
    Node n{name, port, 0, nullptr};
    std::string dir = tmp().file("node-" + name);
    fs::create_directories(dir);
    std::vector<std::string> a = derpdArgs();
    a.erase(std::find(a.begin(), a.end(), "-dev"));
    *(std::find(a.begin(), a.end(), "-a") + 1) = "127.0.0.1:" + std::to_string(port);
    *(std::find(a.begin(), a.end(), "--runtime-dir") + 1) = dir + "/run";
    a.insert(a.end(), {"-c", dir + "/derper.key", "-certmode", "manual", "-certdir",
                       certDir.empty() ? certDir_ : certDir, "-hostname", "localhost", "-http-port", "-1",
                       "--state-dir", dir, "-mesh-psk-file", meshKeyFile_, "--mesh-ca-file", caBundle_});
    if (!meshWith.empty()) a.insert(a.end(), {"-mesh-with", meshWith});
    a.insert(a.end(), extra.begin(), extra.end());
    n.w = startDerpd(a);
    if (!n.w) return n;
    n.w->setTlsClientInfo("localhost", caBundle_);
    if (std::find(extra.begin(), extra.end(), "-stun=false") == extra.end()) {
      EXPECT_TRUE(n.w->waitForLog("serving STUN on 127.0.0.1:", kIoTimeout));
      n.stunPort = stunPort(*n.w);
    }
    return n;
  }

  static std::string mapJson(const std::vector<Node>& nodes) {
    std::string s = R"({"Regions":{"900":{"RegionID":900,"RegionCode":"loc","RegionName":"Local loopback test","Nodes":[)";
    for (size_t i = 0; i < nodes.size(); ++i) {
      const Node& n = nodes[i];
      s += std::string(i ? "," : "") + R"({"Name":")" + n.name + R"(","RegionID":900,"HostName":"localhost",)" +
           R"("IPv4":"127.0.0.1","IPv6":"none","STUNPort":)" + std::to_string(n.stunPort ? n.stunPort : -1) +
           R"(,"DERPPort":)" + std::to_string(n.port) + "}";
    }
    return s + "]}}}";
  }

  std::string writeMap(const std::string& json) {
    std::string p = tmp().file("derpmap-" + std::to_string(++maps_) + ".json");
    writeFile(p, json);
    return p;
  }

  // Runs build/bin/derpd-probe to completion (at most `limit`), stdout and
  // stderr captured.
  ProbeRun runProbe(std::vector<std::string> args, Millis limit = Millis(60000)) {
    ProbeRun r;
    std::string outPath = tmp().file("probe-" + std::to_string(++runs_) + ".out");
    std::string errPath = outPath + ".err";
    std::string bin = binDir() + "/derpd-probe";
    pid_t pid = ::fork();
    if (pid == 0) {
      int o = ::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = ::open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(o, 1);
      ::dup2(e, 2);
      std::vector<char*> argv = {const_cast<char*>(bin.c_str())};
      for (auto& s : args) argv.push_back(const_cast<char*>(s.c_str()));
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    int status = 0;
    bool done = waitFor([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, limit, Millis(20));
    if (!done) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ADD_FAILURE() << "derpd-probe did not finish within " << limit.count() << " ms";
    }
    r.exit = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = readFile(outPath).value_or("");
    r.err = readFile(errPath).value_or("");
    EXPECT_TRUE(noSanitizerReport(r.out + r.err, "derpd-probe"));
    return r;
  }

  std::vector<std::string> onceArgs(const std::string& map) {
    return {"-derp-map", "file://" + map, "-once", "-spread=false", "--ca-file", caBundle_};
  }

  static std::string entries(const std::vector<int>& ports) {
    std::string s;
    for (int p : ports) s += (s.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(p);
    return s;
  }

  std::string certDir_, caFile_, caBundle_, meshKeyFile_;
  int maps_ = 0, runs_ = 0;
};

std::string describeRun(const ProbeRun& r) { return "exit " + std::to_string(r.exit) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err; }

TEST_F(ProbeTest, OnceAllProbesPassOnAHealthyMeshedPair) {
  std::vector<int> ports = {reserveLoopbackPort(), reserveLoopbackPort()};
  Node a = startNode("900a", ports[0], entries(ports));
  ASSERT_NE(a.w, nullptr);
  Node b = startNode("900b", ports[1], entries(ports));
  ASSERT_NE(b.w, nullptr);
  ASSERT_TRUE(waitForMetric(*a.w, "derpd_mesh_links{state=\"up\"}", [](double v) { return v == 1; }, Millis(15000)));
  ASSERT_TRUE(waitForMetric(*b.w, "derpd_mesh_links{state=\"up\"}", [](double v) { return v == 1; }, Millis(15000)));

  auto args = onceArgs(writeMap(mapJson({a, b})));
  args.insert(args.end(), {"-bw-interval", "15s", "-bw-probe-size-bytes", "300000", "-qd-packets-per-second", "100",
                           "--qd-once-window", "1s"});
  ProbeRun r = runProbe(args);
  ASSERT_EQ(r.exit, 0) << describeRun(r);
  auto t = tableResults(r.out);
  std::set<std::string> want = {"derpmap-probe", "derp/loc/900a/tls", "derp/loc/900a/udp", "derp/loc/900b/tls",
                                "derp/loc/900b/udp"};
  for (std::string from : {"900a", "900b"}) {
    for (std::string to : {"900a", "900b"}) {
      for (std::string kind : {"mesh", "bw", "qd"}) want.insert("derp/loc/" + from + "/" + to + "/" + kind);
    }
  }
  std::set<std::string> got;
  for (const auto& [name, result] : t) {
    got.insert(name);
    EXPECT_EQ(result, "good") << name << "\n" << describeRun(r);
  }
  EXPECT_EQ(got, want) << r.out;
  EXPECT_NE(r.out.find("17 probes, 0 failed"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("adding DERP mesh probe for 900a->900b (Local loopback test) every 15s"), std::string::npos)
      << r.err;
}

TEST_F(ProbeTest, OnceFailsExactlyTheProbesOfAStoppedNode) {
  std::vector<int> ports = {reserveLoopbackPort(), reserveLoopbackPort()};
  Node a = startNode("900a", ports[0], entries(ports));
  ASSERT_NE(a.w, nullptr);
  Node b = startNode("900b", ports[1], entries(ports));
  ASSERT_NE(b.w, nullptr);
  const std::string map = writeMap(mapJson({a, b}));
  ASSERT_TRUE(b.w->stop(SIGTERM).ok());
  // a's link to b is down now and retries (warnings, not errors).
  auto args = onceArgs(map);
  args.insert(args.end(), {"-mesh-interval", "3s", "-stun-interval", "3s", "-tls-interval", "3s"});
  ProbeRun r = runProbe(args);
  EXPECT_EQ(r.exit, 1) << describeRun(r);
  std::map<std::string, std::string> want = {
      {"derpmap-probe", "good"},         {"derp/loc/900a/tls", "good"},       {"derp/loc/900a/udp", "good"},
      {"derp/loc/900a/900a/mesh", "good"}, {"derp/loc/900b/tls", "bad"},      {"derp/loc/900b/udp", "bad"},
      {"derp/loc/900a/900b/mesh", "bad"},  {"derp/loc/900b/900a/mesh", "bad"}, {"derp/loc/900b/900b/mesh", "bad"},
  };
  EXPECT_EQ(tableResults(r.out), want) << describeRun(r);
  EXPECT_NE(r.out.find("9 probes, 5 failed"), std::string::npos) << r.out;
}

// Three faults on a three-node region at once: 900b runs no STUN, 900c's
// certificate expires in 3 days, and 900b does not dial 900a (so 900b never
// learns 900a's clients). Exactly derp/loc/900b/udp, derp/loc/900c/tls and
// derp/loc/900b/900a/mesh fail.
TEST_F(ProbeTest, OnceFailsExactlyTheProbesEachFaultBreaks) {
  const std::string shortDir = shortLivedCertDir(3);
  std::vector<int> ports = {reserveLoopbackPort(), reserveLoopbackPort(), reserveLoopbackPort()};
  Node a = startNode("900a", ports[0], entries(ports));
  ASSERT_NE(a.w, nullptr);
  Node b = startNode("900b", ports[1], entries({ports[1], ports[2]}), {"-stun=false"});
  ASSERT_NE(b.w, nullptr);
  b.stunPort = reserveLoopbackPort(SOCK_DGRAM);  // the map still lists a STUN port for 900b
  Node c = startNode("900c", ports[2], entries(ports), {}, shortDir);
  ASSERT_NE(c.w, nullptr);
  ASSERT_TRUE(waitForMetric(*a.w, "derpd_mesh_links{state=\"up\"}", [](double v) { return v == 2; }, Millis(15000)));
  ASSERT_TRUE(waitForMetric(*b.w, "derpd_mesh_links{state=\"up\"}", [](double v) { return v == 1; }, Millis(15000)));
  ASSERT_TRUE(waitForMetric(*c.w, "derpd_mesh_links{state=\"up\"}", [](double v) { return v == 2; }, Millis(15000)));

  auto args = onceArgs(writeMap(mapJson({a, b, c})));
  args.insert(args.end(), {"-mesh-interval", "3s", "-stun-interval", "3s", "-tls-interval", "3s"});
  ProbeRun r = runProbe(args);
  EXPECT_EQ(r.exit, 1) << describeRun(r);
  auto t = tableResults(r.out);
  std::set<std::string> bad, good;
  for (const auto& [name, result] : t) (result == "good" ? good : bad).insert(name);
  EXPECT_EQ(bad, (std::set<std::string>{"derp/loc/900b/udp", "derp/loc/900c/tls", "derp/loc/900b/900a/mesh"}))
      << describeRun(r);
  EXPECT_EQ(good.size(), 1u + 2u + 2u + 8u) << describeRun(r);  // map, tls a/b, udp a/c, the other 8 pairs
  EXPECT_NE(r.out.find("one of the certs expires in 7"), std::string::npos) << r.out;  // 71h59m…
  EXPECT_NE(r.out.find("less than 7 days"), std::string::npos) << r.out;
}

// A plain-HTTP (-dev) node probed without --plain-http: the error says what
// to do instead of OpenSSL's "wrong version number" alone.
TEST_F(ProbeTest, PlainHttpNodeWithoutPlainHttpSaysWhatToDo) {
  WorkerProcess* w = startDerpd(derpdArgs());
  ASSERT_NE(w, nullptr);
  Node n{"900p", w->port(), 0, w};
  auto args = onceArgs(writeMap(mapJson({n})));
  args.insert(args.end(), {"-stun-interval", "0", "-tls-interval", "0"});
  ProbeRun r = runProbe(args);
  EXPECT_EQ(r.exit, 1) << describeRun(r);
  EXPECT_NE(r.out.find("the server did not answer in TLS"), std::string::npos) << describeRun(r);
  EXPECT_NE(r.out.find("--plain-http"), std::string::npos) << describeRun(r);
}

TEST_F(ProbeTest, OnceRefusesBadMapsWithAClearError) {
  // Unreachable: a port nothing listens on.
  ProbeRun r = runProbe({"-derp-map", "http://127.0.0.1:" + std::to_string(reserveLoopbackPort()) + "/derpmap", "-once",
                    "-spread=false"});
  EXPECT_EQ(r.exit, 1) << describeRun(r);
  EXPECT_NE(r.err.find("derpd-probe: DERP map: fetching http://127.0.0.1:"), std::string::npos) << r.err;
  EXPECT_EQ(tableResults(r.out), (std::map<std::string, std::string>{{"derpmap-probe", "bad"}}));

  // Not JSON.
  r = runProbe({"-derp-map", writeMap("<html>not a map</html>"), "-once", "-spread=false"});
  EXPECT_EQ(r.exit, 1) << describeRun(r);
  EXPECT_NE(r.err.find("JSON"), std::string::npos) << r.err;

  // Duplicate node names across regions.
  r = runProbe({"-derp-map", writeMap(R"({"Regions":{"900":{"RegionID":900,"RegionCode":"a","Nodes":[{"Name":"x","RegionID":900,"HostName":"localhost"}]},"901":{"RegionID":901,"RegionCode":"b","Nodes":[{"Name":"x","RegionID":901,"HostName":"localhost"}]}}})"),
                "-once", "-spread=false"});
  EXPECT_EQ(r.exit, 1) << describeRun(r);
  EXPECT_NE(r.err.find("duplicate node name \"x\""), std::string::npos) << r.err;

  // An HTTP error status.
  FakeDocumentServer srv;
  srv.setAnswer(503, "Service Unavailable", "down\n", "text/plain");
  r = runProbe({"-derp-map", srv.url(), "-once", "-spread=false"});
  EXPECT_EQ(r.exit, 1) << describeRun(r);
  EXPECT_NE(r.err.find("fetching " + srv.url() + ": 503 Service Unavailable"), std::string::npos) << r.err;

  // Bad flags: exit 2 with Go flag's words.
  r = runProbe({"-once", "-interval", "soon"});
  EXPECT_EQ(r.exit, 2) << describeRun(r);
  EXPECT_NE(r.err.find("invalid duration \"soon\" for flag -interval"), std::string::npos) << r.err;
}

// A server that admits only clients its admission URL allows (here: none)
// still lets the probe in when the probe has the mesh key.
TEST_F(ProbeTest, OnceWithTheMeshKeyPassesClientVerification) {
  FakeAdmissionServer deny(FakeAdmissionServer::Mode::Deny);
  int port = reserveLoopbackPort();
  Node a = startNode("900a", port, "", {"-verify-client-url", deny.url()});
  ASSERT_NE(a.w, nullptr);
  const std::string map = writeMap(mapJson({a}));
  auto args = onceArgs(map);
  args.insert(args.end(), {"-mesh-interval", "3s"});
  ProbeRun r = runProbe(args);
  EXPECT_EQ(r.exit, 1) << describeRun(r);
  EXPECT_EQ(tableResults(r.out)["derp/loc/900a/900a/mesh"], "bad") << r.out;
  EXPECT_GE(deny.requestCount(), 1u);

  args.insert(args.end(), {"-mesh-psk-file", meshKeyFile_});
  r = runProbe(args);
  EXPECT_EQ(r.exit, 0) << describeRun(r);
  EXPECT_EQ(tableResults(r.out)["derp/loc/900a/900a/mesh"], "good") << r.out;
}

TEST_F(ProbeTest, OnceReadsTheMapFromTailscaledLocalApi) {
  int port = reserveLoopbackPort();
  Node a = startNode("900a", port, "");
  ASSERT_NE(a.w, nullptr);
  FakeLocalApi api(tmp().file("tailscaled.sock"));
  api.setDerpMap(mapJson({a}));
  ProbeRun r = runProbe({"-derp-map", "local", "--tailscaled-socket", api.socketPath(), "-once", "-spread=false",
                    "--ca-file", caBundle_});
  EXPECT_EQ(r.exit, 0) << describeRun(r);
  EXPECT_EQ(tableResults(r.out).size(), 4u) << r.out;  // map, tls, udp, 900a->900a mesh
  ASSERT_GE(api.requestCount(), 1u);
  EXPECT_EQ(api.requests()[0].target, "/localapi/v0/derpmap");
}

TEST_F(ProbeTest, DaemonServesStatusAndMetricsAndKeepsTheLastGoodMap) {
  int port = reserveLoopbackPort();
  Node a = startNode("900a", port, "");
  ASSERT_NE(a.w, nullptr);
  auto srv = std::make_unique<FakeDocumentServer>();
  srv->setAnswer(200, "OK", mapJson({a}));
  WorkerProcess* p = startBinary(
      "derpd-probe",
      {"-derp-map", srv->url(), "-listen", "127.0.0.1:0", "-spread=false", "-interval", "500ms", "-mesh-interval",
       "1s", "-stun-interval", "1s", "-tls-interval", "1s", "--ca-file", caBundle_, "-qd-packets-per-second", "20"},
      "Listening on ");
  ASSERT_NE(p, nullptr);
  const uint16_t hp = p->port();
  const std::string mesh = "derpprobe_result{class=\"derp_mesh\",derp_path=\"single\",hostname=\"localhost\","
                           "name=\"derp/loc/900a/900a/mesh\",region=\"loc\",region_id=\"900\"}";
  const std::string mapResult = "derpprobe_result{class=\"derp_map\",name=\"derpmap-probe\"}";
  const std::string meshAttempts = "derpprobe_attempts_total{class=\"derp_mesh\",derp_path=\"single\","
                                   "hostname=\"localhost\",name=\"derp/loc/900a/900a/mesh\",region=\"loc\","
                                   "region_id=\"900\",status=\"ok\"}";
  auto value = [&](const std::string& key) -> std::optional<double> {
    auto r = httpGet(hp, "/metrics");
    if (!r.ok() || r->status != 200) return std::nullopt;
    auto m = parsePrometheus(r->body);
    auto it = m.find(key);
    if (it == m.end()) return std::nullopt;
    return it->second;
  };
  ASSERT_TRUE(waitFor([&] { return value(mesh) == 1.0 && value(mapResult) == 1.0; }, Millis(15000)));
  for (std::string k : {"derpprobe_result{class=\"tls\",hostname=\"localhost\",name=\"derp/loc/900a/tls\",region=\"loc\",region_id=\"900\"}",
                        "derpprobe_result{class=\"derp_udp\",hostname=\"localhost\",name=\"derp/loc/900a/udp\",region=\"loc\",region_id=\"900\"}"}) {
    EXPECT_TRUE(waitFor([&] { return value(k) == 1.0; }, Millis(10000))) << k;
  }
  // The continuous queuing-delay probe fills its histogram.
  const std::string qdCount = "derpprobe_derp_qd_probe_delays_seconds_count{class=\"derp_qd\",derp_path=\"single\","
                              "hostname=\"localhost\",name=\"derp/loc/900a/900a/qd\",region=\"loc\",region_id=\"900\"}";
  EXPECT_TRUE(waitFor([&] { return value(qdCount).value_or(0) >= 5; }, Millis(10000)));
  auto page = httpGet(hp, "/");
  ASSERT_TRUE(page.ok()) << page.error();
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("All 5 probes are healthy"), std::string::npos) << page->body;
  EXPECT_NE(page->body.find("derp/loc/900a/900a/mesh"), std::string::npos);
  auto health = httpGet(hp, "/healthz");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->body, "ok\n");
  auto varz = httpGet(hp, "/debug/varz");
  ASSERT_TRUE(varz.ok());
  EXPECT_NE(varz->body.find("# TYPE derpprobe_result gauge"), std::string::npos);
  auto run = httpGet(hp, "/debug/probe-run?name=derp/loc/900a/tls");
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->status, 200) << run->body;
  EXPECT_NE(run->body.find("Probe succeeded in "), std::string::npos) << run->body;
  auto unknown = httpGet(hp, "/debug/probe-run?name=nope");
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->status, 404);

  // The map source breaks: the map probe fails, the node's probes go on.
  srv->setAnswer(200, "OK", "this is not JSON");
  ASSERT_TRUE(waitFor([&] { return value(mapResult) == 0.0; }, Millis(10000)));
  auto before = value(meshAttempts);
  ASSERT_TRUE(before.has_value());
  EXPECT_TRUE(waitFor([&] { return value(meshAttempts) > *before && value(mesh) == 1.0; }, Millis(10000)));
  page = httpGet(hp, "/");
  ASSERT_TRUE(page.ok());
  EXPECT_NE(page->body.find("1 out of 5 probes failed or never ran"), std::string::npos) << page->body;
  EXPECT_NE(page->body.find("JSON"), std::string::npos);

  // Duplicate names: refused the same way.
  srv->setAnswer(200, "OK", R"({"Regions":{"1":{"RegionID":1,"RegionCode":"x","Nodes":[{"Name":"n"},{"Name":"n"}]}}})");
  EXPECT_TRUE(waitFor(
      [&] {
        auto r = httpGet(hp, "/");
        return r.ok() && r->body.find("duplicate node name") != std::string::npos;
      },
      Millis(10000)));
  EXPECT_EQ(value(mesh), 1.0);

  // Unreachable: the map of less than 10 minutes ago is used again.
  srv->setAnswer(200, "OK", mapJson({a}));
  ASSERT_TRUE(waitFor([&] { return value(mapResult) == 1.0; }, Millis(10000)));
  srv.reset();
  EXPECT_TRUE(p->waitForLog("Error while fetching DERP map, using cached one", Millis(10000)));
  EXPECT_EQ(value(mapResult), 1.0);
  EXPECT_EQ(value(mesh), 1.0);
}

TEST_F(ProbeTest, MonitorRoleReportsIntoVarz) {
  int port = reserveLoopbackPort();
  Node a = startNode("900a", port, "", {"--monitor", "--monitor-ca-file", caBundle_, "--monitor-interval", "1s"});
  ASSERT_NE(a.w, nullptr);
  const std::string labels = "hostname=\"localhost\",name=\"derp/self/self/self/mesh\",region=\"self\",region_id=\"900\"";
  EXPECT_TRUE(waitForMetric(*a.w, "derpprobe_result{class=\"derp_mesh\",derp_path=\"single\"," + labels + "}",
                            [](double v) { return v == 1; }, Millis(15000)));
  EXPECT_TRUE(waitForMetric(*a.w,
                            "derpprobe_result{class=\"tls\",hostname=\"localhost\",name=\"derp/self/self/tls\","
                            "region=\"self\",region_id=\"900\"}",
                            [](double v) { return v == 1; }, Millis(10000)));
  EXPECT_TRUE(waitForMetric(*a.w,
                            "derpprobe_result{class=\"derp_udp\",hostname=\"localhost\",name=\"derp/self/self/udp\","
                            "region=\"self\",region_id=\"900\"}",
                            [](double v) { return v == 1; }, Millis(10000)));
  EXPECT_TRUE(waitForMetric(*a.w, "derpd_role_up{role=\"monitor\"}", [](double v) { return v == 1; }));
}

}  // namespace
}  // namespace derpd::test
