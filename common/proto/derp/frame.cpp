// DERP framing: encoders, the incremental FrameReader, server->client decoders.
#include "common/proto/derp/frame.hpp"

#include <algorithm>
#include <initializer_list>
#include <cstdio>
#include <cstring>

namespace derpd::derp {

namespace {

// A partial-frame buffer larger than this is released after use, so an idle
// connection does not pin up to kReaderMaxPayload bytes.
constexpr size_t kKeepBufferCapacity = 16 * 1024;
// At most this much is reserved up front for a split frame (one full packet
// with its keys); longer payloads grow only as their bytes arrive, so a peer
// cannot make us allocate much more than it actually sends.
constexpr size_t kMaxPrealloc = kMaxPacketSize + 2 * kKeyLen;

// Makes room for n more bytes, growing geometrically so that appending many
// frames to one output buffer stays amortised O(1).
void ensureRoom(Bytes& out, size_t n) {
  if (out.capacity() - out.size() < n) out.reserve(std::max(out.capacity() * 2, out.size() + n));
}

uint8_t* putHeader(uint8_t* p, FrameType t, uint32_t len) {
  p[0] = static_cast<uint8_t>(t);
  putU32BE(p + 1, len);
  return p + kFrameHeaderLen;
}

// header || parts..., with one capacity check.
void appendFrame(Bytes& out, FrameType t, std::initializer_list<ByteView> parts) {
  size_t len = 0;
  for (ByteView p : parts) len += p.size();
  ensureRoom(out, kFrameHeaderLen + len);
  uint8_t hdr[kFrameHeaderLen];
  putHeader(hdr, t, uint32_t(len));
  out.insert(out.end(), hdr, hdr + kFrameHeaderLen);
  for (ByteView p : parts) out.insert(out.end(), p.begin(), p.end());
}

}  // namespace

bool looksLikeDisco(ByteView packet) {
  return packet.size() >= kDiscoMinLen &&
         std::memcmp(packet.data(), kDiscoMagic.data(), kDiscoMagic.size()) == 0;
}

// ---- Encoders ----

void appendHeader(Bytes& out, FrameType t, uint32_t payloadLen) {
  uint8_t hdr[kFrameHeaderLen];
  putHeader(hdr, t, payloadLen);
  out.insert(out.end(), hdr, hdr + kFrameHeaderLen);
}

void appendServerKey(Bytes& out, const NodePublic& serverKey) {
  appendFrame(out, FrameType::ServerKey,
              {ByteView(kMagic.data(), kMagic.size()), serverKey.bytes()});
}

void appendClientInfo(Bytes& out, const NodePublic& clientKey, ByteView sealed) {
  appendFrame(out, FrameType::ClientInfo, {clientKey.bytes(), sealed});
}

void appendServerInfo(Bytes& out, ByteView sealed) {
  appendFrame(out, FrameType::ServerInfo, {sealed});
}

void appendSendPacket(Bytes& out, const NodePublic& dst, ByteView packet) {
  appendFrame(out, FrameType::SendPacket, {dst.bytes(), packet});
}

void appendRecvPacket(Bytes& out, const NodePublic& src, ByteView packet) {
  appendFrame(out, FrameType::RecvPacket, {src.bytes(), packet});
}

void appendKeepAlive(Bytes& out) { appendHeader(out, FrameType::KeepAlive, 0); }

void appendNotePreferred(Bytes& out, bool preferred) {
  uint8_t b = preferred ? 1 : 0;
  appendFrame(out, FrameType::NotePreferred, {ByteView(&b, 1)});
}

void appendPeerGone(Bytes& out, const NodePublic& peer, PeerGoneReason reason) {
  uint8_t r = static_cast<uint8_t>(reason);
  appendFrame(out, FrameType::PeerGone, {peer.bytes(), ByteView(&r, 1)});
}

void appendPeerPresent(Bytes& out, const NodePublic& peer, const std::array<uint8_t, 16>& ip16,
                       uint16_t port, uint8_t flags) {
  // key(32) || ip16 || port(2, big-endian) || flags(1) = 51 bytes
  uint8_t tail[16 + 2 + 1];
  std::memcpy(tail, ip16.data(), 16);
  tail[16] = uint8_t(port >> 8);
  tail[17] = uint8_t(port);
  tail[18] = flags;
  appendFrame(out, FrameType::PeerPresent, {peer.bytes(), ByteView(tail, sizeof tail)});
}

void appendForwardPacket(Bytes& out, const NodePublic& src, const NodePublic& dst,
                         ByteView packet) {
  appendFrame(out, FrameType::ForwardPacket, {src.bytes(), dst.bytes(), packet});
}

void appendWatchConns(Bytes& out) { appendHeader(out, FrameType::WatchConns, 0); }

void appendClosePeer(Bytes& out, const NodePublic& peer) {
  appendFrame(out, FrameType::ClosePeer, {peer.bytes()});
}

void appendPing(Bytes& out, const std::array<uint8_t, 8>& data) {
  appendFrame(out, FrameType::Ping, {ByteView(data.data(), data.size())});
}

void appendPong(Bytes& out, const std::array<uint8_t, 8>& data) {
  appendFrame(out, FrameType::Pong, {ByteView(data.data(), data.size())});
}

void appendHealth(Bytes& out, std::string_view text) {
  appendFrame(out, FrameType::Health, {asBytes(text)});
}

void appendRestarting(Bytes& out, uint32_t reconnectInMs, uint32_t tryForMs) {
  uint8_t b[8];
  putU32BE(b, reconnectInMs);
  putU32BE(b + 4, tryForMs);
  appendFrame(out, FrameType::Restarting, {ByteView(b, sizeof b)});
}

// ---- FrameReader ----

FrameReader::FrameReader(Classifier classify, uint32_t maxPayload)
    : classify_(std::move(classify)), maxPayload_(maxPayload) {}

Result<void> FrameReader::feed(ByteView in, const FrameCallback& onFrame) {
  consumed_ = 0;
  if (state_ == State::Failed) return makeError("frame reader: already failed");
  const uint8_t* p = in.data();
  size_t left = in.size();

  auto fail = [this](std::string msg) -> Result<void> {
    state_ = State::Failed;
    buf_ = Bytes();
    hdrHave_ = 0;
    return makeError(std::move(msg));
  };
  // Hands a complete payload to the callback; false = the caller stopped.
  auto deliver = [&](ByteView payload) -> bool {
    Frame f{static_cast<FrameType>(cur_.type), payload};
    return onFrame(f);
  };

  while (left > 0) {
    switch (state_) {
      case State::Header: {
        if (hdrHave_ == 0 && left >= kFrameHeaderLen) {
          cur_.type = p[0];
          cur_.len = getU32BE(p + 1);
          p += kFrameHeaderLen;
          left -= kFrameHeaderLen;
        } else {
          const size_t take = std::min(kFrameHeaderLen - hdrHave_, left);
          std::memcpy(hdr_ + hdrHave_, p, take);
          hdrHave_ += take;
          p += take;
          left -= take;
          if (hdrHave_ < kFrameHeaderLen) break;  // left == 0 now
          hdrHave_ = 0;
          cur_.type = hdr_[0];
          cur_.len = getU32BE(hdr_ + 1);
        }
        switch (classify_(cur_)) {
          case HeaderVerdict::Reject:
            consumed_ = in.size() - left;
            return fail("frame reader: rejected frame type " + frameTypeName(cur_.type) +
                        " len " + std::to_string(cur_.len));
          case HeaderVerdict::Skip:
            ++skipped_;
            if (cur_.len != 0) {
              skipLeft_ = cur_.len;
              state_ = State::Skipping;
            }
            break;
          case HeaderVerdict::Deliver:
            if (cur_.len > maxPayload_) {
              consumed_ = in.size() - left;
              return fail("frame reader: " + frameTypeName(cur_.type) + " payload of " +
                          std::to_string(cur_.len) + " bytes exceeds the limit of " +
                          std::to_string(maxPayload_));
            }
            if (left >= cur_.len) {
              // Whole in the input: zero copy.
              ByteView payload(p, cur_.len);
              p += cur_.len;
              left -= cur_.len;
              if (!deliver(payload)) {
                consumed_ = in.size() - left;
                return okResult();
              }
            } else {
              buf_.clear();
              buf_.reserve(std::min<size_t>(cur_.len, std::max(kMaxPrealloc, left)));
              buf_.insert(buf_.end(), p, p + left);
              p += left;
              left = 0;
              state_ = State::Payload;
            }
            break;
        }
        break;
      }
      case State::Payload: {
        const size_t take = std::min<size_t>(cur_.len - buf_.size(), left);
        if (buf_.capacity() - buf_.size() < take) {
          const size_t want = std::max(buf_.capacity() * 2, buf_.size() + take);
          buf_.reserve(std::min<size_t>(cur_.len, want));
        }
        buf_.insert(buf_.end(), p, p + take);
        p += take;
        left -= take;
        if (buf_.size() == cur_.len) {
          state_ = State::Header;
          const bool more = deliver(ByteView(buf_.data(), buf_.size()));
          buf_.clear();
          if (buf_.capacity() > kKeepBufferCapacity) Bytes().swap(buf_);
          if (!more) {
            consumed_ = in.size() - left;
            return okResult();
          }
        }
        break;
      }
      case State::Skipping: {
        const size_t take = size_t(std::min<uint64_t>(skipLeft_, left));
        skipLeft_ -= take;
        p += take;
        left -= take;
        if (skipLeft_ == 0) state_ = State::Header;
        break;
      }
      case State::Failed:
        return makeError("frame reader: already failed");
    }
  }
  consumed_ = in.size();
  return okResult();
}

// ---- Decoders ----

Result<PeerPresentInfo> parsePeerPresent(ByteView payload) {
  if (payload.size() < kKeyLen) {
    return makeError("PeerPresent: short payload (" + std::to_string(payload.size()) + " bytes)");
  }
  PeerPresentInfo info;
  info.key = NodePublic::fromRaw(payload.first(kKeyLen));
  // Older servers send the key only, or key || ip16 || port without flags.
  if (payload.size() >= kKeyLen + 18) {
    std::memcpy(info.ip16.data(), payload.data() + kKeyLen, 16);
    info.port = uint16_t(payload[kKeyLen + 16] << 8 | payload[kKeyLen + 17]);
    info.hasAddr = true;
    if (payload.size() >= kKeyLen + 19) info.flags = payload[kKeyLen + 18];
  }
  return info;
}

Result<PeerGoneInfo> parsePeerGone(ByteView payload) {
  if (payload.size() < kKeyLen) {
    return makeError("PeerGone: short payload (" + std::to_string(payload.size()) + " bytes)");
  }
  PeerGoneInfo info;
  info.key = NodePublic::fromRaw(payload.first(kKeyLen));
  if (payload.size() > kKeyLen) info.reason = static_cast<PeerGoneReason>(payload[kKeyLen]);
  return info;
}

Result<NodePublic> parseServerKey(ByteView payload) {
  if (payload.size() < kMagic.size() + kKeyLen || payload.size() > 1024) {
    return makeError("ServerKey: bad length " + std::to_string(payload.size()));
  }
  if (std::memcmp(payload.data(), kMagic.data(), kMagic.size()) != 0) {
    return makeError("ServerKey: bad magic");
  }
  NodePublic key = NodePublic::fromRaw(payload.subspan(kMagic.size(), kKeyLen));
  if (key.isZero()) return makeError("ServerKey: zero key");
  return key;
}

std::string frameTypeName(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::ServerKey: return "ServerKey";
    case FrameType::ClientInfo: return "ClientInfo";
    case FrameType::ServerInfo: return "ServerInfo";
    case FrameType::SendPacket: return "SendPacket";
    case FrameType::RecvPacket: return "RecvPacket";
    case FrameType::KeepAlive: return "KeepAlive";
    case FrameType::NotePreferred: return "NotePreferred";
    case FrameType::PeerGone: return "PeerGone";
    case FrameType::PeerPresent: return "PeerPresent";
    case FrameType::ForwardPacket: return "ForwardPacket";
    case FrameType::WatchConns: return "WatchConns";
    case FrameType::ClosePeer: return "ClosePeer";
    case FrameType::Ping: return "Ping";
    case FrameType::Pong: return "Pong";
    case FrameType::Health: return "Health";
    case FrameType::Restarting: return "Restarting";
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "Unknown(0x%02x)", unsigned(type));
  return buf;
}

}  // namespace derpd::derp
