// The client registry (PROTOCOL.md §5.1, §5.7, §5.8, §5.10): node key ->
// live connections with the duplicate-key policy, the watcher set, and the
// PeerGone/PeerPresent fan-out. One instance per derp-worker, shared by all
// loops, guarded by mu (a reader-writer lock: packet routing takes it shared,
// membership changes exclusive). Lock order: registry mu, then a Conn's qmu_.
#pragma once

#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include "client_conn.hpp"
#include "common/crypto/keys.hpp"
#include "metrics.hpp"

namespace derpd::worker {

class Registry {
 public:
  Registry(ServerGauges& gauges, const NodePublic& serverKey);

  // Guards everything below; see the header comment.
  mutable std::shared_mutex mu;

  struct Route {
    Conn* dst = nullptr;       // active local connection
    bool dupNoActive = false;  // several conns, none active: drop as dup_client
  };
  // Caller holds mu (shared or exclusive).
  Route lookupLocked(const NodePublic& key) const;

  // Each takes mu exclusively.
  void add(Conn* c);
  void remove(Conn* c);
  // A frame was read on a duplicate connection: it becomes active.
  void noteActivity(Conn* c);
  // WatchConns from a mesh peer: add to watchers and queue PeerPresent for
  // every key with an active connection (the watcher included).
  void addWatcher(Conn* c);
  // ClosePeer: asks each of key's connections to close. False if absent.
  bool closePeer(const NodePublic& key);

  size_t keyCountLocked() const { return clients_.size(); }
  // Registry invariants (for /debug/check and tests); empty when consistent.
  std::vector<std::string> checkConsistency() const;

 private:
  struct ClientSet {
    std::vector<Conn*> conns;    // registration order
    Conn* active = nullptr;      // null: dup with none active
    std::vector<Conn*> history;  // dup send history, most recent last
    // sentTo of this key's connections that already left.
    std::unordered_map<NodePublic, uint64_t, crypto::NodePublicHash> inheritedSentTo;
  };
  void broadcastPresentLocked(Conn* c);
  void broadcastGoneLocked(const NodePublic& key);

  ServerGauges& gauges_;
  const NodePublic serverKey_;
  std::unordered_map<NodePublic, ClientSet, crypto::NodePublicHash> clients_;
  std::vector<Conn*> watchers_;
};

}  // namespace derpd::worker
