#include "registry.hpp"

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_set>

#include "common/log/log.hpp"

namespace derpd::worker {

Registry::Registry(ServerGauges& gauges, const NodePublic& serverKey)
    : gauges_(gauges), serverKey_(serverKey) {}

Registry::Route Registry::lookupLocked(const NodePublic& key) const {
  auto it = clients_.find(key);
  if (it == clients_.end()) {
    // Local beats mesh: a forwarder is used only when the key has no local
    // connection at all (a dup set with none active drops, as derper).
    auto f = forwarders_.find(key);
    return f == forwarders_.end() ? Route{} : Route{nullptr, false, f->second.front()};
  }
  if (it->second.active) return Route{it->second.active, false, nullptr};
  return Route{nullptr, true, nullptr};
}

void Registry::notifyGoneLocked(const NodePublic& key, const SentMap& sent) {
  for (const auto& [peer, num] : sent) {
    if (peer == key) continue;
    auto pit = clients_.find(peer);
    if (pit == clients_.end()) continue;
    for (Conn* pc : pit->second.conns) {
      if (pc->connNum() == num) pc->enqueuePeerGone(key, derp::PeerGoneReason::Disconnected);
    }
  }
}

void Registry::leftRegionLocked(const NodePublic& key) {
  auto it = regionSentTo_.find(key);
  if (it == regionSentTo_.end()) return;
  notifyGoneLocked(key, it->second);
  regionSentTo_.erase(it);
}

void Registry::addForwarder(const NodePublic& key, MeshLink* link) {
  std::unique_lock lk(mu);
  addForwarderLocked(key, link);
}

void Registry::applyAnnouncements(const std::vector<std::pair<NodePublic, bool>>& updates, MeshLink* link) {
  std::unique_lock lk(mu);
  for (const auto& [key, present] : updates) {
    if (present) {
      addForwarderLocked(key, link);
    } else {
      removeForwarderLocked(key, link);
    }
  }
}

void Registry::addForwarderLocked(const NodePublic& key, MeshLink* link) {
  std::vector<MeshLink*>& links = forwarders_[key];
  if (std::find(links.begin(), links.end(), link) != links.end()) return;  // a repeated announcement
  if (links.size() == 1) gauges_.multiForwarderCreated.fetch_add(1);
  links.push_back(link);
}

void Registry::removeForwarderLocked(const NodePublic& key, MeshLink* link) {
  auto it = forwarders_.find(key);
  if (it == forwarders_.end()) return;
  std::vector<MeshLink*>& links = it->second;
  auto pos = std::find(links.begin(), links.end(), link);
  if (pos == links.end()) {
    // derper counts this only for a single forwarder (not a multiForwarder).
    if (links.size() == 1) gauges_.forwarderDeleteOther.fetch_add(1);
    return;
  }
  links.erase(pos);
  if (links.size() == 1) gauges_.multiForwarderDeleted.fetch_add(1);
  if (!links.empty()) return;
  forwarders_.erase(it);
  if (!clients_.count(key)) leftRegionLocked(key);
}

void Registry::removeForwarder(const NodePublic& key, MeshLink* link) {
  std::unique_lock lk(mu);
  removeForwarderLocked(key, link);
}

void Registry::removeForwarders(const std::vector<NodePublic>& keys, MeshLink* link) {
  std::unique_lock lk(mu);
  for (const NodePublic& k : keys) removeForwarderLocked(k, link);
}

void Registry::noteForwardedSendLocked(const NodePublic& src, const NodePublic& dst, uint64_t dstConnNum) {
  if (!clients_.count(src) && !forwarders_.count(src)) return;
  std::lock_guard g(regionSentMu_);
  regionSentTo_[src].insert_or_assign(dst, dstConnNum);
}

size_t Registry::remoteKeyCountLocked() const {
  size_t n = 0;
  for (const auto& entry : forwarders_) {
    if (!clients_.count(entry.first)) ++n;
  }
  return n;
}

void Registry::broadcastPresentLocked(Conn* c) {
  for (Conn* w : watchers_) {
    w->enqueuePeerPresent(c->key(), c->peerIp16(), c->peerPort(), c->presentFlags());
  }
}

void Registry::broadcastGoneLocked(const NodePublic& key) {
  for (Conn* w : watchers_) w->enqueuePeerGone(key, derp::PeerGoneReason::Disconnected);
}

void Registry::add(Conn* c) {
  std::unique_lock lk(mu);
  auto [it, fresh] = clients_.try_emplace(c->key());
  ClientSet& set = it->second;
  if (fresh) {
    set.conns.push_back(c);
    set.active = c;
    gauges_.clientsLocal.fetch_add(1);
  } else {
    if (set.conns.size() == 1) {
      gauges_.dupClientKeys.fetch_add(1);
      gauges_.dupClientConns.fetch_add(2);
      set.conns[0]->regIsDup_ = true;
      set.conns[0]->isDup_.store(true);
    } else {
      gauges_.dupClientConns.fetch_add(1);
    }
    gauges_.totalDupClientConns.fetch_add(1);
    c->regIsDup_ = true;
    c->isDup_.store(true);
    if (set.active && (set.history.empty() || set.history.back() != set.active)) {
      set.history.push_back(set.active);
    }
    set.conns.push_back(c);
    set.active = c;  // last writer is active: the newest connection
  }
  gauges_.currentConnections.fetch_add(1);
  broadcastPresentLocked(c);
}

void Registry::remove(Conn* c) {
  std::unique_lock lk(mu);
  if (c->regWatcher_) {
    watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), c), watchers_.end());
    c->regWatcher_ = false;
    gauges_.watchers.store(int64_t(watchers_.size()));
  }
  auto it = clients_.find(c->key());
  if (it == clients_.end()) return;
  ClientSet& set = it->second;
  auto pos = std::find(set.conns.begin(), set.conns.end(), c);
  if (pos == set.conns.end()) return;
  set.conns.erase(pos);
  set.history.erase(std::remove(set.history.begin(), set.history.end(), c), set.history.end());
  gauges_.currentConnections.fetch_sub(1);

  if (set.conns.empty()) {
    // The key's last local connection. Watchers hear of it at once; former
    // recipients only when the key is gone from the whole region (another
    // node may still forward to it).
    NodePublic key = c->key();
    if (forwarders_.count(key)) {
      SentMap& kept = regionSentTo_[key];
      for (const auto& kv : c->sentTo()) kept.insert_or_assign(kv.first, kv.second);
      for (const auto& kv : set.inheritedSentTo) kept.insert(kv);
    } else {
      notifyGoneLocked(key, c->sentTo());
      notifyGoneLocked(key, set.inheritedSentTo);
      leftRegionLocked(key);
    }
    clients_.erase(it);
    gauges_.clientsLocal.fetch_sub(1);
    broadcastGoneLocked(key);
    return;
  }

  for (const auto& kv : c->sentTo()) set.inheritedSentTo.insert_or_assign(kv.first, kv.second);
  gauges_.dupClientConns.fetch_sub(1);
  if (set.conns.size() == 1) {
    // Back to an ordinary single client.
    gauges_.dupClientConns.fetch_sub(1);
    gauges_.dupClientKeys.fetch_sub(1);
    Conn* remain = set.conns[0];
    remain->regIsDup_ = false;
    remain->isDup_.store(false);
    set.active = remain;
    set.history.clear();
    return;
  }
  if (set.active == c) {
    // Most recent still-connected history entry, if any.
    set.active = set.history.empty() ? nullptr : set.history.back();
  }
}

void Registry::noteActivity(Conn* c) {
  std::unique_lock lk(mu);
  auto it = clients_.find(c->key());
  if (it == clients_.end()) return;
  ClientSet& set = it->second;
  if (set.conns.size() < 2 || set.active == c) return;
  set.active = c;
  if (set.history.empty() || set.history.back() != c) set.history.push_back(c);
}

void Registry::addWatcher(Conn* c) {
  std::unique_lock lk(mu);
  if (!c->regWatcher_) {
    watchers_.push_back(c);
    c->regWatcher_ = true;
    gauges_.watchers.store(int64_t(watchers_.size()));
  }
  for (const auto& [key, set] : clients_) {
    if (set.active) c->enqueuePeerPresent(key, set.active->peerIp16(), set.active->peerPort(),
                                          set.active->presentFlags());
  }
}

bool Registry::closePeer(const NodePublic& key) {
  std::shared_lock lk(mu);
  auto it = clients_.find(key);
  if (it == clients_.end()) return false;
  for (Conn* c : it->second.conns) c->requestClose(CloseReason::ClosePeer);
  return true;
}

std::vector<std::string> Registry::checkConsistency() const {
  std::shared_lock lk(mu);
  std::vector<std::string> errs;
  std::unordered_set<const Conn*> registered;
  std::unordered_set<uint64_t> connNums;
  size_t conns = 0, dupKeys = 0, dupConns = 0;
  auto num = [](const Conn* c) { return "connection " + std::to_string(c->connNum()); };
  for (const auto& entry : clients_) {
    const NodePublic& key = entry.first;
    const ClientSet& set = entry.second;  // not a structured binding: lambdas below capture it
    const std::string k = "key " + key.shortString();
    if (set.conns.empty()) {
      errs.push_back(k + " has no connections");
      continue;
    }
    conns += set.conns.size();
    const bool dup = set.conns.size() > 1;
    if (dup) {
      ++dupKeys;
      dupConns += set.conns.size();
    } else if (set.active != set.conns[0]) {
      errs.push_back(k + ": its single connection is not the active one");
    }
    auto inSet = [&](const Conn* c) { return std::find(set.conns.begin(), set.conns.end(), c) != set.conns.end(); };
    if (set.active && !inSet(set.active)) errs.push_back(k + ": the active connection is not in its set");
    for (const Conn* h : set.history) {
      if (!inSet(h)) {
        errs.push_back(k + ": the duplicate history names a connection not in its set");
        break;
      }
    }
    for (Conn* c : set.conns) {
      if (!registered.insert(c).second) errs.push_back(num(c) + " is registered twice");
      if (!connNums.insert(c->connNum()).second) errs.push_back(num(c) + ": its number is registered twice");
      if (c->key() != key) errs.push_back(num(c) + " is filed under " + k + " but has key " + c->key().shortString());
      if (c->regIsDup_ != dup || c->isDup_.load() != dup) {
        errs.push_back(num(c) + " (" + k + "): duplicate flag " + (c->regIsDup_ ? "set" : "clear") + " with " +
                       std::to_string(set.conns.size()) + " connection(s) for the key");
      }
      if (c->sendSideClosed()) errs.push_back(num(c) + " (" + k + ") is closed but still registered");
    }
  }
  std::unordered_set<const Conn*> watchers;
  for (const Conn* w : watchers_) {
    if (!watchers.insert(w).second) errs.push_back(num(w) + " is in the watcher list twice");
    if (!registered.count(w)) errs.push_back(num(w) + " is a watcher but not a registered client");
    if (!w->regWatcher_) errs.push_back(num(w) + " is in the watcher list but not flagged as a watcher");
    if (!w->canMesh()) errs.push_back(num(w) + " is a watcher without the mesh key");
  }
  auto gauge = [&](const char* name, int64_t have, size_t want) {
    if (have != int64_t(want)) {
      errs.push_back(std::string(name) + " = " + std::to_string(have) + " != " + std::to_string(want) +
                     " in the registry");
    }
  };
  gauge("current_connections", gauges_.currentConnections.load(), conns);
  gauge("clients_local", gauges_.clientsLocal.load(), clients_.size());
  gauge("current_dup_client_keys", gauges_.dupClientKeys.load(), dupKeys);
  gauge("current_dup_client_conns", gauges_.dupClientConns.load(), dupConns);
  gauge("watchers", gauges_.watchers.load(), watchers_.size());
  for (const auto& [key, links] : forwarders_) {
    if (links.empty()) errs.push_back("forwarder entry for key " + key.shortString() + " names no mesh link");
    std::unordered_set<const MeshLink*> seen(links.begin(), links.end());
    if (seen.size() != links.size()) errs.push_back("forwarder entry for key " + key.shortString() + " names a link twice");
  }
  if (int64_t home = gauges_.currentHomeConnections.load(); home < 0) {
    errs.push_back("current_home_connections = " + std::to_string(home) + " < 0");
  }
  return errs;
}

}  // namespace derpd::worker
