// -mesh-with entries (PROTOCOL.md §6): parsing, and resolving them to the
// addresses derp-worker dials. derper dials "https://" + entry + "/derp".
// Used by derpd (config check), mesh-helper (resolution) and derp-worker
// (its links; resolution only when it runs alone).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <string_view>
#include <vector>

#include "common/ipc/messages.hpp"
#include "common/util/result.hpp"

namespace derpd::net {

struct MeshHost {
  std::string entry;      // as configured, e.g. "derp2.example.com" or "[2001:db8::2]:8443"
  std::string host;       // name or IP literal without brackets: SNI and the verified name
  uint16_t port = 443;
  std::string authority;  // the Host header: host[:port] as configured
  // derper HEAD's "host/dialhost" form: connect to dialHost (a name or an IP
  // address) instead, keeping host for TLS and the Host header. Else = host.
  std::string dialHost;
};

// Splits a comma-separated list; white space around entries is ignored.
// Each entry: name, name:port, IPv4[:port] or [IPv6][:port], optionally
// followed by "/dialhost" (derper HEAD). Errors name the entry; an empty list
// is an empty vector, an empty entry an error.
Result<std::vector<MeshHost>> parseMeshWith(std::string_view list);

// Resolves dialHost with the system resolver (getaddrinfo, TCP): "ip:port" or
// "[ip]:port" strings in resolver order, duplicates removed; or `error`.
// Blocks: call it off any event loop.
ipc::MeshPeer resolveMeshHost(const MeshHost& h);

// A thread that resolves every host at start and then every `interval`,
// and calls `onChange` (on that thread) with every host's result whenever
// any of them changed. A host whose lookup fails keeps being reported with
// its error; the receiver decides whether to keep older addresses.
class MeshResolver {
 public:
  using OnChange = std::function<void(const ipc::MeshPeers&)>;
  MeshResolver(std::vector<MeshHost> hosts, std::chrono::milliseconds interval, OnChange onChange);
  ~MeshResolver();  // stops and joins (a lookup in progress finishes first)
  MeshResolver(const MeshResolver&) = delete;
  MeshResolver& operator=(const MeshResolver&) = delete;
  void start();
  // Resolve again now (a link broke: the host may have moved).
  void refresh();

 private:
  void run();
  const std::vector<MeshHost> hosts_;
  const std::chrono::milliseconds interval_;
  const OnChange onChange_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool refresh_ = false;
  std::thread thread_;
};

}  // namespace derpd::net
