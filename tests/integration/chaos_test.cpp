// Fault tolerance: for 60 s (bounded), a random child of derpd is killed
// every few seconds while clients relay. derpd never dies, each child comes
// back, clients reconnect and relay again, and derpd's own descriptor count
// and RSS do not grow.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;


// How many times derpd logged "started <role>".
int starts(const WorkerProcess& derpd, const std::string& role) {
  int n = 0;
  while (startedPid(derpd, role, n + 1) > 0) ++n;
  return n;
}

class ChaosTest : public WorkerTest {};

TEST_F(ChaosTest, RandomChildKilledEveryFewSecondsForAMinute) {
  // TLS (cert-agent), STUN (stun-worker), a mesh entry (mesh-helper) and the
  // monitor: every role derpd can run.
  std::string dir = tmp().file("certs");
  fs::create_directories(dir);
  auto c = makeTestCerts(dir, "localhost", {"localhost", "127.0.0.1"});
  ASSERT_TRUE(c.ok()) << c.error();
  if (::geteuid() == 0) {
    ::chmod(tmp().path().c_str(), 0755);
    for (const auto& e : fs::directory_iterator(dir)) ::chmod(e.path().c_str(), 0644);
    ::chmod(dir.c_str(), 0755);
  }
  const int port = reserveLoopbackPort();
  std::vector<std::string> a = derpdArgs();
  a.erase(std::find(a.begin(), a.end(), "-dev"));
  *(std::find(a.begin(), a.end(), "-a") + 1) = "127.0.0.1:" + std::to_string(port);
  a.insert(a.end(), {"-c", tmp().file("derper.key"), "-certmode", "manual", "-certdir", dir, "-hostname",
                     "localhost", "-http-port", "-1", "--state-dir", tmp().path(), "-mesh-psk-file",
                     writeMeshKeyFile(), "-mesh-with", "127.0.0.1:" + std::to_string(port), "--mesh-ca-file",
                     c->caFile, "--monitor", "--monitor-ca-file", c->caFile, "--monitor-interval", "2s",
                     "--log-level", "info"});
  WorkerProcess* w = startDerpd(a);
  ASSERT_NE(w, nullptr);
  w->setTlsClientInfo("localhost", c->caFile);
  const std::vector<std::string> roles = {"derp-worker", "stun-worker", "cert-agent", "mesh-helper", "monitor"};
  // Killing children is the point: their deaths (SIGKILL only: a crash
  // signal fails the test whatever is allowed) are logged as errors, and a
  // message derpd was sending to a child just killed may fail.
  for (const std::string& r : roles) {
    allowErrorLine(r + " killed by signal 9 (Killed); restarting it");
    allowErrorLine(r + ": cannot send ");
  }
  for (const auto& r : roles) {
    ASSERT_TRUE(waitForMetric(*w, "derpd_role_up{role=\"" + r + "\"}", [](double v) { return v == 1; },
                              Millis(15000)))
        << r;
  }
  std::unique_ptr<client::Client> alice, bob;
  ASSERT_TRUE(dialPairWithin(*w, alice, bob, Millis(5000)));
  ASSERT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("before"))));
  const pid_t derpd = w->pid();
  const int fds0 = processFdCount(derpd);
  const int64_t rss0 = processRssBytes(derpd);

  std::mt19937 rng(20261207);  // fixed seed: the same sequence every run
  const auto end = Clock::now() + std::chrono::seconds(60);
  int kills = 0;
  for (int round = 0; round < 30 && Clock::now() < end; ++round) {
    const std::string role = roles[rng() % roles.size()];
    const int n = starts(*w, role);
    const pid_t victim = startedPid(*w, role, n);
    ASSERT_GT(victim, 0) << role;
    ASSERT_EQ(::kill(victim, SIGKILL), 0) << role << " pid " << victim;
    ++kills;
    // derpd restarts it (backoff 100 ms, doubling only on quick failures).
    ASSERT_TRUE(waitFor([&] { return starts(*w, role) > n; }, Millis(15000))) << role << " not restarted";
    ASSERT_TRUE(w->running()) << "derpd died after killing " << role;
    ASSERT_TRUE(waitForMetric(*w, "derpd_role_up{role=\"" + role + "\"}", [](double v) { return v == 1; },
                              Millis(15000)))
        << role;
    // Clients on a process that was not killed are undisturbed; they
    // reconnect only when derp-worker, which holds their connections, was.
    if (role == "derp-worker") {
      ASSERT_TRUE(dialPairWithin(*w, alice, bob, Millis(10000))) << "after killing " << role;
      ASSERT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("reconnected"))));
    } else {
      ASSERT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("undisturbed")), Millis(2000)))
          << "clients of derp-worker were disturbed by killing " << role;
    }
    // A few seconds between kills.
    const auto pause = Clock::now() + Millis(1000 + int(rng() % 2000));
    while (Clock::now() < pause && Clock::now() < end) std::this_thread::sleep_for(Millis(50));
  }
  EXPECT_GE(kills, 10);
  EXPECT_TRUE(w->running());
  EXPECT_LE(processFdCount(derpd), fds0) << "derpd's descriptors grew";
#ifndef DERPD_SANITIZED  // ASan's quarantine holds freed memory
  EXPECT_LE(processRssBytes(derpd), rss0 + 2 * (1 << 20)) << "derpd's RSS grew from " << rss0;
#else
  (void)rss0;
#endif
}

}  // namespace
}  // namespace derpd::test
