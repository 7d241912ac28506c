// derpd, the supervisor (issue: supervisor, privilege separation, signals):
// it opens the listener and the key, runs derp-worker as a child with the
// socket inherited, restarts it when it dies, drops its privileges when
// started as root, and turns signals into actions.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "common/net/listener.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

class SupervisorTest : public WorkerTest {};

// The pid derpd logged for its n-th start of derp-worker (1-based), or -1.
pid_t childPid(const WorkerProcess& d, int nth) {
  static const std::regex kStarted("started derp-worker \\(pid ([0-9]+)\\)");
  std::string log = d.logText();
  int seen = 0;
  for (std::sregex_iterator it(log.begin(), log.end(), kStarted), end; it != end; ++it) {
    if (++seen == nth) return pid_t(std::stoi((*it)[1].str()));
  }
  return -1;
}

std::string procStatusField(pid_t pid, const std::string& field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field + ":", 0) == 0) return line.substr(field.size() + 1);
  }
  return "";
}

TEST_F(SupervisorTest, RelaysThroughDerpd) {
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*d, keys::bob()));
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 1)));
  EXPECT_TRUE(exchange(*b, *a, patternBytes(65536, 2)));
  pid_t child = childPid(*d, 1);
  ASSERT_GT(child, 0);
  EXPECT_NE(child, d->pid());
}

// Started as root, the child runs as the configured user inside the empty
// chroot; started as anyone else it keeps that user (one warning line).
TEST_F(SupervisorTest, ChildDropsPrivilegesWhenRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the privilege drop is only done when started as root";
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  pid_t child = childPid(*d, 1);
  ASSERT_GT(child, 0);
  std::string uid = procStatusField(child, "Uid");
  std::string gid = procStatusField(child, "Gid");
  ASSERT_FALSE(uid.empty());
  // Real, effective, saved and filesystem ids are all non-zero.
  std::istringstream u(uid), g(gid);
  for (int i = 0; i < 4; ++i) {
    long id = -1;
    u >> id;
    EXPECT_GT(id, 0) << "Uid: " << uid;
    g >> id;
    EXPECT_GT(id, 0) << "Gid: " << gid;
  }
  EXPECT_EQ(procStatusField(child, "NoNewPrivs").find('1') != std::string::npos, true);
  char buf[4096];
  ssize_t n = ::readlink(("/proc/" + std::to_string(child) + "/root").c_str(), buf, sizeof buf - 1);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, size_t(n)), tmp().file("run") + "/empty");
  // derpd itself stays root (it must reopen privileged resources).
  EXPECT_EQ(procStatusField(d->pid(), "Uid"), "\t0\t0\t0\t0");
  // The relay still works in its sandbox, /debug/varz included.
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  EXPECT_TRUE(pingPong(*a, {1, 2, 3, 4, 5, 6, 7, 8}, Millis(3000), nullptr));
  auto fds = metric(*d, "derp_current_file_descriptors");
  ASSERT_TRUE(fds.has_value());
  EXPECT_GT(*fds, 0);
}

TEST_F(SupervisorTest, KilledWorkerIsBackWithinTwoSeconds) {
  allowErrorLine("derp-worker killed by signal 9");
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  pid_t first = childPid(*d, 1);
  ASSERT_GT(first, 0);
  DERPD_ASSERT_CONNECT(old, dial(*d, keys::carol()));
  auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  // The old client's connection dies with the process.
  EXPECT_TRUE(expectClosed(*old));
  // A new client relays within 2 s of the kill.
  std::unique_ptr<client::Client> a, b;
  ASSERT_TRUE(dialPairWithin(*d, a, b, Millis(2000)));
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 3)));
  EXPECT_LT(std::chrono::steady_clock::now() - killed, std::chrono::milliseconds(2500));
  pid_t second = childPid(*d, 2);
  EXPECT_GT(second, 0);
  EXPECT_NE(second, first);
  EXPECT_TRUE(d->waitForLog("derp-worker killed by signal 9", Millis(1000)));
  EXPECT_TRUE(d->running()) << "derpd itself must survive its child";
}

TEST_F(SupervisorTest, SighupKeepsConnectionsRelaying) {
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*d, keys::bob()));
  ASSERT_EQ(::kill(d->pid(), SIGHUP), 0);
  ASSERT_TRUE(d->waitForLog("SIGHUP: configuration re-read", Millis(5000)));
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 4)));
  EXPECT_TRUE(exchange(*b, *a, patternBytes(100, 5)));
  EXPECT_EQ(childPid(*d, 2), -1) << "SIGHUP must not restart the worker";
}

TEST_F(SupervisorTest, SigtermStopsEverythingWithExitZero) {
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  pid_t child = childPid(*d, 1);
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  auto stopStart = std::chrono::steady_clock::now();
  auto r = d->stop(SIGTERM);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(*r, 0);
  // The client reads its connection until it ends. This must not wait for
  // the 5 s drain deadline.
  EXPECT_LT(std::chrono::steady_clock::now() - stopStart, std::chrono::seconds(4));
  // Graceful: the client was told to reconnect before its connection ended.
  auto m = recvUntil<client::Restarting>(*a, Millis(3000));
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_GT(m->tryForMs, 0u);
  EXPECT_TRUE(expectClosed(*a));
  EXPECT_NE(::kill(child, 0), 0) << "derp-worker still running after derpd exited";
}

// Runs derpd expecting it to fail before it serves; returns its output.
std::string runFailing(const std::vector<std::string>& args, int* exitCode) {
  WorkerProcess p;
  auto r = p.start(args, binDir() + "/derpd");
  EXPECT_FALSE(r.ok()) << "derpd started although it should have failed";
  if (r.ok()) (void)p.stop(SIGTERM);
  std::optional<int> st = p.exitStatus();
  *exitCode = st ? *st : -1;
  return p.logText();
}

TEST_F(SupervisorTest, BadConfigFileNamesTheLine) {
  std::string conf = tmp().file("bad.conf");
  writeFile(conf, "# derpd test\nhostname = derp.example.com\nno-such-key = 1\n");
  int code = 0;
  std::string out = runFailing({"--config", conf, "-a", "127.0.0.1:0"}, &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("bad.conf:3"), std::string::npos) << out;
  EXPECT_NE(out.find("no-such-key"), std::string::npos) << out;
}

TEST_F(SupervisorTest, PortInUseIsAClearError) {
  auto busy = net::listenTcp("127.0.0.1", 0);
  ASSERT_TRUE(busy.ok()) << busy.error();
  int port = net::localPort(*busy);
  std::vector<std::string> args = derpdArgs();
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "-a") args[i + 1] = "127.0.0.1:" + std::to_string(port);
  }
  int code = 0;
  std::string out = runFailing(args, &code);
  ::close(*busy);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("Address already in use"), std::string::npos) << out;
}

TEST_F(SupervisorTest, WorkerThatCannotStartMakesDerpdGiveUp) {
  // Manual TLS with no certificate files: derp-worker fails at every start.
  std::vector<std::string> args = derpdArgs();
  args.insert(args.end(), {"-certmode", "manual", "-certdir", tmp().file("no-certs"), "-hostname", "localhost",
                           "-http-port", "-1"});
  int code = 0;
  std::string out = runFailing(args, &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("derp-worker cannot start"), std::string::npos) << out;
}

TEST_F(SupervisorTest, HelpAndVersion) {
  for (const char* flag : {"--help", "-version"}) {
    WorkerProcess p;
    auto r = p.start({flag}, binDir() + "/derpd");
    EXPECT_FALSE(r.ok());  // exits at once, never serves
    ASSERT_TRUE(p.exitStatus().has_value());
    EXPECT_EQ(*p.exitStatus(), 0) << flag;
    std::string out = p.logText();
    EXPECT_NE(out.find(std::string(flag) == "--help" ? "-mesh-psk-file" : "derpd "), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace derpd::test
