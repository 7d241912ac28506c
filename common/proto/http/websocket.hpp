// RFC 6455 framing for DERP over WebSocket (PROTOCOL.md §2.5): DERP bytes are
// an unframed stream carried in binary messages. Pure codec, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::http {

// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
std::string websocketAccept(std::string_view secWebSocketKey);

enum class WsOpcode : uint8_t {
  Continuation = 0x0,
  Text = 0x1,
  Binary = 0x2,
  Close = 0x8,
  Ping = 0x9,
  Pong = 0xa,
};

// Close codes used by derp-worker.
inline constexpr uint16_t kWsCloseNormal = 1000;
inline constexpr uint16_t kWsCloseProtocolError = 1002;
inline constexpr uint16_t kWsCloseUnsupportedData = 1003;
inline constexpr uint16_t kWsClosePolicy = 1008;
inline constexpr uint16_t kWsCloseTooBig = 1009;

// Appends one frame with FIN set. `mask` true (client->server) uses a random
// mask key; false (server->client) sends unmasked.
void appendWsFrame(Bytes& out, WsOpcode op, ByteView payload, bool mask);
// Appends a close frame with a status code and reason.
void appendWsClose(Bytes& out, uint16_t code, std::string_view reason, bool mask);

// Incremental decoder. Data of Binary/Continuation messages is streamed out
// (unmasked) as it arrives, without buffering whole messages; control frames
// (<=125 bytes, never fragmented) are buffered and reported whole.
class WsDecoder {
 public:
  struct Events {
    virtual ~Events() = default;
    virtual void onData(ByteView data) = 0;              // binary message bytes
    virtual void onControl(WsOpcode op, ByteView payload) = 0;  // Close/Ping/Pong
  };

  // expectMasked: true on the server (client frames must be masked).
  // maxFrameLen bounds a single data frame's declared length.
  WsDecoder(bool expectMasked, uint64_t maxFrameLen);

  // Consumes all of `in`. Errors (with the close code to send in *closeCode):
  // Text message (1003), unmasked/masked mismatch, reserved bits, unknown
  // opcode, bad continuation, control frame > 125 or fragmented, 64-bit
  // length with the top bit set, close body of 1 byte (1002), data frame
  // longer than maxFrameLen (1009). After an error every later call fails
  // with the same code. Callbacks run inside feed() and must not call it.
  // Masked data reaches onData in pieces of at most 4 KiB; unmasked data is
  // passed through as sliced from `in`.
  Result<void> feed(ByteView in, Events& ev, uint16_t* closeCode);

 private:
  enum class State { Head, ExtLen, MaskKey, Payload, Failed };
  bool expectMasked_;
  uint64_t maxFrameLen_;
  State state_ = State::Head;
  uint8_t head_[2]{};
  size_t headHave_ = 0;
  uint8_t ext_[8]{};
  size_t extNeed_ = 0, extHave_ = 0;
  uint8_t mask_[4]{};
  size_t maskHave_ = 0;
  bool masked_ = false, fin_ = false;
  WsOpcode op_ = WsOpcode::Binary;
  bool inMessage_ = false;  // a fragmented data message is open
  uint64_t left_ = 0;       // payload bytes left in this frame
  uint64_t maskPos_ = 0;
  Bytes control_;           // buffered control payload
  uint16_t failCode_ = 0;   // close code of the error that stopped the decoder
};

}  // namespace derpd::http
