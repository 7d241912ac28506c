// One accepted TCP connection: TLS (optional) -> HTTP request heads ->
// either HTTP responses (keep-alive) or a DERP takeover (plain or inside
// WebSocket) -> the DERP handshake -> relaying. PROTOCOL.md §2, §4, §5.
//
// Ownership: everything is owned by the loop thread of `loop_`, except the
// members under "cross-thread", guarded by qmu_, which any loop's thread may
// use to queue output for this connection (packets, PeerGone, PeerPresent,
// close requests). Included by derp-worker only.
#pragma once

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/crypto/keys.hpp"
#include "common/proto/derp/client_info.hpp"
#include "common/proto/derp/frame.hpp"
#include "common/proto/http/http.hpp"
#include "common/proto/http/websocket.hpp"
#include "loop.hpp"
#include "tls13_records.hpp"

namespace derpd::worker {

using crypto::NodePublic;

// A relayed packet waiting in a destination's queue.
struct QueuedPacket {
  NodePublic src;
  Bytes data;
  TimePoint enqueued;
};

// Per-connection send queue depth (derper: 32 per queue).
inline constexpr size_t kPerClientSendQueueDepth = 32;

// One of a destination's two packet queues (disco and data), oldest first:
// a packet for a full queue drops the oldest one (derper's queue_head), never
// the new one. Returns whether it dropped, and whether the queue is full now.
struct QueuePush {
  bool droppedHead = false;
  bool full = false;
};
template <typename T>
QueuePush pushDroppingHead(std::vector<T>& q, T v, size_t depth = kPerClientSendQueueDepth) {
  QueuePush r;
  if (q.size() >= depth) {
    q.erase(q.begin());
    r.droppedHead = true;
  }
  q.push_back(std::move(v));
  r.full = q.size() >= depth;
  return r;
}
// Mesh-update backlog bound for a watcher that does not read.
inline constexpr size_t kMaxPendingMeshUpdates = 100000;

class Conn final : public IoHandler {
 public:
  enum class State {
    TlsHandshake,   // SSL_accept in progress
    HttpHead,       // reading a request head
    DerpHandshake,  // ServerKey sent, waiting for ClientInfo
    Verifying,      // ClientInfo read; waiting for mesh-helper's admission answer
    Relay,          // registered, relaying
    Lingering,      // response sent, write side shut, discarding input
    Closed,
  };

  Conn(Loop& loop, int fd, const sockaddr_storage& peer, uint64_t connNum, SSL* ssl,
       bool port80);
  ~Conn() override;

  void start();
  void onIo(uint32_t events) override;
  void onTimer();
  // The loop drains this connection's cross-thread queues (loop thread).
  void onScheduled();
  void close(CloseReason why);
  // The admission answer for this connection (loop thread): "allow", "deny"
  // or "unavailable" (the fail-open setting decides). PROTOCOL.md §5.9.
  void onAdmission(const std::string& verdict, const std::string& reason);
  // Graceful stop (loop thread): a relaying client gets the Restarting frame
  // and the connection closes once it is written; anything else closes now.
  void drain(uint32_t reconnectInMs, uint32_t tryForMs);

  uint64_t connNum() const { return connNum_; }
  uint64_t timerSeq() const { return timerSeq_; }
  uint64_t bumpTimerSeq() { return ++timerSeq_; }
  bool isClosed() const { return state_ == State::Closed; }
  // Accepted and not yet relaying (TLS, HTTP head, DERP handshake,
  // admission): counts against max-handshakes until it relays or closes.
  void markPending();
  bool pending() const { return pending_; }
  Loop& loop() { return loop_; }

  // ---- Set at registration, then immutable: readable from any thread that
  // holds the registry lock.
  const NodePublic& key() const { return key_; }
  bool canMesh() const { return canMesh_; }
  bool isProber() const { return isProber_; }
  uint8_t presentFlags() const;
  const std::array<uint8_t, 16>& peerIp16() const { return peerIp16_; }
  uint16_t peerPort() const { return peerPort_; }

  // ---- Cross-thread producers (take qmu_; the caller holds the registry
  // lock, shared or exclusive, so this connection cannot be freed meanwhile).
  // Drop policy (PROTOCOL.md §5.4): a closing destination drops the new
  // packet (gone_disconnected); a full queue drops its head (queue_head).
  // Returns true when the queue is now full: a caller on the destination's
  // own loop then flushes it at once (see onSendPacket), as derper's writer
  // goroutine would have drained it concurrently.
  bool enqueuePacket(const NodePublic& src, ByteView packet, bool disco, LoopStats& stats);
  void enqueuePeerGone(const NodePublic& peer, derp::PeerGoneReason reason);
  void enqueuePeerPresent(const NodePublic& peer, const std::array<uint8_t, 16>& ip16,
                          uint16_t port, uint8_t flags);
  void requestClose(CloseReason why);
  // True once close() has run (its send side is shut). Takes qmu_; for
  // /debug/check, which expects false for every registered connection
  // (close() leaves the registry before it shuts the send side).
  bool sendSideClosed();

  // ---- Registry bookkeeping, guarded by the registry's mutex.
  bool regIsDup_ = false;   // registry: this key has several conns
  bool regWatcher_ = false; // registry: in the watcher set
  // Written by this conn's loop thread; read under the registry's exclusive
  // lock when the key's last conn goes (PeerGone to former recipients).
  std::unordered_map<NodePublic, uint64_t, crypto::NodePublicHash>& sentTo() { return sentTo_; }
  std::atomic<bool> isDup_{false};  // mirror of regIsDup_ for the hot path
  // Written by this conn's loop thread, read by senders on other loops: the
  // output backlog is over kOutHighWater (a sender must not wait for it).
  std::atomic<bool> backlogged_{false};

  // Flow control between loops: resumes reading after a destination on
  // another loop drained (loop thread).
  void resumeReading();

 private:
  void leavePending();
  // I/O
  void handleReadable();
  void handleWritable();
  bool tlsHandshake();
  // Reads available bytes and dispatches them; false when the conn closed.
  bool readSome();
  // One read(2) of the socket into buf: the count, 0 when it has nothing
  // now, -1 when the connection ended (EOF or an error; closed here).
  ssize_t readSocket(uint8_t* buf);
  void onBytes(ByteView in);
  void onHttpBytes(ByteView in);
  void processHttpBuffer();
  void onDerpStream(ByteView in);
  void writeOut();
  // send(2) of what the socket takes now: the bytes written (> 0), 0 when
  // it takes nothing (EAGAIN), -1 when it failed (the conn is closed).
  ssize_t sendSome(const uint8_t* p, size_t n);
  void updateInterest();
  void rearmTimer();
  void appendDerp(const std::function<void(Bytes&)>& enc);
  void sealOutput();  // moves DERP bytes into out_ (ws-framing them if needed)

  // HTTP
  void handleRequest(const http::RequestHead& req);
  void startDerp(const http::RequestHead& req, bool websocket);
  void sendHttp(std::string bytes, bool closeAfter);

  // DERP
  derp::HeaderVerdict classify(const derp::FrameHeader& h);
  bool onFrame(const derp::Frame& f);
  bool onClientInfo(ByteView payload);
  // ServerInfo, then registration: the connection becomes a relaying client.
  void finishHandshake();
  // Local delivery of a SendPacket (unknownReason UnknownDest) or a
  // ForwardPacket (UnknownDestOnFwd), with the drop accounting of §5.3.
  void deliver(const NodePublic& dst, const NodePublic& src, ByteView packet, bool disco,
               DropReason unknownReason);
  void onSendPacket(ByteView payload);
  void onForwardPacket(ByteView payload);
  void onNotePreferred(ByteView payload);
  void onPing(ByteView payload);
  void onWatchConns();
  void onClosePeer(ByteView payload);
  // Drains cross-thread queues into the output (loop thread). Packets are
  // pulled only while the output backlog is under kOutHighWater, so a
  // reader that stops reading fills its queues and loses their heads.
  void pullQueues();
  size_t pendingOut() const {
    return out_.size() - outOff_ + derpOut_.size() + (recOut_.size() - recOutOff_) +
           (rec_ && rec_->wantKeyUpdate() ? 1 : 0);
  }
  static constexpr size_t kOutHighWater = 64 * 1024;
  void linger();
  void sendCloseNotify();
  bool notHereAllowed();
  void pauseReading();

  // Set when a destination on another loop had a full queue: the rest of the
  // current input waits in stash_ (reading from the socket stops) until that
  // loop has flushed the destination and posted resumeReading() back.
  bool readPaused_ = false;
  Bytes stash_;

  Loop& loop_;
  int fd_;
  SSL* ssl_;  // null for plain TCP, and for TLS 1.3 once rec_ took over
  // TLS 1.3 after the handshake (tls13_records.hpp).
  std::unique_ptr<Tls13Secrets> tlsSecrets_;  // filled during the handshake, then dropped
  std::unique_ptr<Tls13Records> rec_;
  Bytes recIn_;           // the start of a record not yet complete
  Bytes recOut_;          // sealed records not yet written
  size_t recOutOff_ = 0;  // of recOut_, already written
  bool moveToOwnRecords();     // after the handshake: false keeps OpenSSL
  bool readRecords();          // readSome() with rec_
  bool openRecords(uint8_t* data, size_t n);  // false when the conn closed
  const uint64_t connNum_;
  const bool port80_;
  State state_;
  uint64_t timerSeq_ = 0;
  uint32_t interest_ = 0;  // current epoll events
  TimePoint armedAt_{};    // when the loop timer is armed for
  bool readWantsWrite_ = false;  // SSL_read asked for writability
  int tlsVersionIdx_ = -1;       // index into ServerGauges::tlsActive while counted

  std::array<uint8_t, 16> peerIp16_{};  // IPv4 as ::ffff:a.b.c.d
  uint16_t peerPort_ = 0;
  std::string peerIpText_;

  // Deadlines (zero = none). The loop timer is armed at the earliest.
  TimePoint deadline_{};      // TLS/HTTP head/handshake deadline
  TimePoint nextKeepAlive_{};
  TimePoint writeStallSince_{};  // set while output is blocked
  std::chrono::milliseconds keepAlivePeriod_{60000};
  TimePoint connectedAt_;

  // Input
  std::string httpBuf_;                         // partial request head
  std::unique_ptr<derp::FrameReader> reader_;   // DERP phase
  std::unique_ptr<http::WsDecoder> ws_;         // WebSocket transport
  // Output: bytes ready for the socket; outOff_ already written.
  Bytes out_;
  size_t outOff_ = 0;
  Bytes derpOut_;  // DERP bytes not yet ws-framed (websocket only)
  bool closeAfterFlush_ = false;
  bool wsCloseSent_ = false;

  // DERP identity (set at handshake).
  NodePublic key_;
  derp::ClientInfo clientInfo_;
  bool canMesh_ = false;
  bool isProber_ = false;
  bool preferred_ = false;
  bool registered_ = false;
  bool pending_ = false;  // see markPending(); loop thread
  std::optional<uint64_t> admissionId_;  // question pending with AdmissionAsker
  std::unordered_map<NodePublic, uint64_t, crypto::NodePublicHash> sentTo_;
  // NotHere PeerGone limiter: 1/s, burst 3.
  double notHereTokens_ = 3;
  TimePoint notHereLast_{};

  // ---- cross-thread, guarded by qmu_
  std::mutex qmu_;
  std::vector<QueuedPacket> discoQ_;  // <= kPerClientSendQueueDepth, oldest first
  std::vector<QueuedPacket> dataQ_;
  std::vector<std::pair<NodePublic, derp::PeerGoneReason>> peerGoneQ_;
  struct MeshUpdate {
    NodePublic key;
    std::array<uint8_t, 16> ip16;
    uint16_t port;
    uint8_t flags;
    bool present;
  };
  std::vector<MeshUpdate> meshQ_;
  std::optional<std::array<uint8_t, 8>> pendingPong_;  // loop thread only
  bool qClosed_ = false;       // destination gone: new packets are dropped
  bool scheduled_ = false;     // in the loop's inbox
  std::optional<CloseReason> closeRequested_;
};

}  // namespace derpd::worker
