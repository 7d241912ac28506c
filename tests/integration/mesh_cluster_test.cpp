// Outbound mesh (PROTOCOL.md §6) between real derpd processes on loopback:
// three nodes that each dial every -mesh-with entry (their own included),
// clients on different nodes relaying through ForwardPacket, PeerGone when a
// key leaves the region, a killed node coming back, and an unresponsive peer
// that must not hold up local relaying.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::string kUp = "derpd_mesh_links{state=\"up\"}";
const std::string kSelf = "derpd_mesh_links{state=\"self\"}";

class MeshClusterTest : public WorkerTest {
 protected:
  void SetUp() override {
    WorkerTest::SetUp();
    certDir_ = tmp().file("certs");
    fs::create_directories(certDir_);
    // One CA; the leaf names localhost and 127.0.0.1 (the -mesh-with hosts).
    auto c = makeTestCerts(certDir_, "localhost", {"localhost", "127.0.0.1"});
    ASSERT_TRUE(c.ok()) << c.error();
    caFile_ = c->caFile;
    if (::geteuid() == 0) {
      // cert-agent runs as nobody: it must read certdir.
      ASSERT_EQ(::chmod(tmp().path().c_str(), 0755), 0);
      for (const auto& e : fs::directory_iterator(certDir_)) ::chmod(e.path().c_str(), 0644);
      ::chmod(certDir_.c_str(), 0755);
    }
    meshKeyFile_ = writeMeshKeyFile();
  }

  // Node n (0-based) of a cluster on `ports`, meshing with every entry of
  // `meshWith`; its key file lives in its own directory (made on first start,
  // kept across restarts).
  WorkerProcess* startNode(int n, int port, const std::string& meshWith,
                           const std::vector<std::string>& extra = {}) {
    std::string dir = tmp().file("node" + std::to_string(n));
    fs::create_directories(dir);
    std::vector<std::string> a = derpdArgs();
    a.erase(std::find(a.begin(), a.end(), "-dev"));
    *(std::find(a.begin(), a.end(), "-a") + 1) = "127.0.0.1:" + std::to_string(port);
    *(std::find(a.begin(), a.end(), "--runtime-dir") + 1) = dir + "/run";
    a.insert(a.end(), {"-c", dir + "/derper.key", "-certmode", "manual", "-certdir", certDir_, "-hostname",
                       "localhost", "-http-port", "-1", "-stun=false", "--state-dir", dir, "-mesh-psk-file",
                       meshKeyFile_, "-mesh-with", meshWith, "--mesh-ca-file", caFile_});
    a.insert(a.end(), extra.begin(), extra.end());
    WorkerProcess* w = startDerpd(a);
    if (w) w->setTlsClientInfo("localhost", caFile_);
    return w;
  }

  static std::string entries(const std::vector<int>& ports) {
    std::string s;
    for (int p : ports) s += (s.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(p);
    return s;
  }

  std::string certDir_, caFile_, meshKeyFile_;
};

// Three nodes, each also listing itself: every node ends with two links up
// and one skipped as itself; clients on different nodes reach each other.
TEST_F(MeshClusterTest, ThreeNodesRelayAcrossTheMeshAndPeerGoneFollowsKeys) {
  std::vector<int> ports = {reserveLoopbackPort(), reserveLoopbackPort(), reserveLoopbackPort()};
  const std::string all = entries(ports);
  std::vector<WorkerProcess*> nodes;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(startNode(i, ports[i], all));
    ASSERT_NE(nodes.back(), nullptr);
  }
  for (WorkerProcess* n : nodes) {
    EXPECT_TRUE(waitForMetric(*n, kUp, [](double v) { return v == 2; }, Millis(15000)));
    EXPECT_TRUE(waitForMetric(*n, kSelf, [](double v) { return v == 1; }));
  }
  DERPD_ASSERT_CONNECT(alice, dial(*nodes[0], keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*nodes[1], keys::bob()));
  DERPD_ASSERT_CONNECT(carol, dial(*nodes[2], keys::carol()));
  // Every node learns what its peers announce (as derper): their clients
  // and their inbound mesh connections, its own key included. Local: one
  // client and two peers' links; remote: two clients and its own key.
  for (WorkerProcess* n : nodes) {
    EXPECT_TRUE(waitForMetric(*n, "derp_clients_remote", [](double v) { return v == 3; }));
    EXPECT_TRUE(waitForMetric(*n, "derp_clients_total", [](double v) { return v == 6; }));
  }
  ASSERT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("a<->b"))));
  ASSERT_TRUE(exchange(*bob, *carol, asBytes(std::string_view("b<->c"))));
  ASSERT_TRUE(exchange(*carol, *alice, asBytes(std::string_view("c<->a"))));
  EXPECT_TRUE(waitForMetric(*nodes[0], "derp_packets_forwarded_out", [](double v) { return v >= 2; }));
  EXPECT_TRUE(waitForMetric(*nodes[0], "derp_packets_forwarded_in", [](double v) { return v >= 2; }));

  // bob leaves: alice and carol (who got packets from bob, through their own
  // nodes) hear PeerGone(bob) once bob is gone from the region.
  bob->close();
  bob.reset();
  auto gone = [&](const client::PeerGone& g) { return g.key == keys::bob().publicKey(); };
  auto ga = recvUntil<client::PeerGone>(*alice, kIoTimeout, gone);
  ASSERT_TRUE(ga.ok()) << ga.error();
  EXPECT_EQ(ga->reason, derp::PeerGoneReason::Disconnected);
  auto gc = recvUntil<client::PeerGone>(*carol, kIoTimeout, gone);
  ASSERT_TRUE(gc.ok()) << gc.error();
  for (WorkerProcess* n : nodes) {
    EXPECT_TRUE(waitForMetric(*n, "derp_clients_total", [](double v) { return v == 5; }));
  }
  // alice and carol still reach each other.
  EXPECT_TRUE(exchange(*alice, *carol, asBytes(std::string_view("still meshed"))));
}

// A node killed with SIGKILL and started again on its port: the others'
// links come back within 10 s (5 s retry) and traffic resumes; the keys
// learned from the dead node are dropped meanwhile.
TEST_F(MeshClusterTest, KilledNodeRejoinsWithinTenSeconds) {
  std::vector<int> ports = {reserveLoopbackPort(), reserveLoopbackPort()};
  const std::string all = entries(ports);
  WorkerProcess* a = startNode(0, ports[0], all);
  ASSERT_NE(a, nullptr);
  WorkerProcess* b = startNode(1, ports[1], all);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(waitForMetric(*a, kUp, [](double v) { return v == 1; }, Millis(15000)));
  ASSERT_TRUE(waitForMetric(*b, kUp, [](double v) { return v == 1; }, Millis(15000)));
  DERPD_ASSERT_CONNECT(alice, dial(*a, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*b, keys::bob()));
  // Remote at A: bob, and A's own key (its link as B's client).
  ASSERT_TRUE(waitForMetric(*a, "derp_clients_remote", [](double v) { return v == 2; }));
  ASSERT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("before"))));

  const pid_t bWorker = startedPid(*b, "derp-worker", 1);
  ASSERT_GT(bWorker, 0);
  b->kill9();
  // alice received from bob through the link: when the link breaks, bob is
  // gone from the region for node A.
  auto g = recvUntil<client::PeerGone>(*alice, Millis(10000),
                                       [](const client::PeerGone& p) { return p.key == keys::bob().publicKey(); });
  ASSERT_TRUE(g.ok()) << g.error();
  EXPECT_TRUE(waitForMetric(*a, "derp_clients_remote", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*a, kUp, [](double v) { return v == 0; }));
  bob.reset();

  // The orphaned derp-worker leaves with its derpd (parent-death signal,
  // then its drain); the listening port is free once it is gone.
  ASSERT_TRUE(waitFor([&] { return ::kill(bWorker, 0) != 0; }, Millis(15000)));
  WorkerProcess* b2 = startNode(1, ports[1], all);
  ASSERT_NE(b2, nullptr);
  const auto restarted = Clock::now();
  ASSERT_TRUE(waitForMetric(*a, kUp, [](double v) { return v == 1; }, Millis(10000)));
  ASSERT_TRUE(waitForMetric(*b2, kUp, [](double v) { return v == 1; }, Millis(10000)));
  EXPECT_LT(Clock::now() - restarted, std::chrono::seconds(10));
  DERPD_ASSERT_CONNECT(bob2, dial(*b2, keys::bob()));
  ASSERT_TRUE(waitForMetric(*a, "derp_clients_remote", [](double v) { return v == 2; }));
  EXPECT_TRUE(exchange(*alice, *bob2, asBytes(std::string_view("after"))));
  EXPECT_TRUE(waitForMetric(*a, "derpd_mesh_link_connects", [](double v) { return v >= 2; }));
  allowErrorLine("derp-worker exited");  // derpd B's log, if it saw its child die first
}

// A -mesh-with peer that accepts TCP but never completes TLS, and one that
// refuses: local clients relay at once; the links keep retrying.
TEST_F(MeshClusterTest, UnresponsivePeerDoesNotDelayLocalRelay) {
  // A listening socket nobody accepts on: the kernel completes the TCP
  // handshake, and the TLS ClientHello is never answered.
  int silent = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(silent, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::listen(silent, 16), 0);
  ASSERT_EQ(::getsockname(silent, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  const int silentPort = ntohs(sa.sin_port);
  const int refusedPort = reserveLoopbackPort();

  const int port = reserveLoopbackPort();
  WorkerProcess* a = startNode(0, port, entries({silentPort, refusedPort, port}));
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(waitForMetric(*a, "derpd_mesh_links{state=\"dialing\"}", [](double v) { return v == 1; }));
  DERPD_ASSERT_CONNECT(alice, dial(*a, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*a, keys::bob()));
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(exchange(*alice, *bob, asBytes("local " + std::to_string(i)), Millis(2000)));
  }
  EXPECT_TRUE(waitForMetric(*a, kSelf, [](double v) { return v == 1; }));
  // The refused peer is retried every 5 s; the silent one gives up after the
  // 10 s dial budget and retries too.
  EXPECT_TRUE(a->waitForLog("connect 127.0.0.1:" + std::to_string(refusedPort), Millis(10000)));
  EXPECT_TRUE(a->waitForLog("no answer within 10 s", Millis(15000)));
  ::close(silent);
}

}  // namespace
}  // namespace derpd::test
