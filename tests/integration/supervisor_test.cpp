// derpd, the supervisor (issue: supervisor, privilege separation, signals):
// it opens the listener and the key, runs derp-worker as a child with the
// socket inherited, restarts it when it dies, drops its privileges when
// started as root, and turns signals into actions.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "common/net/listener.hpp"
#include "common/proto/stun/stun.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

class SupervisorTest : public WorkerTest {};

// The pid derpd logged for its n-th start of derp-worker (1-based), or -1.
pid_t childPid(const WorkerProcess& d, int nth) { return startedPid(d, "derp-worker", nth); }

// One Tailscale binding request to 127.0.0.1:port; the decoded answer.
std::optional<stun::BindingResponse> stunExchange(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  stun::TxId txid{};
  for (size_t i = 0; i < txid.size(); ++i) txid[i] = uint8_t(0x40 + i);
  Bytes req;
  stun::appendBindingRequest(req, txid);
  std::optional<stun::BindingResponse> out;
  // Loopback UDP does not lose datagrams in practice; a few tries anyway.
  for (int attempt = 0; attempt < 5 && !out; ++attempt) {
    ::sendto(fd, req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 1000) != 1) continue;
    uint8_t buf[2048];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) continue;
    auto r = stun::parseBindingResponse(ByteView(buf, size_t(n)));
    if (r.ok() && r->txid == txid) out = *r;
  }
  ::close(fd);
  return out;
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
  ASSERT_TRUE(d->waitForLog("stun-worker is ready", Millis(5000)));
  for (const char* role : {"derp-worker", "stun-worker"}) {
    SCOPED_TRACE(role);
    pid_t child = startedPid(*d, role, 1);
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
  }
  // derpd itself stays root (it must reopen privileged resources).
  EXPECT_EQ(procStatusField(d->pid(), "Uid"), "\t0\t0\t0\t0");
  // Both serve in their sandboxes, /debug/varz included.
  EXPECT_TRUE(stunExchange(stunPort(*d)).has_value());
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
  ASSERT_TRUE(d->waitForLog("stun-worker is ready", Millis(5000)));
  pid_t stunPid = startedPid(*d, "stun-worker", 1);
  ASSERT_GT(stunPid, 0);
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
  // The other child was not touched.
  EXPECT_EQ(startedPid(*d, "stun-worker", 2), -1);
  EXPECT_EQ(::kill(stunPid, 0), 0);
  EXPECT_TRUE(stunExchange(stunPort(*d)).has_value());
}

// stun-worker under derpd: it answers on the socket derpd bound, its counters
// reach /debug/varz through the control plane, and when it dies it is
// restarted on the same socket while derp-worker carries on.
TEST_F(SupervisorTest, StunWorkerServesReportsAndRestartsAlone) {
  allowErrorLine("stun-worker killed by signal 9");
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->waitForLog("stun-worker is ready", Millis(5000)));
  uint16_t port = stunPort(*d);
  ASSERT_GT(port, 0);
  auto ans = stunExchange(port);
  ASSERT_TRUE(ans.has_value());
  EXPECT_EQ(ans->mapped.toString().rfind("127.0.0.1:", 0), 0u) << ans->mapped.toString();
  EXPECT_TRUE(waitForMetric(*d, "stun_requests{disposition=\"success\"}", [](double v) { return v == 1; },
                            Millis(10000)));
  EXPECT_TRUE(waitForMetric(*d, "derpd_role_up{role=\"stun-worker\"}", [](double v) { return v == 1; }));

  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*d, keys::bob()));
  pid_t stun = startedPid(*d, "stun-worker", 1);
  ASSERT_GT(stun, 0);
  ASSERT_EQ(::kill(stun, SIGKILL), 0);
  ASSERT_TRUE(waitFor([&] { return stunPort(*d, 2) > 0; }, Millis(5000))) << d->logText();
  EXPECT_EQ(stunPort(*d, 2), port) << "the same socket, inherited again";
  EXPECT_TRUE(stunExchange(port).has_value());
  EXPECT_TRUE(waitForMetric(*d, "derpd_role_restarts{role=\"stun-worker\"}", [](double v) { return v == 1; },
                            Millis(5000)));
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 11))) << "derp-worker's clients are untouched";
  EXPECT_EQ(childPid(*d, 2), -1);
}

// -stun=false: no stun-worker at all, as derper runs no STUN server.
TEST_F(SupervisorTest, StunOffRunsNoStunWorker) {
  auto args = derpdArgs();
  args.push_back("-stun=false");
  WorkerProcess* d = startDerpd(args);
  ASSERT_NE(d, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  EXPECT_TRUE(pingPong(*a, {1, 2, 3, 4, 5, 6, 7, 8}, Millis(3000), nullptr));
  EXPECT_EQ(startedPid(*d, "stun-worker", 1), -1);
  EXPECT_FALSE(metric(*d, "derpd_role_up{role=\"stun-worker\"}").has_value());
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

TEST_F(SupervisorTest, BadConfigFileNamesTheLine) {
  std::string conf = tmp().file("bad.conf");
  writeFile(conf, "# derpd test\nhostname = derp.example.com\nno-such-key = 1\n");
  int code = 0;
  std::string out = runDerpdExpectingExit({"--config", conf, "-a", "127.0.0.1:0"}, &code);
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
  std::string out = runDerpdExpectingExit(args, &code);
  ::close(*busy);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("Address already in use"), std::string::npos) << out;
}

// A role that cannot start, and a missing certificate at start:
// operator_test.cpp (GiveUpLineNamesTheChildsLastError,
// BadManualCertificateIsOneErrorAndExit78WithNothingForked).

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

namespace derpd::test {
namespace {

// /bootstrap-dns through derpd: the published names are resolved by
// derp-worker's background thread (here from /etc/hosts, read before the
// chroot), served as derper renders them, and counted in /debug/varz.
TEST_F(SupervisorTest, BootstrapDnsPublishesNames) {
  auto args = derpdArgs();
  // The server is never asked: localhost comes from /etc/hosts (as Go: files first).
  args.insert(args.end(), {"-bootstrap-dns-names", "localhost", "--bootstrap-dns-server", "127.0.0.1:9"});
  WorkerProcess* d = startDerpd(args);
  ASSERT_NE(d, nullptr);
  std::string body;
  ASSERT_TRUE(waitFor(
      [&] {
        auto r = httpGet(d->port(), "/bootstrap-dns");
        if (!r.ok() || r->status != 200) return false;
        body = r->body;
        return body.find("127.0.0.1") != std::string::npos;
      },
      Millis(10000)))
      << body;
  EXPECT_EQ(body.rfind("{\n\t\"localhost\": [", 0), 0u) << body;
  auto q = httpGet(d->port(), "/bootstrap-dns?q=localhost");
  ASSERT_TRUE(q.ok()) << q.error();
  EXPECT_EQ(q->body, body) << "an unpublished-set miss falls back to the published body";
  EXPECT_TRUE(waitForMetric(*d, "bootstrap_dns_published_hits", [](double v) { return v >= 1; }));
  EXPECT_TRUE(waitForMetric(*d, "bootstrap_dns_queried_domains", [](double v) { return v == 1; }));
}

}  // namespace
}  // namespace derpd::test
