// derpd-bench against the real servers: STUN mode against stun-worker (it
// runs for the given time, gets answers, reports the server's CPU time),
// DERP pairs, idle and connect modes against derp-worker, the floor mode's
// own plain relay, and bench/run.sh
// in its quick form against derpd; all refuse a target outside loopback.
// (Figures go to BENCHMARKS.md, never asserted: these check that the
// figures are produced and consistent, not how large they are.)
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "common/net/listener.hpp"
#include "common/net/udp.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

// Runs a command line, returns its exit status and stdout+stderr.
int runCommand(const std::string& cmd, std::string* out) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out->append(buf.data(), n);
  int st = ::pclose(p);
  EXPECT_TRUE(noSanitizerReport(*out, cmd));
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// The "result k=v ..." line a mode prints last.
std::map<std::string, std::string> resultLine(const std::string& out) {
  std::map<std::string, std::string> kv;
  const size_t at = out.rfind("\nresult ");
  if (at == std::string::npos) return kv;
  std::istringstream in(out.substr(at + 8, out.find('\n', at + 1) - at - 8));
  for (std::string word; in >> word;) {
    const size_t eq = word.find('=');
    if (eq != std::string::npos) kv[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return kv;
}

class BenchTest : public WorkerTest {};

TEST_F(BenchTest, StunModeLoadsStunWorkerAndReportsServerCpu) {
  WorkerProcess* w = startBinary("stun-worker", {"-a", "127.0.0.1:0", "-stun-port", "0"}, "serving STUN on ");
  ASSERT_NE(w, nullptr);
  ASSERT_GT(w->port(), 0);
  std::string out;
  int rc = runCommand(binDir() + "/derpd-bench stun -target 127.0.0.1:" + std::to_string(w->port()) +
                          " -duration 500ms -sockets 2 -window 32 -server-pid " + std::to_string(w->pid()),
                      &out);
  EXPECT_EQ(rc, 0) << out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("answered ([0-9]+) \\(")) && std::stoull(m[1]) > 0) << out;
  EXPECT_NE(out.find("server cpu "), std::string::npos) << out;
  EXPECT_NE(out.find("invalid 0"), std::string::npos) << out;
}

TEST_F(BenchTest, RefusesANonLoopbackTarget) {
  std::string out;
  int rc = runCommand(binDir() + "/derpd-bench stun -target 192.0.2.1:3478 -duration 100ms", &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("not a loopback address"), std::string::npos) << out;
}

TEST_F(BenchTest, DerpModeRelaysPairsAndReportsLatency) {
  WorkerConfig cfg;
  WorkerProcess* w = startWorker(cfg);
  ASSERT_NE(w, nullptr);
  const std::string url = "http://127.0.0.1:" + std::to_string(w->port()) + "/derp";
  std::string out;
  const std::string cdf = tmp().file("latency.cdf");
  int rc = runCommand(binDir() + "/derpd-bench derp -from " + url + " -to " + url +
                          " -pairs 2 -size 200 -rate 500 -duration 500ms -server-pid " + std::to_string(w->pid()) +
                          " -latency-file " + cdf,
                      &out);
  EXPECT_EQ(rc, 0) << out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("delivered ([0-9]+) \\(")) && std::stoull(m[1]) > 0) << out;
  EXPECT_NE(out.find("latency p50 "), std::string::npos) << out;
  EXPECT_NE(out.find("server pid " + std::to_string(w->pid()) + ": cpu "), std::string::npos) << out;
  auto kv = resultLine(out);
  EXPECT_EQ(kv["pairs"], "2") << out;
  EXPECT_EQ(kv["delivered"], std::string(m[1])) << out;
  EXPECT_GE(std::stod(kv.count("server_cpu_s") ? kv["server_cpu_s"] : "-1"), 0) << out;
  EXPECT_GT(std::stoll(kv.count("server_rss_kb") ? kv["server_rss_kb"] : "0"), 0) << out;
  EXPECT_LE(std::stod(kv["p50_ms"]), std::stod(kv["p99_ms"])) << out;
  EXPECT_LE(std::stod(kv["p99_ms"]), std::stod(kv["p999_ms"])) << out;
  // The CDF: fractions and latencies both non-decreasing, ending at 1.
  std::ifstream f(cdf);
  std::string line;
  ASSERT_TRUE(std::getline(f, line)) << "empty " << cdf;
  EXPECT_EQ(line.rfind("# fraction latency_ms", 0), 0u) << line;
  double lastQ = -1, lastMs = -1;
  int rows = 0;
  for (double q, ms; f >> q >> ms; ++rows) {
    EXPECT_GE(q, lastQ);
    EXPECT_GE(ms, lastMs);
    lastQ = q, lastMs = ms;
  }
  EXPECT_GT(rows, 1000);
  EXPECT_EQ(lastQ, 1.0);
  EXPECT_DOUBLE_EQ(lastMs, std::stod(kv["max_ms"]));
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_sent", [](double v) { return v > 100; }));
  // A paced load waits for every packet it sent (a loopback relay at
  // 1,000 packets/s loses none); three pairs on two event threads.
  EXPECT_EQ(kv["delivered"], kv["sent"]) << out;
  out.clear();
  rc = runCommand(binDir() + "/derpd-bench derp -from " + url + " -to " + url +
                      " -pairs 3 -threads 2 -size 300 -rate 300 -duration 500ms",
                  &out);
  EXPECT_EQ(rc, 0) << out;
  kv = resultLine(out);
  EXPECT_EQ(kv["pairs"], "3") << out;
  EXPECT_GT(std::stoull(kv.count("delivered") ? kv["delivered"] : "0"), 300u) << out;
  EXPECT_EQ(kv["delivered"], kv["sent"]) << out;
  out.clear();
  rc = runCommand(binDir() + "/derpd-bench derp -from " + url + " -to " + url + " -rate 10 -threads 0", &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("-threads must be 1..64"), std::string::npos) << out;
  out.clear();
  rc = runCommand(binDir() + "/derpd-bench derp -from https://192.0.2.1/derp -to " + url + " -duration 100ms", &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("not on a loopback address"), std::string::npos) << out;
}

// "held" counts connections still open when the hold ends, not connects: a
// server that shut down mid-hold leaves none held.
TEST_F(BenchTest, IdleCountsOnlyConnectionsStillOpenAtTheEnd) {
  WorkerConfig cfg;
  WorkerProcess* w = startWorker(cfg);
  ASSERT_NE(w, nullptr);
  const std::string url = "http://127.0.0.1:" + std::to_string(w->port()) + "/derp";
  std::string out;
  int rc = -1;
  std::thread bench([&] { rc = runCommand(binDir() + "/derpd-bench idle -url " + url + " -conns 20 -duration 8s", &out); });
  const bool connected = waitForMetric(*w, "derp_current_connections", [](double v) { return v == 20; }, Millis(20000));
  auto st = w->stop(SIGTERM);  // drains: every client is told to go and closed
  bench.join();
  ASSERT_TRUE(connected);
  ASSERT_TRUE(st.ok()) << st.error();
  EXPECT_EQ(rc, 1) << out;
  auto kv = resultLine(out);
  EXPECT_EQ(kv["connected"], "20") << out;
  EXPECT_EQ(kv["held"], "0") << out;
  EXPECT_NE(out.find(", 0 still open at the end"), std::string::npos) << out;
}

TEST_F(BenchTest, IdleAndConnectModesReportMemoryAndHandshakes) {
  WorkerConfig cfg;
  WorkerProcess* w = startWorker(cfg);
  ASSERT_NE(w, nullptr);
  const std::string url = "http://127.0.0.1:" + std::to_string(w->port()) + "/derp";
  const std::string pid = std::to_string(w->pid());
  std::string out;
  int rc = runCommand(binDir() + "/derpd-bench idle -url " + url + " -conns 40 -duration 200ms -server-pid " + pid,
                      &out);
  EXPECT_EQ(rc, 0) << out;
  auto kv = resultLine(out);
  EXPECT_EQ(kv["held"], "40") << out;
  EXPECT_GT(std::stoll(kv.count("rss_held_kb") ? kv["rss_held_kb"] : "0"), 0) << out;
  EXPECT_GT(std::stoll(kv.count("rss_before_kb") ? kv["rss_before_kb"] : "0"), 0) << out;
  out.clear();
  rc = runCommand(binDir() + "/derpd-bench connect -url " + url + " -conns 60 -workers 2 -duration 20s -server-pid " +
                      pid,
                  &out);
  EXPECT_EQ(rc, 0) << out;
  kv = resultLine(out);
  EXPECT_EQ(kv["handshakes"], "60") << out;
  EXPECT_EQ(kv["failures"], "0") << out;
  // 40 idle clients and 60 handshakes, each a connection the worker counted.
  EXPECT_TRUE(waitForMetric(*w, "derp_accepts", [](double v) { return v >= 100; }));
}

// bench/run.sh --quick: derpd started by the script over TLS, every row run,
// the table and data files written.
TEST_F(BenchTest, RunScriptQuickWritesTheTable) {
  const std::string dir = tmp().file("bench-out");
  std::string out;
  const int rc = runCommand(std::string(DERPD_SOURCE_DIR) + "/bench/run.sh --quick --bin " + binDir() + " --out " + dir,
                            &out);
  ASSERT_EQ(rc, 0) << out;
  std::ifstream t(dir + "/table.md");
  std::stringstream table;
  table << t.rdbuf();
  for (const char* row : {"| derpd | 1 pairs full speed | ", "| derpd | 4 pairs x 10k paced | ",
                          "| derpd | 4 pairs full speed, 1 thread | ", "| derpd | 200 idle TLS clients | ",
                          "| derpd | handshakes | ", "| floor | 4 pairs x 10k paced, plain TCP relay | "}) {
    EXPECT_NE(table.str().find(row), std::string::npos) << row << "\n" << table.str() << out;
  }
  std::ifstream tsv(dir + "/results.tsv");
  int rows = 0;
  for (std::string line; std::getline(tsv, line); ++rows) {
    EXPECT_EQ(line.find("\tfailed"), std::string::npos) << line;
    EXPECT_EQ(line.find("delivered=0 "), std::string::npos) << line;
  }
  EXPECT_EQ(rows, 8);  // floor; pairs 1, 2, 4; paced; 200 idle; handshakes; 4 pairs on 1 thread
  std::ifstream pairs(dir + "/pairs.dat");
  std::string header, one;
  ASSERT_TRUE(std::getline(pairs, header) && std::getline(pairs, one));
  EXPECT_EQ(one.rfind("1 ", 0), 0u) << one;
  EXPECT_EQ(one.find(" - "), std::string::npos) << "no derpd figure for 1 pair: " << one;
}

// The floor: derpd-bench's own plain TCP relay thread under a paced load;
// every packet arrives and the thread's CPU per packet is reported.
TEST_F(BenchTest, FloorModeRelaysEveryPacketAndReportsItsCpu) {
  std::string out;
  int rc = runCommand(binDir() + "/derpd-bench floor -pairs 3 -size 200 -rate 400 -duration 500ms", &out);
  EXPECT_EQ(rc, 0) << out;
  auto kv = resultLine(out);
  EXPECT_EQ(kv["pairs"], "3") << out;
  EXPECT_GT(std::stoull(kv.count("delivered") ? kv["delivered"] : "0"), 400u) << out;
  EXPECT_EQ(kv["delivered"], kv["sent"]) << out;
  EXPECT_GT(std::stod(kv.count("relay_cpu_s") ? kv["relay_cpu_s"] : "0"), 0) << out;
  EXPECT_GT(std::stod(kv.count("us_per_packet") ? kv["us_per_packet"] : "0"), 0) << out;
  EXPECT_LE(std::stod(kv["p50_ms"]), std::stod(kv["p99_ms"])) << out;
  out.clear();
  rc = runCommand(binDir() + "/derpd-bench floor -pairs 1 -duration 100ms", &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("floor needs -rate"), std::string::npos) << out;
}

TEST_F(BenchTest, NoAnswerIsAFailure) {
  // A UDP socket of ours that never answers.
  auto silent = net::listenUdp("127.0.0.1", 0);
  ASSERT_TRUE(silent.ok()) << silent.error();
  const int port = net::localPort(silent->front());
  std::string out;
  int rc = runCommand(binDir() + "/derpd-bench stun -target 127.0.0.1:" + std::to_string(port) +
                          " -duration 300ms -sockets 1 -window 4",
                      &out);
  for (int fd : *silent) ::close(fd);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("answered 0 "), std::string::npos) << out;
}

}  // namespace
}  // namespace derpd::test
