// Mesh-only frames (PROTOCOL.md §5.7, §5.3, §6): WatchConns, PeerPresent and
// PeerGone streaming, ForwardPacket, ClosePeer, and their refusal for
// clients without the mesh key.
#include <array>
#include <map>
#include <string>
#include <vector>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

const std::array<uint8_t, 16> kLoopbackV4Mapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};

bool isPeerGoneFor(const client::Message& m, const crypto::NodePublic& k) {
  auto* g = std::get_if<client::PeerGone>(&m);
  return g && g->key == k;
}

bool isPresenceFor(const client::Message& m, const crypto::NodePublic& k) {
  if (auto* p = std::get_if<client::PeerPresent>(&m)) return p->info.key == k;
  return isPeerGoneFor(m, k);
}

class MeshTest : public WorkerTest {
 protected:
  void SetUp() override {
    WorkerConfig cfg;
    cfg.mesh = true;
    w_ = startWorker(cfg);
    ASSERT_NE(w_, nullptr);
  }
  Result<std::unique_ptr<client::Client>> dialMesh(const crypto::NodePrivate& key) {
    return dial(*w_, key, [](client::ClientOptions& o) { o.meshKey = kMeshKey; });
  }
  ::testing::AssertionResult expectPresent(const client::PeerPresent& p, const client::Client& c, uint8_t flags) {
    if (!p.info.hasAddr) return ::testing::AssertionFailure() << "PeerPresent without address";
    if (p.info.ip16 != kLoopbackV4Mapped) return ::testing::AssertionFailure() << "IP is not ::ffff:127.0.0.1";
    if (p.info.port != localPort(c)) {
      return ::testing::AssertionFailure() << "port " << p.info.port << ", client's port " << localPort(c);
    }
    if (p.info.flags != flags) {
      return ::testing::AssertionFailure() << "flags " << int(p.info.flags) << ", want " << int(flags);
    }
    return ::testing::AssertionSuccess();
  }
  WorkerProcess* w_ = nullptr;
};

TEST_F(MeshTest, WatchConnsForwardPacketClosePeer) {
  DERPD_ASSERT_CONNECT(alice, dial(*w_, keys::alice()));
  DERPD_ASSERT_CONNECT(prober, dial(*w_, keys::prober(), [](client::ClientOptions& o) { o.isProber = true; }));
  ASSERT_TRUE(waitForMetric(*w_, "derp_current_connections", [](double v) { return v == 2; }));
  DERPD_ASSERT_CONNECT(m, dialMesh(keys::mesh()));
  ASSERT_TRUE(m->watchConns().ok());

  // The initial flood: every connected client including the watcher, in any order.
  std::map<crypto::NodePublic, client::PeerPresent> present;
  for (int i = 0; i < 10 && present.size() < 3; i++) {
    auto p = recvUntil<client::PeerPresent>(*m, kIoTimeout);
    ASSERT_TRUE(p.ok()) << "after " << present.size() << " PeerPresent: " << p.error();
    EXPECT_EQ(present.count(p->info.key), 0u) << "duplicate PeerPresent";
    present[p->info.key] = *p;
  }
  ASSERT_EQ(present.size(), 3u);
  ASSERT_EQ(present.count(alice->publicKey()), 1u);
  ASSERT_EQ(present.count(prober->publicKey()), 1u);
  ASSERT_EQ(present.count(m->publicKey()), 1u);
  EXPECT_TRUE(expectPresent(present[alice->publicKey()], *alice, derp::kPeerPresentIsRegular));
  EXPECT_TRUE(expectPresent(present[prober->publicKey()], *prober, derp::kPeerPresentIsProber));
  EXPECT_TRUE(expectPresent(present[m->publicKey()], *m, derp::kPeerPresentIsMeshPeer));
  EXPECT_TRUE(waitForMetric(*w_, "derp_watchers", [](double v) { return v == 1; }));

  // A newcomer is announced.
  DERPD_ASSERT_CONNECT(carol, dial(*w_, keys::carol()));
  auto pc = recvUntil<client::PeerPresent>(*m, kIoTimeout);
  ASSERT_TRUE(pc.ok()) << pc.error();
  EXPECT_EQ(pc->info.key, carol->publicKey());
  EXPECT_TRUE(expectPresent(*pc, *carol, derp::kPeerPresentIsRegular));

  // ForwardPacket: delivered locally with the frame's source key.
  Bytes data = patternBytes(1200, 1);
  ASSERT_TRUE(m->forwardPacket(keys::fwdsrc().publicKey(), alice->publicKey(), data).ok());
  EXPECT_TRUE(expectPacket(*alice, keys::fwdsrc().publicKey(), data));
  Bytes big = patternBytes(65536, 2);
  ASSERT_TRUE(m->forwardPacket(keys::bob().publicKey(), carol->publicKey(), big).ok());
  EXPECT_TRUE(expectPacket(*carol, keys::bob().publicKey(), big));
  EXPECT_TRUE(waitForMetric(*w_, "derp_packets_forwarded_in", [](double v) { return v == 2; }));
  EXPECT_TRUE(waitForMetric(*w_, "derp_packets_forwarded_out", [](double v) { return v == 0; }));

  // ForwardPacket to an absent key: dropped as unknown_dest_on_fwd; a disco
  // one gets PeerGone(NotHere) back on the mesh link.
  ASSERT_TRUE(m->forwardPacket(keys::fwdsrc().publicKey(), keys::absent().publicKey(), patternBytes(80, 3)).ok());
  ASSERT_TRUE(m->forwardPacket(keys::fwdsrc().publicKey(), keys::absent().publicKey(), discoPacket()).ok());
  auto nh = recvUntil<client::PeerGone>(*m, kIoTimeout);
  ASSERT_TRUE(nh.ok()) << nh.error();
  EXPECT_EQ(nh->key, keys::absent().publicKey());
  EXPECT_EQ(nh->reason, derp::PeerGoneReason::NotHere);
  EXPECT_TRUE(waitForMetric(*w_, "derp_packets_dropped_reason{reason=\"unknown_dest_on_fwd\"}",
                            [](double v) { return v == 2; }));

  // A second connection for alice is announced; its leaving is not a PeerGone
  // while the first one stays.
  {
    DERPD_ASSERT_CONNECT(alice2, dial(*w_, keys::alice()));
    auto p2 = recvUntil<client::PeerPresent>(*m, kIoTimeout);
    ASSERT_TRUE(p2.ok()) << p2.error();
    EXPECT_EQ(p2->info.key, alice->publicKey());
    EXPECT_TRUE(expectPresent(*p2, *alice2, derp::kPeerPresentIsRegular));
  }
  EXPECT_TRUE(waitForMetric(*w_, "derp_current_connections", [](double v) { return v == 4; }));
  EXPECT_TRUE(expectQuiet(*m, Millis(300),
                          [&](const client::Message& msg) { return isPresenceFor(msg, alice->publicKey()); }));

  // ClosePeer closes every connection of that key; watchers hear PeerGone.
  ASSERT_TRUE(m->closePeer(prober->publicKey()).ok());
  EXPECT_TRUE(expectClosed(*prober));
  auto gp = recvUntil<client::PeerGone>(*m, kIoTimeout);
  ASSERT_TRUE(gp.ok()) << gp.error();
  EXPECT_EQ(gp->key, keys::prober().publicKey());
  EXPECT_EQ(gp->reason, derp::PeerGoneReason::Disconnected);
  EXPECT_TRUE(waitForMetric(*w_, "derpd_conn_closes{reason=\"close_peer\"}", [](double v) { return v == 1; }));

  // ClosePeer of an absent key does nothing.
  ASSERT_TRUE(m->closePeer(keys::absent().publicKey()).ok());

  // A client leaving is streamed as PeerGone(Disconnected).
  carol->close();
  auto gc = recvUntil<client::PeerGone>(*m, kIoTimeout);
  ASSERT_TRUE(gc.ok()) << gc.error();
  EXPECT_EQ(gc->key, keys::carol().publicKey());
  EXPECT_EQ(gc->reason, derp::PeerGoneReason::Disconnected);

  // The mesh link itself still works as a client.
  ASSERT_TRUE(pingPong(*m, {1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_TRUE(exchange(*m, *alice, patternBytes(500, 4)));
  EXPECT_FALSE(alice->closed());
}

// Malformed mesh frames close the mesh connection too (§5.2).
TEST_F(MeshTest, MalformedMeshFramesClose) {
  DERPD_ASSERT_CONNECT(alice, dial(*w_, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w_, keys::bob()));
  {
    DERPD_ASSERT_CONNECT(m, dialMesh(keys::mesh()));
    sendRefusedFrame(*m, rawFrame(0x10, Bytes{0}));  // WatchConns with a payload
    EXPECT_TRUE(expectClosed(*m));
  }
  {
    DERPD_ASSERT_CONNECT(m, dialMesh(keys::mesh()));
    sendRefusedFrame(*m, rawFrame(0x11, patternBytes(31, 1)));  // ClosePeer, short
    EXPECT_TRUE(expectClosed(*m));
  }
  {
    DERPD_ASSERT_CONNECT(m, dialMesh(keys::mesh()));
    // ForwardPacket shorter than two keys.
    sendRefusedFrame(*m, rawFrame(0x0a, concat({keys::fwdsrc().publicKey().bytes(), patternBytes(31, 2)})));
    EXPECT_TRUE(expectClosed(*m));
  }
  {
    DERPD_ASSERT_CONNECT(m, dialMesh(keys::mesh()));
    // ForwardPacket with a 65537-byte packet.
    sendRefusedFrame(*m, rawFrame(0x0a, concat({keys::fwdsrc().publicKey().bytes(), alice->publicKey().bytes(),
                                                 patternBytes(65537, 3)})));
    EXPECT_TRUE(expectClosed(*m));
  }
  EXPECT_TRUE(exchange(*alice, *bob, patternBytes(1000, 5)));
}

// ClosePeer closes every connection of the key (§5.7), duplicates included.
TEST_F(MeshTest, ClosePeerClosesAllConnectionsOfKey) {
  DERPD_ASSERT_CONNECT(a1, dial(*w_, keys::alice()));
  ASSERT_TRUE(waitForMetric(*w_, "derp_current_connections", [](double v) { return v == 1; }));
  DERPD_ASSERT_CONNECT(a2, dial(*w_, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w_, keys::bob()));
  DERPD_ASSERT_CONNECT(m, dialMesh(keys::mesh()));
  ASSERT_TRUE(waitForMetric(*w_, "derp_current_connections", [](double v) { return v == 4; }));
  ASSERT_TRUE(m->closePeer(keys::alice().publicKey()).ok());
  EXPECT_TRUE(expectClosed(*a1));
  EXPECT_TRUE(expectClosed(*a2));
  EXPECT_TRUE(waitForMetric(*w_, "derp_current_connections", [](double v) { return v == 2; }));
  EXPECT_TRUE(waitForMetric(*w_, "derpd_conn_closes{reason=\"close_peer\"}", [](double v) { return v == 2; }));
  EXPECT_TRUE(exchange(*m, *bob, patternBytes(100, 1)));
}

// WatchConns from a link using the server's own key (a node meshing with
// itself) is ignored (§5.7): no watcher, no PeerPresent, the link stays up.
TEST_F(MeshTest, WatchConnsWithServersOwnKeyIgnored) {
  DERPD_ASSERT_CONNECT(alice, dial(*w_, keys::alice()));
  DERPD_ASSERT_CONNECT(self, dialMesh(keys::server()));
  ASSERT_TRUE(self->watchConns().ok());
  std::vector<client::Message> skipped;
  ASSERT_TRUE(pingPong(*self, {1, 2, 3, 4, 5, 6, 7, 8}, kIoTimeout, &skipped));
  for (auto& m : skipped) EXPECT_FALSE(std::holds_alternative<client::PeerPresent>(m)) << describe(m);
  EXPECT_TRUE(expectQuiet(*self, Millis(300), [](const client::Message& m) {
    return std::holds_alternative<client::PeerPresent>(m);
  }));
  EXPECT_TRUE(waitForMetric(*w_, "derp_watchers", [](double v) { return v == 0; }));
}

class Ipv6Test : public WorkerTest {};

// Listening on [::1]: relaying works, and PeerPresent carries the client's
// IPv6 address as is (§3; IPv4 would be ::ffff:a.b.c.d).
TEST_F(Ipv6Test, RelayAndPeerPresent) {
  WorkerConfig cfg;
  cfg.mesh = true;
  cfg.listen = "[::1]:0";
  WorkerProcess* w = startWorker(cfg);
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(w->ip(), "::1");
  DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));
  EXPECT_TRUE(exchange(*alice, *bob, patternBytes(65536, 1)));
  DERPD_ASSERT_CONNECT(m, dial(*w, keys::mesh(), [](client::ClientOptions& o) { o.meshKey = kMeshKey; }));
  ASSERT_TRUE(m->watchConns().ok());
  const std::array<uint8_t, 16> loopback6 = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  int seen = 0;
  for (int i = 0; i < 10 && seen < 3; i++) {
    auto p = recvUntil<client::PeerPresent>(*m, kIoTimeout);
    ASSERT_TRUE(p.ok()) << p.error();
    seen++;
    EXPECT_TRUE(p->info.hasAddr);
    EXPECT_EQ(p->info.ip16, loopback6);
    if (p->info.key == alice->publicKey()) {
      EXPECT_EQ(p->info.port, localPort(*alice));
      EXPECT_EQ(p->info.flags, derp::kPeerPresentIsRegular);
    }
  }
  EXPECT_EQ(seen, 3);
  auto v = varz(*w);
  ASSERT_TRUE(v.ok()) << v.error();
  EXPECT_EQ((*v)["derp_current_connections"], 3);
}

// Without the mesh key (absent or wrong), WatchConns / ClosePeer /
// ForwardPacket close the sender's connection and affect nobody else.
enum class Credential { None, WrongKey };
enum class MeshFrame { WatchConns, ClosePeer, ForwardPacket };
using AuthParam = std::tuple<Credential, MeshFrame>;

class MeshAuthTest : public MeshTest, public ::testing::WithParamInterface<AuthParam> {};

TEST_P(MeshAuthTest, RefusedWithoutMeshKey) {
  const Credential cred = std::get<0>(GetParam());
  const MeshFrame frame = std::get<1>(GetParam());
  DERPD_ASSERT_CONNECT(alice, dial(*w_, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w_, keys::bob()));
  std::string wrong = kMeshKey;
  wrong[63] = wrong[63] == '0' ? '1' : '0';
  DERPD_ASSERT_CONNECT(x, dial(*w_, keys::carol(), [&](client::ClientOptions& o) {
    if (cred == Credential::WrongKey) o.meshKey = wrong;
  }));
  switch (frame) {
    case MeshFrame::WatchConns:
      ASSERT_TRUE(x->watchConns().ok());
      break;
    case MeshFrame::ClosePeer:
      ASSERT_TRUE(x->closePeer(alice->publicKey()).ok());
      break;
    case MeshFrame::ForwardPacket:
      ASSERT_TRUE(x->forwardPacket(keys::fwdsrc().publicKey(), alice->publicKey(), patternBytes(100, 1)).ok());
      break;
  }
  std::vector<client::Message> seen;
  EXPECT_TRUE(expectClosed(*x, kIoTimeout, &seen));
  for (auto& m : seen) EXPECT_FALSE(std::holds_alternative<client::PeerPresent>(m)) << describe(m);
  // alice is still connected and gets nothing from fwdsrc: the next packet is bob's.
  EXPECT_TRUE(exchange(*bob, *alice, patternBytes(1280, 2)));
  EXPECT_FALSE(alice->closed());
  EXPECT_TRUE(waitForMetric(*w_, "derp_watchers", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*w_, "derp_packets_forwarded_in", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*w_, "derp_current_connections", [](double v) { return v == 2; }));
}

INSTANTIATE_TEST_SUITE_P(Frames, MeshAuthTest,
                         ::testing::Combine(::testing::Values(Credential::None, Credential::WrongKey),
                                            ::testing::Values(MeshFrame::WatchConns, MeshFrame::ClosePeer,
                                                              MeshFrame::ForwardPacket)),
                         [](const ::testing::TestParamInfo<AuthParam>& i) {
                           std::string s = std::get<0>(i.param) == Credential::None ? "NoKey" : "WrongKey";
                           switch (std::get<1>(i.param)) {
                             case MeshFrame::WatchConns:
                               return s + "WatchConns";
                             case MeshFrame::ClosePeer:
                               return s + "ClosePeer";
                             case MeshFrame::ForwardPacket:
                               return s + "ForwardPacket";
                           }
                           return s;
                         });

}  // namespace
}  // namespace derpd::test
