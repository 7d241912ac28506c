// The harness's log rules (LogPolicy, tests/README.md): an allowance admits
// only the message it names, never a role's every line; sanitizer reports and
// crash signals are failures whatever the allowances say.
#include <gtest/gtest.h>
#include <signal.h>

#include <string>
#include <vector>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

TEST(LogPolicyRules, AllowancesMatchTheMessageNotTheRole) {
  const std::vector<std::string> lines = {
      "2026-12-08T04:00:00.000Z mesh-helper[12] error: resolving derp2.example.com: no such host",
      "2026-12-08T04:00:00.000Z derp-worker[13] error: mesh link to 10.0.0.2:443: connection refused",
      "2026-12-08T04:00:00.000Z cert-agent[14] error: ACME: order failed; retrying in 2 s",
  };
  // "mesh" is in the first line's role only: not admitted.
  auto bad = unexpectedErrorLines(lines, LogPolicy{{"mesh"}, {}});
  ASSERT_EQ(bad.size(), 2u);
  EXPECT_EQ(bad[0], lines[0]);
  EXPECT_EQ(bad[1], lines[2]);
  // A role name admits nothing of that role.
  bad = unexpectedErrorLines(lines, LogPolicy{{"cert-agent"}, {}});
  EXPECT_EQ(bad.size(), 3u);
  bad = unexpectedErrorLines(lines, LogPolicy{{"resolving derp2.example.com", "mesh link to", "ACME: order failed"}, {}});
  EXPECT_TRUE(bad.empty());
}

TEST(LogPolicyRules, SanitizerReportsAndCrashSignalsAreNeverAdmitted) {
  const std::vector<std::string> lines = {
      "2026-12-08T04:00:00.000Z derpd[10] error: cert-agent killed by signal 11 (Segmentation fault); restarting it",
      "2026-12-08T04:00:00.000Z derpd[10] error: stun-worker killed by signal 9 (Killed); restarting it",
      "/work/main/derp-worker/loop.cpp:42:7: runtime error: signed integer overflow",
      "==123==ERROR: AddressSanitizer: heap-use-after-free on address 0x6020",
      "2026-12-08T04:00:00.000Z derpd[10] error: stun-worker killed by signal 31 (Bad system call); restarting it",
  };
  // Everything "allowed" by substring: the SIGSEGV, both reports and the
  // SIGSYS stay failures; SIGKILL (what tests send) is admitted.
  auto bad = unexpectedErrorLines(lines, LogPolicy{{"killed by signal", "runtime error", "AddressSanitizer", ""}, {}});
  ASSERT_EQ(bad.size(), 4u);
  EXPECT_NE(bad[0].find("signal 11"), std::string::npos);
  EXPECT_NE(bad[1].find("runtime error"), std::string::npos);
  EXPECT_NE(bad[2].find("AddressSanitizer"), std::string::npos);
  EXPECT_NE(bad[3].find("signal 31"), std::string::npos);
  // A test that provokes SIGSYS (a seccomp kill) says so.
  bad = unexpectedErrorLines(lines, LogPolicy{{"killed by signal"}, {SIGSYS}});
  ASSERT_EQ(bad.size(), 3u);
  EXPECT_NE(bad[0].find("signal 11"), std::string::npos);
}

class HarnessTest : public WorkerTest {};

// Through the real binaries: a child that aborts (SIGABRT: what a failed
// assertion does; ASan builds intercept SIGSEGV and report instead) while the
// test allows "killed by signal" is still a failure of the policy.
TEST_F(HarnessTest, AnAbortingChildFailsUnderAnAllowance) {
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  const pid_t stun = startedPid(*d, "stun-worker", 1);
  ASSERT_GT(stun, 0);
  ASSERT_EQ(::kill(stun, SIGABRT), 0);
  ASSERT_TRUE(waitFor([&] { return startedPid(*d, "stun-worker", 2) > 0; }, Millis(10000)));
  ASSERT_TRUE(d->waitForLog("stun-worker killed by signal 6", Millis(1000))) << d->logText();
  const auto bad = unexpectedErrorLines(d->errorLines(), LogPolicy{{"killed by signal"}, {}});
  ASSERT_EQ(bad.size(), 1u) << d->logText();
  EXPECT_NE(bad[0].find("which the test did not send"), std::string::npos) << bad[0];
  // This test sent it on purpose: its own TearDown admits it.
  allowSignal(SIGABRT);
  allowErrorLine("stun-worker killed by signal 6 (Aborted); restarting it");
}

}  // namespace
}  // namespace derpd::test
