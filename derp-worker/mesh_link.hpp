// One outbound mesh link (PROTOCOL.md §6): this server dialling one
// -mesh-with host as a DERP client with its own key and the mesh key,
// WatchConns, and ForwardPacket for the keys that host announces.
//
// The link lives on one event loop and is driven like a connection: a
// non-blocking dial (TCP, TLS verified against the mesh trust store, the
// HTTP upgrade, ServerKey, ClientInfo, ServerInfo, WatchConns), then the
// PeerPresent/PeerGone stream feeding the registry's forwarder table. Any
// error closes the socket, drops every key learned on it, and retries after
// kRetryInterval. A link that reaches this server itself stops for good.
//
// Threads: everything runs on the link's loop thread, except forward(),
// which any loop calls with the registry lock held (shared). A link outlives
// every registry entry naming it: links are made at start and destroyed
// after the loops stop. Included by derp-worker only.
#pragma once

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/crypto/keys.hpp"
#include "common/net/mesh_hosts.hpp"
#include "common/proto/derp/frame.hpp"
#include "loop.hpp"

namespace derpd::worker {

using crypto::NodePublic;

// The state of a link, for logs, /debug/varz and tests.
enum class MeshLinkState : uint8_t {
  NoAddress,  // waiting for the host's addresses
  Waiting,    // retry timer running after a failure
  Dialing,    // TCP, TLS, HTTP upgrade or DERP handshake in progress
  Up,         // WatchConns sent: announcements flowing, forwarding
  Self,       // the host is this server: never dialled again
  Stopped,
};
const char* meshLinkStateName(MeshLinkState s);

// The TLS client context of a mesh link (one per link): TLS 1.2+, peer verified against
// `caFile`, or the system's CA file ($SSL_CERT_FILE, else OpenSSL's default)
// when empty. Loaded now, before any chroot hides the file; `logIt`: say
// what was loaded (once for all links).
Result<std::shared_ptr<SSL_CTX>> makeMeshTlsContext(const std::string& caFile, bool logIt = true);

class MeshLink {
 public:
  static constexpr auto kRetryInterval = std::chrono::seconds(5);   // derphttp's retryInterval
  static constexpr auto kDialTimeout = std::chrono::seconds(10);    // TCP + TLS + upgrade + handshake
  static constexpr auto kWriteTimeout = std::chrono::seconds(5);    // derper's ForwardPacket write timer
  // No frame at all (the peer sends a KeepAlive every 60-65 s): the link is dead.
  static constexpr auto kReadIdleTimeout = std::chrono::seconds(130);
  // ForwardPackets waiting for the socket. Above the high-water mark the
  // sender stops reading until the link has taken the backlog (derper
  // blocks the sender on the link's write); a packet that would take the
  // backlog past the hard cap is dropped (a sender already paused cannot add
  // more, so only many senders at once can get there).
  static constexpr size_t kBacklogHighWater = 1 << 20;
  static constexpr size_t kMaxBacklogBytes = 4 << 20;

  // `sslCtx`: a client context with the mesh trust store, this link's own
  // (makeMeshTlsContext()); it must outlive the link.
  MeshLink(Loop& loop, net::MeshHost spec, SSL_CTX* sslCtx);
  ~MeshLink();
  MeshLink(const MeshLink&) = delete;
  MeshLink& operator=(const MeshLink&) = delete;

  Loop& loop() { return loop_; }
  const net::MeshHost& spec() const { return spec_; }
  MeshLinkState state() const { return stateMirror_.load(std::memory_order_relaxed); }

  // Loop thread: set up the timer, dial when addresses are known.
  void start();
  // Loop thread: new addresses ("ip:port" / "[ip]:port") for the host;
  // empty with `error`: the resolver failed (the link keeps its old ones).
  void setAddresses(std::vector<std::string> addrs, const std::string& error);
  // Loop thread: close for good (shutdown).
  void stop();

  // Any thread, registry lock held (shared or exclusive): queue a
  // ForwardPacket from the connection `senderNum` on `senderLoop`.
  // Queued: done. Paused: queued, and the backlog is over the high-water
  // mark: the sender must stop reading; the link posts
  // Conn::resumeReading() to it once the backlog has gone to the socket (or
  // the link went down). Dropped: the link is not up, or at its hard cap.
  enum class Forward { Queued, Paused, Dropped };
  Forward forward(const NodePublic& src, const NodePublic& dst, ByteView packet, Loop& senderLoop,
                  uint64_t senderNum);

  // Counters (any thread).
  uint64_t connects() const { return connects_.load(std::memory_order_relaxed); }
  uint64_t forwardDrops() const { return forwardDrops_.load(std::memory_order_relaxed); }
  size_t peersLearned() const { return learnedCount_.load(std::memory_order_relaxed); }

 private:
  struct SockHandler;
  struct TimerHandler;
  enum class Phase : uint8_t { TcpConnect, TlsHandshake, HttpResponse, ServerKey, ServerInfo, Up };

  void setState(MeshLinkState s);
  void armTimer(TimePoint when);
  void onTimer();
  void onSocket(uint32_t events);
  void beginDial();
  bool dialNext();  // next address; false when none left
  void fail(const std::string& why);
  void closeSocket();
  void dropLearned();
  void applyAnnouncements();  // hands announcements_ to the registry
  void step();          // drives the dial phases as far as possible
  bool tlsStep();
  bool readAvailable();  // reads into in_; false on EOF or error (already failed)
  bool feedFrames(ByteView in);  // false when the link failed meanwhile
  void onFrame(const derp::Frame& f);
  bool handleHttpResponse();
  void flushOut();
  void pullBacklog();
  // Moves the backlog to out_ (qmu_ held); returns the senders to resume.
  std::vector<std::pair<Loop*, uint64_t>> takeBacklogLocked();
  static void resume(const std::vector<std::pair<Loop*, uint64_t>>& senders);
  void updateInterest();

  Loop& loop_;
  const net::MeshHost spec_;
  const std::string name_;  // "mesh(entry)" for logs
  SSL_CTX* sslCtx_;
  std::unique_ptr<SockHandler> sockHandler_;
  std::unique_ptr<TimerHandler> timerHandler_;
  int timerFd_ = -1;

  // Loop thread only.
  MeshLinkState state_ = MeshLinkState::NoAddress;
  Phase phase_ = Phase::TcpConnect;
  std::vector<std::string> addrs_;
  size_t addrIdx_ = 0;
  std::string currentAddr_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  uint32_t interest_ = 0;
  bool readWantsWrite_ = false;
  TimePoint dialDeadline_{};
  TimePoint retryAt_{};
  TimePoint lastRead_{};
  TimePoint writeStallSince_{};
  std::string httpBuf_;
  std::unique_ptr<derp::FrameReader> reader_;
  NodePublic serverKey_;
  Bytes out_;
  size_t outOff_ = 0;
  std::unordered_set<NodePublic, crypto::NodePublicHash> learned_;
  // PeerPresent (true) / PeerGone (false) read but not yet in the registry:
  // applied once per read batch.
  std::vector<std::pair<NodePublic, bool>> announcements_;
  std::string lastFailure_;  // repeated identical failures log at debug

  // Cross-thread: ForwardPacket frames waiting for the loop.
  std::mutex qmu_;
  Bytes backlog_;
  std::vector<std::pair<Loop*, uint64_t>> pausedSenders_;  // (loop, connection number)
  bool pullScheduled_ = false;
  bool accepting_ = false;  // Up: forward() queues; else it drops

  std::atomic<MeshLinkState> stateMirror_{MeshLinkState::NoAddress};
  std::atomic<uint64_t> connects_{0};
  std::atomic<uint64_t> forwardDrops_{0};
  std::atomic<size_t> learnedCount_{0};
};

}  // namespace derpd::worker
