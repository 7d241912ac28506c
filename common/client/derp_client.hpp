// A blocking DERP client (PROTOCOL.md §2-§5, client side): HTTP upgrade or
// fast start, over plain TCP or TLS, optionally inside WebSocket. Used by the
// tests now, and by derpd-probe and derpd-bench. Every call has a deadline;
// nothing blocks forever.
#pragma once

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "common/crypto/keys.hpp"
#include "common/proto/derp/frame.hpp"
#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::client {

using crypto::NodePrivate;
using crypto::NodePublic;

struct ClientOptions {
  // "http://host:port/derp" or "https://host:port/derp" (path defaults to /derp).
  std::string url;
  NodePrivate key;             // the client's node key
  std::string meshKey;         // sent in ClientInfo when non-empty
  bool canAckPings = false;
  bool isProber = false;
  bool websocket = false;      // Upgrade: websocket, subprotocol "derp"
  bool fastStart = true;       // over TLS 1.3 with a meta cert: Derp-Fast-Start: 1
  // TLS: PEM file of trusted CA(s); empty = system roots.
  std::string caFile;
  bool insecureSkipVerify = false;
  std::string serverName;      // SNI/verify name; empty = host of url (none for IP literals)
  bool maxTls12 = false;       // offer TLS 1.2 at most (tests of servers' TLS 1.2 path)
  std::string hostHeader;      // empty = host of url without port... (Go sends url host as given)
  // Dial this address instead of the url's host:port (keeps SNI/Host).
  std::string dialAddr;        // "ip:port"
  std::chrono::milliseconds timeout{10000};  // connect + handshake budget
  // Extra request headers (tests).
  std::vector<std::pair<std::string, std::string>> extraHeaders;
  // When set, skip the ClientInfo/ServerInfo exchange (tests that want to
  // send raw or broken handshakes after the upgrade).
  bool rawAfterUpgrade = false;
  // Tests: behave as if a TLS 1.3 meta cert had carried this key, over any
  // transport (plain HTTP too): send Derp-Fast-Start: 1 with ClientInfo in the
  // same write, expect no HTTP response, and check ServerKey against it.
  std::optional<NodePublic> fastStartKeyForTest;
};

// What recv() returns.
struct RecvPacket { NodePublic src; Bytes data; };
struct PeerGone { NodePublic key; derp::PeerGoneReason reason; };
struct PeerPresent { derp::PeerPresentInfo info; };
struct KeepAlive {};
struct Ping { std::array<uint8_t, 8> data; };
struct Pong { std::array<uint8_t, 8> data; };
struct Health { std::string text; };
struct Restarting { uint32_t reconnectInMs; uint32_t tryForMs; };
struct ServerInfoMsg { std::string json; };
struct OtherFrame { uint8_t type; Bytes payload; };
using Message = std::variant<RecvPacket, PeerGone, PeerPresent, KeepAlive, Ping, Pong, Health,
                             Restarting, ServerInfoMsg, OtherFrame>;

struct ConnInfo {
  bool tls = false;
  std::string tlsVersion;     // "TLSv1.3"
  bool fastStart = false;     // the request carried Derp-Fast-Start: 1
  bool gotMetaCert = false;   // the chain's last cert was a valid meta cert
  int httpStatus = 0;         // 101, or 0 for fast start
  std::string serverInfoJson;
};

class Client {
 public:
  // Connects, upgrades and completes the handshake (ServerKey, ClientInfo,
  // ServerInfo) unless rawAfterUpgrade.
  static Result<std::unique_ptr<Client>> connect(const ClientOptions& opts);
  ~Client();

  const NodePublic& serverKey() const;
  const NodePublic& publicKey() const;
  const ConnInfo& info() const;

  Result<void> sendPacket(const NodePublic& dst, ByteView packet);
  Result<void> forwardPacket(const NodePublic& src, const NodePublic& dst, ByteView packet);
  Result<void> notePreferred(bool preferred);
  Result<void> ping(const std::array<uint8_t, 8>& data);
  // TLS 1.3: a KeyUpdate asking the server to update its keys too; it goes
  // out with the next write. An error over plain HTTP or TLS 1.2.
  Result<void> requestTlsKeyUpdate();
  Result<void> pong(const std::array<uint8_t, 8>& data);
  Result<void> watchConns();
  Result<void> closePeer(const NodePublic& key);
  // Writes bytes as they are (tests: malformed frames).
  Result<void> sendRaw(ByteView bytes);

  // Next frame, waiting at most `timeout`. Errors on timeout ("timeout"),
  // EOF ("eof"), or a frame the client must refuse (> 1 MiB).
  Result<Message> recv(std::chrono::milliseconds timeout);
  // Receives until a RecvPacket arrives (other messages are discarded), or
  // the deadline passes.
  Result<RecvPacket> recvPacket(std::chrono::milliseconds timeout);

  // True once the server closed the stream (EOF seen).
  bool closed() const;
  void close();
  int fd() const;  // the TCP socket (tests: shutdown, SO_RCVBUF)

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace derpd::client
