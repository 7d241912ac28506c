// derpd-bench against the real servers: STUN mode against stun-worker (it
// runs for the given time, gets answers, reports the server's CPU time) and
// DERP pairs mode against derp-worker; both refuse a target outside
// loopback. (Figures go to BENCHMARKS.md, never asserted.)
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <regex>
#include <string>

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
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
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
  int rc = runCommand(binDir() + "/derpd-bench derp -from " + url + " -to " + url +
                          " -pairs 2 -size 200 -rate 500 -duration 500ms",
                      &out);
  EXPECT_EQ(rc, 0) << out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("delivered ([0-9]+) \\(")) && std::stoull(m[1]) > 0) << out;
  EXPECT_NE(out.find("latency p50 "), std::string::npos) << out;
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_sent", [](double v) { return v > 100; }));
  out.clear();
  rc = runCommand(binDir() + "/derpd-bench derp -from https://192.0.2.1/derp -to " + url + " -duration 100ms", &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("not on a loopback address"), std::string::npos) << out;
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
