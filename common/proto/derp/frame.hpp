// DERP framing (PROTOCOL.md §3): type(1) || length(4, big-endian, payload only)
// || payload. Pure functions and an incremental reader; no I/O.
// Included by derp-worker, the client library, probe and bench.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>

#include "common/crypto/keys.hpp"
#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::derp {

using crypto::kKeyLen;
using crypto::NodePublic;

inline constexpr size_t kFrameHeaderLen = 5;
inline constexpr size_t kNonceLen = 24;
inline constexpr size_t kMaxPacketSize = 65536;  // packet bytes after the 32-byte key
inline constexpr int kProtocolVersion = 2;
// "DERP🔑"
inline constexpr std::array<uint8_t, 8> kMagic = {0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91};
// ClientInfo payload bounds: key(32) || nonce(24) || box, at most 256 KiB.
inline constexpr uint32_t kMinClientInfoLen = kKeyLen + kNonceLen;
inline constexpr uint32_t kMaxClientInfoLen = 256 * 1024;
// Clients abort on frames larger than this.
inline constexpr uint32_t kClientMaxFrameLen = 1 << 20;
// Disco packets: "TS💬" magic, and at least magic(6)+key(32)+nonce(24).
inline constexpr std::array<uint8_t, 6> kDiscoMagic = {0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac};
inline constexpr size_t kDiscoMinLen = 62;

enum class FrameType : uint8_t {
  ServerKey = 0x01,      // S->C magic(8) || server pub(32) || reserved
  ClientInfo = 0x02,     // C->S client pub(32) || nonce(24) || box(JSON)
  ServerInfo = 0x03,     // S->C nonce(24) || box(JSON)
  SendPacket = 0x04,     // C->S dst(32) || packet
  RecvPacket = 0x05,     // S->C src(32) || packet
  KeepAlive = 0x06,      // S->C empty
  NotePreferred = 0x07,  // C->S 1 byte: 01 home / 00 not
  PeerGone = 0x08,       // S->C key(32) || reason(1)
  PeerPresent = 0x09,    // S->watcher key(32) || ip16 || port(2) || flags(1)
  ForwardPacket = 0x0a,  // mesh->S src(32) || dst(32) || packet
  WatchConns = 0x10,     // mesh->S empty
  ClosePeer = 0x11,      // mesh->S key(32)
  Ping = 0x12,           // both: 8 bytes
  Pong = 0x13,           // both: 8 bytes
  Health = 0x14,         // S->C UTF-8 text, empty = healthy
  Restarting = 0x15,     // S->C u32 reconnect-in ms || u32 try-for ms
};

enum class PeerGoneReason : uint8_t {
  Disconnected = 0x00,
  NotHere = 0x01,
  MeshConnBroke = 0xf0,  // client-side only; never written by a server
};

// PeerPresent flags.
inline constexpr uint8_t kPeerPresentIsRegular = 0x01;
inline constexpr uint8_t kPeerPresentIsMeshPeer = 0x02;
inline constexpr uint8_t kPeerPresentIsProber = 0x04;
inline constexpr uint8_t kPeerPresentNotIdeal = 0x08;

bool looksLikeDisco(ByteView packet);

// ---- Encoders: each appends one whole frame to `out`. ----
void appendHeader(Bytes& out, FrameType t, uint32_t payloadLen);
void appendServerKey(Bytes& out, const NodePublic& serverKey);
// payload = clientKey || sealed (nonce||box)
void appendClientInfo(Bytes& out, const NodePublic& clientKey, ByteView sealed);
void appendServerInfo(Bytes& out, ByteView sealed);
void appendSendPacket(Bytes& out, const NodePublic& dst, ByteView packet);
void appendRecvPacket(Bytes& out, const NodePublic& src, ByteView packet);
void appendKeepAlive(Bytes& out);
void appendNotePreferred(Bytes& out, bool preferred);
void appendPeerGone(Bytes& out, const NodePublic& peer, PeerGoneReason reason);
// ip16: the IPv6 form (IPv4 as ::ffff:a.b.c.d); port host order.
void appendPeerPresent(Bytes& out, const NodePublic& peer, const std::array<uint8_t, 16>& ip16,
                       uint16_t port, uint8_t flags);
void appendForwardPacket(Bytes& out, const NodePublic& src, const NodePublic& dst,
                         ByteView packet);
void appendWatchConns(Bytes& out);
void appendClosePeer(Bytes& out, const NodePublic& peer);
void appendPing(Bytes& out, const std::array<uint8_t, 8>& data);
void appendPong(Bytes& out, const std::array<uint8_t, 8>& data);
void appendHealth(Bytes& out, std::string_view text);
void appendRestarting(Bytes& out, uint32_t reconnectInMs, uint32_t tryForMs);

// ---- Incremental reader ----
struct FrameHeader {
  uint8_t type;
  uint32_t len;  // payload length
};

// What the reader does with a frame once its header is known. The caller
// decides from the type, the length and its own state (handshake phase, mesh
// or not), before any payload byte is read, as derper does.
enum class HeaderVerdict {
  Deliver,  // buffer the payload (len must be <= kReaderMaxPayload) and deliver it
  Skip,     // discard the payload without buffering it, whatever its length
  Reject,   // fatal: close the connection
};

// Hard cap on a payload the reader will ever buffer, whatever the verdict.
inline constexpr uint32_t kReaderMaxPayload = kMaxClientInfoLen;

struct Frame {
  FrameType type;  // may be a value outside the enum for unknown types
  ByteView payload;  // valid only during the callback
};

class FrameReader {
 public:
  using Classifier = std::function<HeaderVerdict(const FrameHeader&)>;
  // Return false to stop: feed() returns at once and the rest is discarded.
  using FrameCallback = std::function<bool(const Frame&)>;

  explicit FrameReader(Classifier classify, uint32_t maxPayload = kReaderMaxPayload);

  // Consumes all of `in`. Delivered frames that lie whole inside `in` are
  // handed out without a copy; split ones are buffered (at most maxPayload).
  // Errors: a Reject verdict, or Deliver for a length above maxPayload. After
  // an error the reader stays failed.
  Result<void> feed(ByteView in, const FrameCallback& onFrame);

  // Frames skipped (Skip verdict) so far.
  uint64_t skippedFrames() const { return skipped_; }
  // True when no partial frame is pending.
  bool idle() const { return state_ == State::Header && hdrHave_ == 0; }
  // Bytes of the last feed() input that were consumed: all of them unless the
  // callback stopped early or an error occurred. After a stop the reader sits
  // at the frame boundary just after the stopping frame, so the caller may
  // later feed in.subspan(consumed()) to resume.
  size_t consumed() const { return consumed_; }

 private:
  enum class State { Header, Payload, Skipping, Failed };
  Classifier classify_;
  uint32_t maxPayload_;
  State state_ = State::Header;
  uint8_t hdr_[kFrameHeaderLen];
  size_t hdrHave_ = 0;
  FrameHeader cur_{};
  Bytes buf_;           // partial payload of cur_
  uint64_t skipLeft_ = 0;
  uint64_t skipped_ = 0;
  size_t consumed_ = 0;  // of the last feed()'s input
};

// ---- Decoders for server->client frames (client library) ----
struct PeerPresentInfo {
  NodePublic key;
  std::array<uint8_t, 16> ip16{};  // zeros when absent (legacy 32-byte form)
  uint16_t port = 0;
  uint8_t flags = 0;  // 0 = server sends no flags
  bool hasAddr = false;
};
Result<PeerPresentInfo> parsePeerPresent(ByteView payload);  // len >= 32

struct PeerGoneInfo {
  NodePublic key;
  PeerGoneReason reason = PeerGoneReason::Disconnected;  // len 32 => Disconnected
};
Result<PeerGoneInfo> parsePeerGone(ByteView payload);  // len >= 32

// ServerKey payload: magic(8) || key(32) || ignored; 40 <= len <= 1024.
Result<NodePublic> parseServerKey(ByteView payload);

std::string frameTypeName(uint8_t type);

}  // namespace derpd::derp
