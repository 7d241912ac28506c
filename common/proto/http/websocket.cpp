// RFC 6455 framing for DERP over WebSocket. Runs in derp-worker (unprivileged,
// sandboxed) on client bytes, and in the client library on server bytes.
#include "common/proto/http/websocket.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <random>

namespace derpd::http {

namespace {

// RFC 6455 §1.3.
constexpr std::string_view kWsGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// Frame header (RFC 6455 §5.2):
//   byte 0: FIN(1) RSV1(1) RSV2(1) RSV3(1) opcode(4)
//   byte 1: MASK(1) payload-len(7)     126 -> 16-bit BE length follows,
//                                      127 -> 64-bit BE length follows (top bit 0)
//   then the 4-byte masking key when MASK is set, then the payload.
constexpr uint8_t kFin = 0x80;
constexpr uint8_t kRsvMask = 0x70;
constexpr uint8_t kOpcodeMask = 0x0f;
constexpr uint8_t kMaskBit = 0x80;
constexpr uint8_t kLen16 = 126;
constexpr uint8_t kLen64 = 127;
constexpr size_t kMaxControlPayload = 125;

// Unmasked bytes are handed to onData in pieces of at most this size.
constexpr size_t kUnmaskChunk = 4096;

bool isControl(WsOpcode op) { return (uint8_t(op) & 0x08) != 0; }

bool knownOpcode(uint8_t op) {
  switch (op) {
    case 0x0: case 0x1: case 0x2: case 0x8: case 0x9: case 0xa:
      return true;
    default:
      return false;
  }
}

void randomMaskKey(uint8_t key[4]) {
  if (RAND_bytes(key, 4) == 1) return;
  // The mask only protects intermediaries from a browser's chosen bytes
  // (RFC 6455 §10.3); a weaker source is fine if OpenSSL's RNG fails.
  std::random_device rd;
  const uint32_t v = rd();
  putU32BE(key, v);
}

}  // namespace

std::string websocketAccept(std::string_view secWebSocketKey) {
  std::string in;
  in.reserve(secWebSocketKey.size() + kWsGuid.size());
  in.append(secWebSocketKey);
  in.append(kWsGuid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digestLen = 0;
  if (EVP_Digest(in.data(), in.size(), digest, &digestLen, EVP_sha1(), nullptr) != 1 ||
      digestLen != 20) {
    return {};
  }
  unsigned char b64[32];  // 4 * ceil(20 / 3) = 28, plus NUL
  const int n = EVP_EncodeBlock(b64, digest, int(digestLen));
  if (n <= 0) return {};
  return std::string(reinterpret_cast<const char*>(b64), size_t(n));
}

void appendWsFrame(Bytes& out, WsOpcode op, ByteView payload, bool mask) {
  const uint64_t len = payload.size();
  const uint8_t maskBit = mask ? kMaskBit : 0;
  out.push_back(uint8_t(kFin | uint8_t(op)));
  if (len < kLen16) {
    out.push_back(uint8_t(maskBit | uint8_t(len)));
  } else if (len <= 0xffff) {
    out.push_back(uint8_t(maskBit | kLen16));
    out.push_back(uint8_t(len >> 8));
    out.push_back(uint8_t(len));
  } else {
    out.push_back(uint8_t(maskBit | kLen64));
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(uint8_t(len >> shift));
  }
  if (!mask) {
    out.insert(out.end(), payload.begin(), payload.end());
    return;
  }
  uint8_t key[4];
  randomMaskKey(key);
  out.insert(out.end(), key, key + 4);
  const size_t start = out.size();
  out.resize(start + payload.size());
  uint8_t* dst = out.data() + start;
  for (size_t i = 0; i < payload.size(); ++i) dst[i] = payload[i] ^ key[i & 3];
}

void appendWsClose(Bytes& out, uint16_t code, std::string_view reason, bool mask) {
  // A control payload is at most 125 bytes: the code takes 2, so the reason
  // is cut to 123, backing off so a UTF-8 sequence is not split.
  constexpr size_t kMaxReason = kMaxControlPayload - 2;
  if (reason.size() > kMaxReason) {
    size_t cut = kMaxReason;
    while (cut > 0 && (uint8_t(reason[cut]) & 0xc0) == 0x80) --cut;
    reason = reason.substr(0, cut);
  }
  uint8_t payload[kMaxControlPayload];
  payload[0] = uint8_t(code >> 8);
  payload[1] = uint8_t(code);
  for (size_t i = 0; i < reason.size(); ++i) payload[2 + i] = uint8_t(reason[i]);
  appendWsFrame(out, WsOpcode::Close, ByteView(payload, 2 + reason.size()), mask);
}

WsDecoder::WsDecoder(bool expectMasked, uint64_t maxFrameLen)
    : expectMasked_(expectMasked), maxFrameLen_(maxFrameLen) {}

Result<void> WsDecoder::feed(ByteView in, Events& ev, uint16_t* closeCode) {
  auto fail = [&](uint16_t code, const char* msg) -> Result<void> {
    state_ = State::Failed;
    failCode_ = code;
    control_.clear();
    if (closeCode != nullptr) *closeCode = code;
    return makeError(std::string("websocket: ") + msg);
  };

  size_t i = 0;
  while (true) {
    switch (state_) {
      case State::Failed:
        if (closeCode != nullptr) *closeCode = failCode_;
        return makeError("websocket: decoder already failed");

      case State::Head: {
        if (i == in.size()) return okResult();
        while (headHave_ < 2 && i < in.size()) head_[headHave_++] = in[i++];
        if (headHave_ < 2) return okResult();
        headHave_ = 0;
        const uint8_t b0 = head_[0], b1 = head_[1];
        fin_ = (b0 & kFin) != 0;
        masked_ = (b1 & kMaskBit) != 0;
        const uint8_t op = b0 & kOpcodeMask;
        const uint8_t len7 = b1 & 0x7f;
        if ((b0 & kRsvMask) != 0) return fail(kWsCloseProtocolError, "reserved bits set");
        if (!knownOpcode(op)) return fail(kWsCloseProtocolError, "unknown opcode");
        if (masked_ != expectMasked_) {
          return fail(kWsCloseProtocolError, expectMasked_ ? "unmasked client frame" : "masked server frame");
        }
        op_ = WsOpcode(op);
        if (op_ == WsOpcode::Text) return fail(kWsCloseUnsupportedData, "text message");
        if (isControl(op_)) {
          if (!fin_) return fail(kWsCloseProtocolError, "fragmented control frame");
          if (len7 > kMaxControlPayload) return fail(kWsCloseProtocolError, "control frame too long");
        } else if (op_ == WsOpcode::Binary) {
          if (inMessage_) return fail(kWsCloseProtocolError, "new message inside a fragmented message");
          inMessage_ = !fin_;
        } else {  // Continuation
          if (!inMessage_) return fail(kWsCloseProtocolError, "continuation without a message");
          inMessage_ = !fin_;
        }
        if (len7 == kLen16 || len7 == kLen64) {
          extNeed_ = len7 == kLen16 ? 2 : 8;
          extHave_ = 0;
          state_ = State::ExtLen;
        } else {
          left_ = len7;
          if (!isControl(op_) && left_ > maxFrameLen_) return fail(kWsCloseTooBig, "frame too long");
          maskHave_ = 0;
          state_ = State::MaskKey;
        }
        break;
      }

      case State::ExtLen: {
        while (extHave_ < extNeed_ && i < in.size()) ext_[extHave_++] = in[i++];
        if (extHave_ < extNeed_) return okResult();
        uint64_t len = 0;
        for (size_t k = 0; k < extNeed_; ++k) len = (len << 8) | ext_[k];
        if (extNeed_ == 8 && (len >> 63) != 0) return fail(kWsCloseProtocolError, "length with top bit set");
        if (len > maxFrameLen_) return fail(kWsCloseTooBig, "frame too long");
        left_ = len;
        maskHave_ = 0;
        state_ = State::MaskKey;
        break;
      }

      case State::MaskKey: {
        if (masked_) {
          while (maskHave_ < 4 && i < in.size()) mask_[maskHave_++] = in[i++];
          if (maskHave_ < 4) return okResult();
        }
        maskPos_ = 0;
        control_.clear();
        state_ = State::Payload;
        break;
      }

      case State::Payload: {
        const size_t avail = in.size() - i;
        const size_t n = left_ < avail ? size_t(left_) : avail;
        ByteView chunk = in.subspan(i, n);
        i += n;
        left_ -= n;
        if (isControl(op_)) {
          const size_t at = control_.size();
          control_.insert(control_.end(), chunk.begin(), chunk.end());
          if (masked_) {
            for (size_t k = at; k < control_.size(); ++k) control_[k] ^= mask_[(maskPos_++) & 3];
          }
        } else if (!masked_) {
          if (!chunk.empty()) ev.onData(chunk);
        } else {
          std::array<uint8_t, kUnmaskChunk> buf;
          while (!chunk.empty()) {
            const size_t m = chunk.size() < buf.size() ? chunk.size() : buf.size();
            for (size_t k = 0; k < m; ++k) buf[k] = chunk[k] ^ mask_[(maskPos_++) & 3];
            ev.onData(ByteView(buf.data(), m));
            chunk = chunk.subspan(m);
          }
        }
        if (left_ > 0) return okResult();  // input exhausted mid-payload
        if (isControl(op_)) {
          // RFC 6455 §5.5.1: a close body, if any, starts with a 2-byte code.
          if (op_ == WsOpcode::Close && control_.size() == 1) {
            return fail(kWsCloseProtocolError, "close frame with a 1-byte body");
          }
          ev.onControl(op_, control_);
          control_.clear();
        }
        state_ = State::Head;
        break;
      }
    }
  }
}

}  // namespace derpd::http
