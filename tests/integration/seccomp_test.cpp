// seccomp (issue: per-role system call allow-lists): started as root, every
// child of derpd ends its sandbox with its role's filter and keeps doing
// its whole job under it (relaying over TLS, mesh dial, admission questions,
// STUN, certificate reload, the monitor's probes); a child that makes a
// forbidden call dies of SIGSYS and derpd restarts it; `seccomp = false`
// turns the filters off; sanitizer builds never install them.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "common/ipc/role.hpp"
#include "common/proc/seccomp.hpp"
#include "common/proto/stun/stun.hpp"
#include "support/admission_fakes.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

namespace fs = std::filesystem;

// "Seccomp:" of /proc/PID/status: 0 none, 2 filter.
std::string seccompMode(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Seccomp:", 0) == 0) {
      auto v = line.substr(8);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return "";
}

// One Tailscale binding request to 127.0.0.1:port; true when answered.
bool stunAnswered(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  stun::TxId txid{};
  for (size_t i = 0; i < txid.size(); ++i) txid[i] = uint8_t(0x50 + i);
  Bytes req;
  stun::appendBindingRequest(req, txid);
  bool ok = false;
  // Loopback UDP does not lose datagrams in practice; a few tries anyway.
  for (int attempt = 0; attempt < 5 && !ok; ++attempt) {
    ::sendto(fd, req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 1000) != 1) continue;
    uint8_t buf[2048];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) continue;
    auto r = stun::parseBindingResponse(ByteView(buf, size_t(n)));
    ok = r.ok() && r->txid == txid;
  }
  ::close(fd);
  return ok;
}


size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

std::string inForce(ipc::Role r) { return "seccomp: " + std::string(ipc::roleName(r)) + " allow-list in force"; }

class SeccompTest : public WorkerTest {
 protected:
  void SetUp() override {
    if (!proc::kSeccompBuild) GTEST_SKIP() << "sanitizer build: no seccomp filters";
  }
  static bool root() { return ::geteuid() == 0; }
};

// Every role under its filter, each doing the work its list was made for.
TEST_F(SeccompTest, EveryChildServesUnderItsFilter) {
  if (!root()) GTEST_SKIP() << "needs root: filters are installed after the privilege drop";
  ASSERT_EQ(::chmod(tmp().path().c_str(), 0755), 0);  // nobody reads the certificates and the CA
  const std::string certDir = tmp().file("certs");
  fs::create_directories(certDir);
  CertOptions first;
  first.leafSerial = 0x5EC1;
  auto certs = makeTestCerts(certDir, "localhost", {"localhost", "127.0.0.1"}, first);
  ASSERT_TRUE(certs.ok()) << certs.error();
  for (const auto& e : fs::directory_iterator(certDir)) ASSERT_EQ(::chmod(e.path().c_str(), 0644), 0);
  ASSERT_EQ(::chmod(certDir.c_str(), 0777), 0);  // cert-agent (nobody) may write in it

  FakeAdmissionServer admit(FakeAdmissionServer::Mode::Allow);
  const int port = reserveLoopbackPort();
  std::vector<std::string> a = derpdArgs();
  a.erase(std::find(a.begin(), a.end(), "-dev"));
  *(std::find(a.begin(), a.end(), "-a") + 1) = "127.0.0.1:" + std::to_string(port);
  a.insert(a.end(), {"-c", writeServerKeyFile(), "-certmode", "manual", "-certdir", certDir, "-hostname",
                     "localhost", "-http-port", "-1", "--state-dir", tmp().path(),
                     // derp-worker dials itself over TLS (and stops: self-connect).
                     "-mesh-psk-file", writeMeshKeyFile(), "-mesh-with", "127.0.0.1:" + std::to_string(port),
                     "--mesh-ca-file", certs->caFile,
                     // mesh-helper POSTs every client to the admission URL.
                     "-verify-client-url", admit.url(),
                     // The monitor probes this server (TLS, STUN, mesh pair).
                     "--monitor", "--monitor-ca-file", certs->caFile, "--monitor-interval", "1s",
                     // ... and serves its status page (bound after the filter).
                     "--monitor-listen", "127.0.0.1:0"});
  WorkerProcess* d = startDerpd(a);
  ASSERT_NE(d, nullptr);
  d->setTlsClientInfo("localhost", certs->caFile);

  for (ipc::Role r : ipc::kChildRoles) {
    SCOPED_TRACE(std::string(ipc::roleName(r)));
    EXPECT_TRUE(d->waitForLog(inForce(r), Millis(10000)));
    pid_t pid = startedPid(*d, std::string(ipc::roleName(r)), 1);
    ASSERT_GT(pid, 0);
    EXPECT_EQ(seccompMode(pid), "2");
  }
  EXPECT_EQ(seccompMode(d->pid()), "0");  // derpd itself forks and execs: never filtered

  // derp-worker: TLS, relaying; mesh-helper: both clients were asked about.
  DERPD_ASSERT_CONNECT(alice, dial(*d, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*d, keys::bob()));
  EXPECT_TRUE(exchange(*alice, *bob, patternBytes(1280, 7)));
  EXPECT_GE(admit.requestCount(), 2u);
  // derp-worker's mesh link reached itself over TLS.
  EXPECT_TRUE(d->waitForLog("detected self-connect", Millis(10000)));
  // stun-worker.
  EXPECT_TRUE(stunAnswered(stunPort(*d)));
  // The monitor: its mesh probe relays through derp-worker, its STUN probe
  // through stun-worker.
  const std::string self = "hostname=\"localhost\",name=\"derp/self/self/self/mesh\",region=\"self\",region_id=\"900\"";
  EXPECT_TRUE(waitForMetric(*d, "derpprobe_result{class=\"derp_mesh\",derp_path=\"single\"," + self + "}",
                            [](double v) { return v == 1; }, Millis(15000)));
  EXPECT_TRUE(waitForMetric(*d,
                            "derpprobe_result{class=\"derp_udp\",hostname=\"localhost\",name=\"derp/self/self/udp\","
                            "region=\"self\",region_id=\"900\"}",
                            [](double v) { return v == 1; }, Millis(10000)));
  // The monitor's own status page.
  ASSERT_TRUE(d->waitForLog("Listening on 127.0.0.1:", Millis(10000)));
  const std::string log = d->logText();
  const uint16_t statusPort = uint16_t(std::stoi(log.substr(log.find("Listening on 127.0.0.1:") + 23)));
  auto health = httpGet(statusPort, "/healthz");
  ASSERT_TRUE(health.ok()) << health.error();
  EXPECT_EQ(health->status, 200);
  // cert-agent: a new certificate written into certdir is read (inotify)
  // and put in service.
  const std::string next = tmp().file("next");
  fs::create_directories(next);
  CertOptions second;
  second.leafSerial = 0x5EC2;
  auto newer = makeTestCerts(next, "localhost", {"localhost", "127.0.0.1"}, second);
  ASSERT_TRUE(newer.ok()) << newer.error();
  for (const char* f : {"localhost.key", "localhost.crt"}) {
    fs::copy_file(next + "/" + f, certDir + "/." + f + ".new");
    ASSERT_EQ(::chmod((certDir + "/." + f + ".new").c_str(), 0644), 0);
    fs::rename(certDir + "/." + f + ".new", certDir + "/" + f);
  }
  EXPECT_TRUE(d->waitForLog("TLS certificate in service for new handshakes: serial 5EC2 ", Millis(10000)));

  // Nobody died on the way.
  EXPECT_EQ(d->logText().find("Bad system call"), std::string::npos);
  for (ipc::Role r : ipc::kChildRoles) {
    EXPECT_EQ(startedPid(*d, std::string(ipc::roleName(r)), 2), -1) << ipc::roleName(r) << " was restarted";
  }
}

// A forbidden system call (the test hook's personality(2)) kills stun-worker
// with SIGSYS; derpd logs it and restarts it, and the new one serves under
// its filter.
TEST_F(SeccompTest, ForbiddenSyscallKillsTheChildAndDerpdRestartsIt) {
  if (!root()) GTEST_SKIP() << "needs root: filters are installed after the privilege drop";
  const std::string killed = "stun-worker killed by signal " + std::to_string(SIGSYS) + " (Bad system call)";
  allowErrorLine(killed);
  allowSignal(SIGSYS);  // the seccomp filter's kill is the point
  std::vector<std::string> a = derpdArgs();
  a.insert(a.end(), {"--stun-forbidden-syscall-after-for-test", "200"});
  WorkerProcess* d = startDerpd(a);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->waitForLog(killed, Millis(10000)));
  const pid_t first = startedPid(*d, "stun-worker", 1);
  ASSERT_GT(first, 0);
  ASSERT_TRUE(waitFor([&] { return startedPid(*d, "stun-worker", 2) > 0; }, Millis(10000)));
  EXPECT_NE(startedPid(*d, "stun-worker", 2), first);
  EXPECT_TRUE(d->waitForLog("test hook: calling personality(2)", Millis(1000)));
  EXPECT_EQ(d->logText().find("personality(2) returned"), std::string::npos);
  // The restarted one (no hook this time) is filtered and answers.
  ASSERT_TRUE(waitFor([&] { return countOf(d->logText(), inForce(ipc::Role::StunWorker)) >= 2; }, Millis(10000)));
  ASSERT_TRUE(waitFor([&] { return stunPort(*d, 2) != 0; }, Millis(10000)));
  EXPECT_TRUE(stunAnswered(stunPort(*d, 2)));
  EXPECT_EQ(seccompMode(startedPid(*d, "stun-worker", 2)), "2");
  // derp-worker was not touched.
  EXPECT_EQ(startedPid(*d, "derp-worker", 2), -1);
  DERPD_ASSERT_CONNECT(c, dial(*d, keys::alice()));
  EXPECT_TRUE(pingPong(*c, {5, 4, 3, 2, 1, 0, 1, 2}));
}

// seccomp = false: no filter anywhere, said in each child's log; the same
// forbidden call now simply returns.
TEST_F(SeccompTest, SwitchedOffByTheSetting) {
  std::vector<std::string> a = derpdArgs();
  a.insert(a.end(), {"--seccomp=false", "--stun-forbidden-syscall-after-for-test", "100"});
  WorkerProcess* d = startDerpd(a);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->waitForLog("stun-worker is ready", Millis(10000)));
  for (const char* role : {"derp-worker", "stun-worker"}) {
    SCOPED_TRACE(role);
    pid_t pid = startedPid(*d, role, 1);
    ASSERT_GT(pid, 0);
    EXPECT_EQ(seccompMode(pid), "0");
  }
  EXPECT_EQ(countOf(d->logText(), "seccomp: off (seccomp = false)"), 2u);
  EXPECT_TRUE(d->waitForLog("test hook: personality(2) returned", Millis(5000)));
  EXPECT_TRUE(stunAnswered(stunPort(*d)));
  EXPECT_EQ(startedPid(*d, "stun-worker", 2), -1);
}

// Not root: nothing is dropped, so nothing is filtered; each child says why.
TEST_F(SeccompTest, NoFilterWithoutPrivilegeDrop) {
  if (root()) GTEST_SKIP() << "as root the privileges are dropped";
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->waitForLog("stun-worker is ready", Millis(10000)));
  EXPECT_EQ(countOf(d->logText(), "seccomp: off (no privilege drop"), 2u);
}

// Sanitizer builds: derpd says once that the filters are off, each child
// says so too, and everything runs.
class SeccompSanitizerTest : public WorkerTest {};

TEST_F(SeccompSanitizerTest, SanitizerBuildsRunWithoutFilters) {
  if (proc::kSeccompBuild) GTEST_SKIP() << "not a sanitizer build";
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->waitForLog("stun-worker is ready", Millis(10000)));
  EXPECT_EQ(countOf(d->logText(), "seccomp: off in this sanitizer build"), 1u);
  EXPECT_EQ(countOf(d->logText(), "seccomp: off (sanitizer build)"), 2u);
  EXPECT_EQ(seccompMode(startedPid(*d, "stun-worker", 1)), "0");
}

}  // namespace
}  // namespace derpd::test
