// Faults derpd must ride out (issue: faults): out of file descriptors, the
// DERP listener backs off instead of spinning on accept, the log stays
// bounded, the failures are counted, and service resumes by itself once
// descriptors are free again.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "derpd-bench/proc_stats.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

int dialLoopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class FaultsTest : public WorkerTest {};

TEST_F(FaultsTest, OutOfDescriptorsBacksOffAndRecovers) {
#ifdef DERPD_SANITIZED
  // The sanitizers' runtime needs descriptors of its own: UBSan's vptr check
  // probes memory through a pipe (a false "invalid vptr" under EMFILE) and
  // LeakSanitizer opens /proc at exit. The plain build runs this test.
  GTEST_SKIP() << "sanitizer build: the runtime itself fails when descriptors run out";
#endif
  // derpd under `ulimit -n 400` (soft and hard; max-connections 0 so that it
  // does not raise the hard limit as root), then 600 connections.
  std::vector<std::string> a = {"-c", "ulimit -n 400 && exec \"$0\" \"$@\"", binDir() + "/derpd"};
  for (const std::string& s : derpdArgs()) a.push_back(s);
  a.insert(a.end(), {"--max-connections", "0", "--threads", "2", "--log-level", "info"});
  WorkerProcess p;
  auto started = p.start(a, "/bin/sh");
  ASSERT_TRUE(started.ok()) << started.error() << "\n" << p.logText();
  const pid_t worker = startedPid(p, "derp-worker", 1);
  ASSERT_GT(worker, 0);

  rlimit rl{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_cur < 2048 && rl.rlim_max >= 2048) {
    rl.rlim_cur = 2048;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  std::vector<int> conns;
  for (int i = 0; i < 600; ++i) {
    int fd = dialLoopback(p.port());
    if (fd >= 0) conns.push_back(fd);
  }
  EXPECT_GE(conns.size(), 590u);  // the kernel completes them into the backlog
  ASSERT_TRUE(p.waitForLog("Too many open files", Millis(10000))) << p.logText();

  // Over 3 s: derp-worker is nearly idle, and its log says so a few times.
  const size_t linesBefore = countOf(p.logText(), "\n");
  const double cpu0 = bench::processCpuSeconds(worker);
  const auto t0 = std::chrono::steady_clock::now();
  // A measurement window, not synchronisation: nothing is waited for.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = bench::processCpuSeconds(worker) - cpu0;
  const size_t lines = countOf(p.logText(), "\n") - linesBefore;
  std::printf("out of descriptors: derp-worker used %.3f s of CPU in %.2f s; %zu log lines\n", cpu, wall, lines);
  EXPECT_LT(cpu / wall, 0.05) << "derp-worker used " << cpu << " s of CPU in " << wall << " s";
  EXPECT_LT(lines, 30u) << "log lines in the window:\n" << p.logText().substr(p.logText().size() > 4000 ? p.logText().size() - 4000 : 0);
  EXPECT_NE(p.logText().find("more such failures since the last line"), std::string::npos);

  // Descriptors free again: service resumes by itself.
  for (int fd : conns) ::close(fd);
  conns.clear();
  std::unique_ptr<client::Client> alice, bob;
  ASSERT_TRUE(dialPairWithin(p, alice, bob, Millis(15000))) << p.logText();
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("after EMFILE"))));
  EXPECT_TRUE(waitForMetric(p, "derpd_accept_errors{errno=\"EMFILE\"}", [](double v) { return v > 0; }));
  auto st = p.stop(SIGTERM);
  ASSERT_TRUE(st.ok()) << st.error();
  EXPECT_EQ(*st, 0);
  for (const std::string& l : p.errorLines()) ADD_FAILURE() << "error line: " << l;
}

// A full disk under log-file: nothing blocks, relaying goes on, and derpd
// says once that it writes to stderr from now on; SIGUSR1 with the file
// still impossible to write changes nothing else.
TEST_F(FaultsTest, FullDiskUnderTheLogFileFallsBackToStderr) {
  if (::geteuid() != 0) GTEST_SKIP() << "not root: the test mounts a small tmpfs";
  const std::string mnt = tmp().file("logs");
  ASSERT_EQ(::mkdir(mnt.c_str(), 0755), 0);
  ASSERT_EQ(std::system(("mount -t tmpfs -o size=256k tmpfs " + mnt).c_str()), 0);
  struct Unmount {
    std::string dir;
    ~Unmount() { (void)std::system(("umount -l " + dir).c_str()); }
  } unmount{mnt};
  const std::string logFile = mnt + "/derpd.log";
  const std::string errFile = tmp().file("stderr.txt");

  std::vector<std::string> args = derpdArgs();
  args.insert(args.end(), {"--log-file", logFile});
  const std::string bin = binDir() + "/derpd";
  pid_t pid = ::fork();
  if (pid == 0) {
    int e = ::open(errFile.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ::dup2(e, 1);
    ::dup2(e, 2);
    std::vector<char*> argv = {const_cast<char*>(bin.c_str())};
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  struct Reap {
    pid_t pid;
    ~Reap() {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reap{pid};
  static const std::regex kServing(R"(serving DERP on http://127\.0\.0\.1:([0-9]+)/derp)");
  uint16_t port = 0;
  ASSERT_TRUE(waitFor([&] {
    std::smatch m;
    const std::string log = readFile(logFile).value_or("");
    if (!std::regex_search(log, m, kServing)) return false;
    port = uint16_t(std::stoi(m[1].str()));
    return true;
  }, Millis(10000)));

  // Fill the file system.
  {
    std::string chunk(4096, 'x');
    std::FILE* f = std::fopen((mnt + "/filler").c_str(), "w");
    ASSERT_NE(f, nullptr);
    for (int i = 0; i < 1000 && std::fwrite(chunk.data(), 1, chunk.size(), f) == chunk.size(); ++i) {
      if (std::fflush(f) != 0) break;
    }
    std::fclose(f);
  }
  // Log lines (debug: each connection) keep coming; relaying works.
  client::ClientOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(port) + "/derp";
  for (int round = 0; round < 5; ++round) {
    o.key = keys::alice();
    auto a = client::Client::connect(o);
    ASSERT_TRUE(a.ok()) << a.error();
    o.key = keys::bob();
    auto b = client::Client::connect(o);
    ASSERT_TRUE(b.ok()) << b.error();
    ASSERT_TRUE(exchange(**a, **b, asBytes(std::string_view("while the disk is full"))));
  }
  ASSERT_TRUE(waitFor([&] { return readFile(errFile).value_or("").find("logging to stderr") != std::string::npos; },
                      Millis(10000)))
      << readFile(errFile).value_or("");
  // SIGUSR1: the reopen fails the same way; still one notice per failure.
  ASSERT_EQ(::kill(pid, SIGUSR1), 0);
  o.key = keys::carol();
  auto c = client::Client::connect(o);
  ASSERT_TRUE(c.ok()) << c.error();
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_TRUE(waitFor([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, Millis(15000)));
  reap.pid = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const std::string err = readFile(errFile).value_or("");
  EXPECT_NE(err.find("error: log file " + logFile + ": cannot write to it (No space left on device)"),
            std::string::npos)
      << err;
  EXPECT_LE(countOf(err, "logging to stderr until it is reopened"), 3u) << err;  // derpd's two sinks share one notice; a reopen may add one
  EXPECT_NE(err.find("info: stopped"), std::string::npos) << "later lines are not on stderr:\n" << err;
}

// The child-watchdog: a stopped (or deadlocked) child, or one stuck event
// loop of derp-worker, is killed and restarted; the other roles are left
// alone.
class WatchdogTest : public WorkerTest {
 protected:
  static constexpr int kWatchdogSeconds = 4;

  WorkerProcess* startWatched(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> a = derpdArgs();
    a.insert(a.end(), {"--child-watchdog", std::to_string(kWatchdogSeconds) + "s"});
    a.insert(a.end(), extra.begin(), extra.end());
    return startDerpd(a);
  }

  // Waits for the second start of `role` (within the watchdog + 2 s, as the
  // issue asks, plus the restart and a slow machine's margin).
  ::testing::AssertionResult replaced(const WorkerProcess& d, const std::string& role) {
    if (waitFor([&] { return startedPid(d, role, 2) > 0; }, Millis((kWatchdogSeconds + 2) * 1000 + 3000)))
      return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << role << " was not replaced:\n" << d.logText();
  }

  void allowWatchdogLines(const WorkerProcess& d, const std::string& role) {
    (void)d;  // an allowance matches the message (after "derpd[pid] error: ")
    const std::string who = role;
    allowErrorLine(who + " (pid ");  // "... (child-watchdog 4s): killing it with SIGKILL"
    allowErrorLine(who + " killed by signal 9 (Killed) (child-watchdog: ");
  }
};

TEST_F(WatchdogTest, StoppedDerpWorkerIsReplacedAndStunWorkerUntouched) {
  WorkerProcess* d = startWatched();
  ASSERT_NE(d, nullptr);
  const pid_t worker = startedPid(*d, "derp-worker", 1);
  const pid_t stun = startedPid(*d, "stun-worker", 1);
  ASSERT_GT(worker, 0);
  ASSERT_GT(stun, 0);
  allowWatchdogLines(*d, "derp-worker");
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(worker, SIGSTOP), 0);
  ASSERT_TRUE(replaced(*d, "derp-worker"));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("SIGSTOP of derp-worker: replaced after %.1f s (child-watchdog %d s)\n", took, kWatchdogSeconds);
  EXPECT_GE(took, kWatchdogSeconds - 1.0);  // not before the watchdog's time
  EXPECT_NE(d->logText().find("derp-worker (pid " + std::to_string(worker) + ") sent nothing on the control socket"),
            std::string::npos)
      << d->logText();
  EXPECT_EQ(startedPid(*d, "stun-worker", 2), -1) << "stun-worker was restarted too";
  EXPECT_EQ(::kill(stun, 0), 0);
  std::unique_ptr<client::Client> alice, bob;
  ASSERT_TRUE(dialPairWithin(*d, alice, bob, Millis(10000)));
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("after the watchdog"))));
}

TEST_F(WatchdogTest, StoppedStunWorkerIsReplacedAndDerpWorkerUntouched) {
  WorkerProcess* d = startWatched();
  ASSERT_NE(d, nullptr);
  const pid_t worker = startedPid(*d, "derp-worker", 1);
  const pid_t stun = startedPid(*d, "stun-worker", 1);
  ASSERT_GT(stun, 0);
  allowWatchdogLines(*d, "stun-worker");
  DERPD_ASSERT_CONNECT(alice, dial(*d, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*d, keys::bob()));
  ASSERT_EQ(::kill(stun, SIGSTOP), 0);
  ASSERT_TRUE(replaced(*d, "stun-worker"));
  EXPECT_EQ(startedPid(*d, "derp-worker", 2), -1) << "derp-worker was restarted too";
  EXPECT_EQ(::kill(worker, 0), 0);
  // Its clients never noticed.
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("derp-worker untouched"))));
}

TEST_F(WatchdogTest, OneStuckEventLoopIsDetected) {
  // Loop 0 blocks for a minute once derp-worker is ready; its main thread and
  // loop 1 go on, so only the per-loop progress can tell.
  WorkerProcess* d = startWatched({"--stall-derp-loop-for-test", "60000"});
  ASSERT_NE(d, nullptr);
  const pid_t worker = startedPid(*d, "derp-worker", 1);
  allowWatchdogLines(*d, "derp-worker");
  ASSERT_TRUE(replaced(*d, "derp-worker"));
  EXPECT_NE(d->logText().find("derp-worker (pid " + std::to_string(worker) + ") event loop 0 made no progress for"),
            std::string::npos)
      << d->logText();
  std::unique_ptr<client::Client> alice, bob;
  ASSERT_TRUE(dialPairWithin(*d, alice, bob, Millis(10000)));
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("loops all moving"))));
}

}  // namespace
}  // namespace derpd::test
