// The client registry (PROTOCOL.md §5.1, §5.7, §5.8, §5.10, §6): node key ->
// live connections with the duplicate-key policy, the watcher set, the mesh
// forwarders (derper's clientsMesh) and the PeerGone/PeerPresent fan-out. One instance per derp-worker, shared by all
// loops, guarded by mu (a reader-writer lock: packet routing takes it shared,
// membership changes exclusive). Lock order: registry mu, then a Conn's qmu_.
#pragma once

#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include "client_conn.hpp"
#include "common/crypto/keys.hpp"
#include "metrics.hpp"

namespace derpd::worker {

class MeshLink;

class Registry {
 public:
  Registry(ServerGauges& gauges, const NodePublic& serverKey);

  // Guards everything below; see the header comment.
  mutable std::shared_mutex mu;

  struct Route {
    Conn* dst = nullptr;          // active local connection
    bool dupNoActive = false;     // several conns, none active: drop as dup_client
    MeshLink* forwarder = nullptr;  // no local conn at all: the mesh link to use, if any
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

  // ---- Mesh forwarders (PROTOCOL.md §6), each under mu exclusively.
  // A mesh link saw PeerPresent(key): it may forward to key. When several
  // links know a key, the earliest registered is used until it goes.
  void addForwarder(const NodePublic& key, MeshLink* link);
  // PeerGone(key) on the link. When key then has neither a local connection
  // nor a forwarder, the local clients it sent to get PeerGone(key).
  void removeForwarder(const NodePublic& key, MeshLink* link);
  // The link broke: every key it announced is removed as above.
  void removeForwarders(const std::vector<NodePublic>& keys, MeshLink* link);
  // A batch of announcements read on one link, in order (true: PeerPresent,
  // false: PeerGone), under one exclusive lock: a peer's flood of
  // PeerPresent after WatchConns does not take the lock once per key.
  void applyAnnouncements(const std::vector<std::pair<NodePublic, bool>>& updates, MeshLink* link);
  // A ForwardPacket from `src` (a key elsewhere in the region) reached local
  // connection `dstConnNum` of `dst`: PeerGone(src) goes to it when src
  // leaves the region. Caller holds mu shared; recorded only for a src the
  // registry knows (local or forwarded), which bounds the table.
  void noteForwardedSendLocked(const NodePublic& src, const NodePublic& dst, uint64_t dstConnNum);
  // Keys known only through a forwarder (derp_clients_remote). Caller holds mu.
  size_t remoteKeyCountLocked() const;

  // /debug/check (derper's Server.ConsistencyCheck): the registry's
  // invariants, one message per violation; empty when consistent.
  //
  // Runs on whichever loop thread serves the HTTP request, under mu
  // *shared* (relaying goes on; registrations and removals wait for it, an
  // O(connections) walk), then each registered connection's qmu_ briefly
  // (the documented lock order).
  //
  // What it can see, and checks: every key's set is non-empty and each of
  // its connections carries that key; no connection (or connection number)
  // is registered twice; a single connection is active and not marked dup;
  // in a set of two or more every connection is marked dup, the active one
  // (if any) and every history entry belong to the set; every registered
  // connection's send side is still open (close() removes a connection
  // from the registry before it shuts that, so a closed but registered
  // connection is a leak); every watcher is a registered mesh connection,
  // listed once and flagged; and the gauges that only change under mu
  // exclusive (current_connections, clients_local, dup keys/conns,
  // watchers) equal what the maps hold, and current_home_connections is
  // not negative.
  //
  // What it cannot see: the state a connection's own loop thread owns
  // (its State, socket, buffers, sentTo, preferred flag) and the loops'
  // connection tables, which only their threads may read; so it cannot
  // tell a registered connection whose socket is dead but whose loop has
  // not noticed yet (that is normal until the loop reads the EOF), nor
  // check current_home_connections exactly (it changes outside mu). Mesh
  // forwarders: every entry names at least one link, none twice.
  std::vector<std::string> checkConsistency() const;

 private:
  struct ClientSet {
    std::vector<Conn*> conns;    // registration order
    Conn* active = nullptr;      // null: dup with none active
    std::vector<Conn*> history;  // dup send history, most recent last
    // sentTo of this key's connections that already left.
    std::unordered_map<NodePublic, uint64_t, crypto::NodePublicHash> inheritedSentTo;
  };
  using SentMap = std::unordered_map<NodePublic, uint64_t, crypto::NodePublicHash>;
  void broadcastPresentLocked(Conn* c);
  void broadcastGoneLocked(const NodePublic& key);
  // PeerGone(key) to each connection in `sent` still carrying that number.
  void notifyGoneLocked(const NodePublic& key, const SentMap& sent);
  // key left the region (no local conn, no forwarder): tell whom it sent to.
  void leftRegionLocked(const NodePublic& key);
  void addForwarderLocked(const NodePublic& key, MeshLink* link);
  void removeForwarderLocked(const NodePublic& key, MeshLink* link);

  ServerGauges& gauges_;
  const NodePublic serverKey_;
  std::unordered_map<NodePublic, ClientSet, crypto::NodePublicHash> clients_;
  std::vector<Conn*> watchers_;
  // key -> links that announced it, in registration order (front: in use).
  std::unordered_map<NodePublic, std::vector<MeshLink*>, crypto::NodePublicHash> forwarders_;
  // derper's sentTo for what departed local connections of a still-forwarded
  // key, and ForwardPackets from remote keys, sent to local clients.
  // Written under mu shared (hence its own mutex) or mu exclusive.
  std::mutex regionSentMu_;
  std::unordered_map<NodePublic, SentMap, crypto::NodePublicHash> regionSentTo_;
};

}  // namespace derpd::worker
