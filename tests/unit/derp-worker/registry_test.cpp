// Registry::checkConsistency (/debug/check): okay for a consistent
// registry, one message per broken invariant otherwise. Connections are
// built without sockets (fd -1) on a loop that never runs; they all carry
// the zero key (the key is set by the DERP handshake), so two of them form
// a duplicate set.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "client_conn.hpp"
#include "loop.hpp"
#include "registry.hpp"
#include "server.hpp"

namespace derpd::worker {
namespace {

bool hasError(const std::vector<std::string>& errs, const std::string& needle) {
  for (const auto& e : errs) {
    if (e.find(needle) != std::string::npos) return true;
  }
  return false;
}

std::string joined(const std::vector<std::string>& errs) {
  std::string s;
  for (const auto& e : errs) s += e + "\n";
  return s;
}

class RegistryCheck : public ::testing::Test {
 protected:
  RegistryCheck() : server_(config()), loop_(server_, 0) {}
  static ServerConfig config() {
    ServerConfig cfg;
    cfg.privateKey = crypto::NodePrivate::generate();
    return cfg;
  }
  std::unique_ptr<Conn> conn(uint64_t num) {
    sockaddr_storage peer{};
    peer.ss_family = AF_INET;
    return std::make_unique<Conn>(loop_, -1, peer, num, nullptr, false);
  }
  Server server_;
  Loop loop_;
};

TEST_F(RegistryCheck, EmptySingleAndDuplicateSetsAreConsistent) {
  Registry& reg = server_.registry();
  EXPECT_TRUE(reg.checkConsistency().empty());
  auto a = conn(1), b = conn(2), c = conn(3);
  reg.add(a.get());
  EXPECT_TRUE(reg.checkConsistency().empty()) << joined(reg.checkConsistency());
  reg.add(b.get());  // same (zero) key: a duplicate set
  reg.add(c.get());
  EXPECT_TRUE(reg.checkConsistency().empty()) << joined(reg.checkConsistency());
  EXPECT_EQ(server_.gauges().dupClientConns.load(), 3);
  reg.noteActivity(a.get());
  reg.remove(c.get());
  EXPECT_TRUE(reg.checkConsistency().empty()) << joined(reg.checkConsistency());
  reg.remove(b.get());
  EXPECT_TRUE(reg.checkConsistency().empty()) << joined(reg.checkConsistency());
  reg.remove(a.get());
  EXPECT_TRUE(reg.checkConsistency().empty()) << joined(reg.checkConsistency());
}

TEST_F(RegistryCheck, GaugeDriftIsReported) {
  Registry& reg = server_.registry();
  auto a = conn(1), b = conn(2);
  reg.add(a.get());
  reg.add(b.get());
  ServerGauges& g = server_.gauges();
  g.currentConnections.fetch_add(1);
  g.clientsLocal.fetch_add(2);
  g.dupClientKeys.fetch_sub(1);
  g.dupClientConns.fetch_add(5);
  g.watchers.fetch_add(1);
  g.currentHomeConnections.fetch_sub(1);
  auto errs = reg.checkConsistency();
  EXPECT_TRUE(hasError(errs, "current_connections = 3 != 2 in the registry")) << joined(errs);
  EXPECT_TRUE(hasError(errs, "clients_local = 3 != 1 in the registry")) << joined(errs);
  EXPECT_TRUE(hasError(errs, "current_dup_client_keys = 0 != 1 in the registry")) << joined(errs);
  EXPECT_TRUE(hasError(errs, "current_dup_client_conns = 7 != 2 in the registry")) << joined(errs);
  EXPECT_TRUE(hasError(errs, "watchers = 1 != 0 in the registry")) << joined(errs);
  EXPECT_TRUE(hasError(errs, "current_home_connections = -1 < 0")) << joined(errs);
  EXPECT_EQ(errs.size(), 6u) << joined(errs);
  g.currentConnections.fetch_sub(1);
  g.clientsLocal.fetch_sub(2);
  g.dupClientKeys.fetch_add(1);
  g.dupClientConns.fetch_sub(5);
  g.watchers.fetch_sub(1);
  g.currentHomeConnections.fetch_add(1);
  EXPECT_TRUE(reg.checkConsistency().empty());
  reg.remove(a.get());
  reg.remove(b.get());
}

TEST_F(RegistryCheck, DuplicateFlagsAndClosedConnectionsAreReported) {
  Registry& reg = server_.registry();
  auto a = conn(1), b = conn(2);
  reg.add(a.get());
  reg.add(b.get());
  {
    std::unique_lock lk(reg.mu);  // the flag is guarded by the registry lock
    a->regIsDup_ = false;
  }
  auto errs = reg.checkConsistency();
  EXPECT_TRUE(hasError(errs, "connection 1 (key ")) << joined(errs);
  EXPECT_TRUE(hasError(errs, "duplicate flag clear with 2 connection(s) for the key")) << joined(errs);
  {
    std::unique_lock lk(reg.mu);
    a->regIsDup_ = true;
  }
  EXPECT_TRUE(reg.checkConsistency().empty());
  // A connection that closed without leaving the registry (this one was
  // never registered through its handshake, so close() does not remove it).
  b->close(CloseReason::Shutdown);
  errs = reg.checkConsistency();
  EXPECT_TRUE(hasError(errs, "connection 2 (key ")) << joined(errs);
  EXPECT_TRUE(hasError(errs, ") is closed but still registered")) << joined(errs);
  EXPECT_EQ(errs.size(), 1u) << joined(errs);
  reg.remove(a.get());
  reg.remove(b.get());
  EXPECT_TRUE(reg.checkConsistency().empty());
}

TEST_F(RegistryCheck, ServerConsistencyCheckIsTheRegistrys) {
  auto a = conn(1);
  server_.registry().add(a.get());
  EXPECT_TRUE(server_.consistencyCheck().empty());
  server_.gauges().currentConnections.fetch_add(1);
  EXPECT_EQ(server_.consistencyCheck(), server_.registry().checkConsistency());
  EXPECT_FALSE(server_.consistencyCheck().empty());
  server_.gauges().currentConnections.fetch_sub(1);
  server_.registry().remove(a.get());
}

// ---- mesh forwarders (PROTOCOL.md §6; derper's AddPacketForwarder,
// RemovePacketForwarder and multiForwarder). The links are never started:
// the registry only keeps and compares their addresses.
class RegistryForwarders : public RegistryCheck {
 protected:
  RegistryForwarders()
      : l1_(loop_, host("a"), nullptr), l2_(loop_, host("b"), nullptr), l3_(loop_, host("c"), nullptr) {}
  static net::MeshHost host(const std::string& name) {
    net::MeshHost h;
    h.entry = h.host = h.dialHost = h.authority = name;
    return h;
  }
  MeshLink* route(const NodePublic& k) {
    std::shared_lock lk(server_.registry().mu);
    return server_.registry().lookupLocked(k).forwarder;
  }
  MeshLink l1_, l2_, l3_;
};

TEST_F(RegistryForwarders, EarliestRegisteredLinkIsUsedUntilItGoes) {
  Registry& reg = server_.registry();
  const NodePublic k = crypto::NodePrivate::generate().publicKey();
  EXPECT_EQ(route(k), nullptr);
  reg.addForwarder(k, &l1_);
  reg.addForwarder(k, &l1_);  // a repeated announcement changes nothing
  EXPECT_EQ(server_.gauges().multiForwarderCreated.load(), 0u);
  reg.addForwarder(k, &l2_);
  reg.addForwarder(k, &l3_);
  EXPECT_EQ(server_.gauges().multiForwarderCreated.load(), 1u);
  EXPECT_EQ(route(k), &l1_);
  reg.removeForwarder(k, &l2_);  // not the one in use
  EXPECT_EQ(route(k), &l1_);
  reg.removeForwarder(k, &l1_);
  EXPECT_EQ(route(k), &l3_);
  EXPECT_EQ(server_.gauges().multiForwarderDeleted.load(), 1u);
  reg.addForwarder(k, &l1_);  // back, but after l3
  EXPECT_EQ(route(k), &l3_);
  reg.removeForwarders({k}, &l3_);  // l3's link broke
  EXPECT_EQ(route(k), &l1_);
  reg.removeForwarder(k, &l2_);  // a single forwarder, another link: derper counts it
  EXPECT_EQ(server_.gauges().forwarderDeleteOther.load(), 1u);
  EXPECT_EQ(route(k), &l1_);
  {
    std::shared_lock lk(reg.mu);
    EXPECT_EQ(reg.remoteKeyCountLocked(), 1u);
  }
  EXPECT_TRUE(reg.checkConsistency().empty()) << joined(reg.checkConsistency());
  reg.removeForwarder(k, &l1_);
  EXPECT_EQ(route(k), nullptr);
  std::shared_lock lk(reg.mu);
  EXPECT_EQ(reg.remoteKeyCountLocked(), 0u);
}

TEST_F(RegistryForwarders, AnnouncementBatchIsAppliedInOrder) {
  Registry& reg = server_.registry();
  const NodePublic k1 = crypto::NodePrivate::generate().publicKey();
  const NodePublic k2 = crypto::NodePrivate::generate().publicKey();
  reg.applyAnnouncements({{k1, true}, {k2, true}, {k1, false}, {k2, true}}, &l1_);
  EXPECT_EQ(route(k1), nullptr);
  EXPECT_EQ(route(k2), &l1_);
  reg.applyAnnouncements({{k1, true}}, &l2_);
  reg.applyAnnouncements({{k1, true}}, &l1_);
  EXPECT_EQ(route(k1), &l2_);  // l2 announced it first
  EXPECT_TRUE(reg.checkConsistency().empty()) << joined(reg.checkConsistency());
}

TEST_F(RegistryForwarders, LocalConnectionBeatsTheMesh) {
  Registry& reg = server_.registry();
  auto a = conn(1);  // the zero key
  const NodePublic k = a->key();
  reg.addForwarder(k, &l1_);
  reg.add(a.get());
  {
    std::shared_lock lk(reg.mu);
    Registry::Route r = reg.lookupLocked(k);
    EXPECT_EQ(r.dst, a.get());
    EXPECT_EQ(r.forwarder, nullptr);
    EXPECT_EQ(reg.remoteKeyCountLocked(), 0u);
  }
  reg.remove(a.get());
  EXPECT_EQ(route(k), &l1_);
  EXPECT_TRUE(reg.checkConsistency().empty()) << joined(reg.checkConsistency());
}

}  // namespace
}  // namespace derpd::worker
