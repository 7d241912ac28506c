// Unit tests for common/proto/http/websocket.{hpp,cpp}: accept key, framing,
// and the streaming decoder, checked against the d-websocket transcript
// (real derper <-> coder/websocket client).
#include "common/proto/http/websocket.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/proto/http/http.hpp"
#include "support/vectors.hpp"

namespace derpd::http {
namespace {

using derpd::test::hexBytes;
using derpd::test::loadVectorJson;
using derpd::test::readVectorFile;

struct Collector : WsDecoder::Events {
  Bytes data;
  size_t dataCalls = 0;
  std::vector<std::pair<WsOpcode, Bytes>> controls;
  void onData(ByteView d) override {
    EXPECT_FALSE(d.empty());
    data.insert(data.end(), d.begin(), d.end());
    ++dataCalls;
  }
  void onControl(WsOpcode op, ByteView p) override { controls.emplace_back(op, Bytes(p.begin(), p.end())); }
};

// Raw frame builder for cases appendWsFrame cannot produce (FIN clear, RSV,
// odd opcodes, chosen length encodings and mask keys).
struct RawFrame {
  bool fin = true;
  uint8_t rsv = 0;  // bits 0x70
  uint8_t opcode = 0x2;
  bool masked = false;
  uint8_t maskKey[4] = {0x11, 0x22, 0x33, 0x44};
  int lenForm = 0;            // 0 = minimal, 16 or 64 = force that form
  std::optional<uint64_t> declaredLen{};  // lie about the length
  Bytes payload{};

  Bytes encode() const {
    Bytes out;
    out.push_back(uint8_t((fin ? 0x80 : 0) | rsv | opcode));
    const uint64_t len = declaredLen ? *declaredLen : payload.size();
    const uint8_t m = masked ? 0x80 : 0;
    if (lenForm == 64 || (lenForm == 0 && len > 0xffff)) {
      out.push_back(m | 127);
      for (int s = 56; s >= 0; s -= 8) out.push_back(uint8_t(len >> s));
    } else if (lenForm == 16 || (lenForm == 0 && len >= 126)) {
      out.push_back(m | 126);
      out.push_back(uint8_t(len >> 8));
      out.push_back(uint8_t(len));
    } else {
      out.push_back(uint8_t(m | len));
    }
    if (masked) out.insert(out.end(), maskKey, maskKey + 4);
    for (size_t i = 0; i < payload.size(); ++i) out.push_back(masked ? payload[i] ^ maskKey[i & 3] : payload[i]);
    return out;
  }
};

Bytes pattern(size_t n, uint8_t seed = 0) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(i * 131 + seed + (i >> 8));
  return b;
}

// Feeds `wire` in random-sized pieces; returns the first error (if any).
Result<void> feedPieces(WsDecoder& dec, ByteView wire, Collector& c, uint16_t* code, std::mt19937& rng,
                        size_t maxPiece) {
  std::uniform_int_distribution<size_t> dist(1, maxPiece);
  size_t off = 0;
  while (off < wire.size()) {
    const size_t n = std::min(dist(rng), wire.size() - off);
    Result<void> r = dec.feed(wire.subspan(off, n), c, code);
    if (!r) return r;
    off += n;
  }
  return okResult();
}

Bytes concatHex(const nlohmann::json& frames) {
  Bytes out;
  for (const auto& f : frames) {
    Bytes b = hexBytes(f.at("hex").get<std::string>());
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

// ---------------------------------------------------------------------------
// Accept key

TEST(WebSocketAccept, Rfc6455Example) {
  EXPECT_EQ(websocketAccept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(WebSocketAccept, MatchesRealDerper) {
  const nlohmann::json dec = loadVectorJson("transcripts/d-websocket/decoded.json");
  const auto& conn = dec.at("connections").at(0);
  std::string key, accept;
  for (const auto& h : conn.at("http_request").at("headers_in_order")) {
    if (iequals(h.at(0).get<std::string>(), "Sec-WebSocket-Key")) key = h.at(1).get<std::string>();
  }
  for (const auto& h : conn.at("http_response").at("headers_in_order")) {
    if (iequals(h.at(0).get<std::string>(), "Sec-WebSocket-Accept")) accept = h.at(1).get<std::string>();
  }
  ASSERT_FALSE(key.empty());
  ASSERT_FALSE(accept.empty());
  EXPECT_EQ(websocketAccept(key), accept);

  // The same through the parsers, from the raw bytes.
  const std::string c2s = readVectorFile("transcripts/d-websocket/conn1.c2s.bin");
  const std::string s2c = readVectorFile("transcripts/d-websocket/conn1.s2c.bin");
  RequestParse rq = parseRequestHead(c2s);
  ResponseParse rs = parseResponseHead(s2c);
  ASSERT_EQ(rq.status, ParseStatus::Complete);
  ASSERT_EQ(rs.status, ParseStatus::Complete);
  ASSERT_NE(rq.head.get("sec-websocket-key"), nullptr);
  EXPECT_EQ(websocketAccept(*rq.head.get("sec-websocket-key")), *rs.head.get("sec-websocket-accept"));
  EXPECT_TRUE(rq.head.hasToken("Upgrade", "websocket"));
  EXPECT_TRUE(rq.head.hasToken("Sec-WebSocket-Protocol", "derp"));
}

// ---------------------------------------------------------------------------
// The d-websocket transcript through WsDecoder

struct WsDirection {
  const char* file;
  bool masked;
  const char* derpKey;
  const char* wsKey;
};

void checkTranscriptDirection(const WsDirection& d, size_t maxPiece) {
  SCOPED_TRACE(std::string(d.file) + " maxPiece=" + std::to_string(maxPiece));
  const nlohmann::json dec = loadVectorJson("transcripts/d-websocket/decoded.json");
  const auto& conn = dec.at("connections").at(0);
  const std::string wire = readVectorFile(std::string("transcripts/d-websocket/") + d.file);
  size_t headLen = 0;
  if (d.masked) {
    RequestParse p = parseRequestHead(wire);
    ASSERT_EQ(p.status, ParseStatus::Complete);
    headLen = p.head.headLen;
  } else {
    ResponseParse p = parseResponseHead(wire);
    ASSERT_EQ(p.status, ParseStatus::Complete);
    headLen = p.head.headLen;
  }
  const auto& wsFrames = conn.at(d.wsKey);
  ASSERT_EQ(headLen, wsFrames.at(0).at("file_off").get<size_t>());

  // Expected: the DERP frames, and the binary payloads, both concatenated.
  const Bytes derp = concatHex(conn.at(d.derpKey));
  Bytes binPayloads;
  std::vector<std::pair<int, Bytes>> expControls;
  for (const auto& f : wsFrames) {
    EXPECT_EQ(f.at("masked").get<bool>(), d.masked);
    Bytes p = hexBytes(f.at("payload_unmasked_hex").get<std::string>());
    const int op = f.at("opcode").get<int>();
    if (op == 2) {
      binPayloads.insert(binPayloads.end(), p.begin(), p.end());
    } else {
      expControls.emplace_back(op, p);
    }
  }
  EXPECT_EQ(binPayloads, derp);

  WsDecoder wsd(d.masked, 64 * 1024 + 100);
  Collector c;
  uint16_t code = 0;
  std::mt19937 rng(1234 + unsigned(maxPiece));
  ByteView body = asBytes(wire).subspan(headLen);
  Result<void> r = feedPieces(wsd, body, c, &code, rng, maxPiece);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(c.data, derp);
  ASSERT_EQ(c.controls.size(), expControls.size());
  for (size_t i = 0; i < expControls.size(); ++i) {
    EXPECT_EQ(int(c.controls[i].first), expControls[i].first);
    EXPECT_EQ(c.controls[i].second, expControls[i].second);
  }
  // The stream ends with a normal close.
  ASSERT_FALSE(c.controls.empty());
  EXPECT_EQ(c.controls.back().first, WsOpcode::Close);
  ASSERT_EQ(c.controls.back().second.size(), 2u);
  EXPECT_EQ((c.controls.back().second[0] << 8) | c.controls.back().second[1], kWsCloseNormal);
}

TEST(WebSocketTranscript, ClientToServerMasked) {
  for (size_t piece : {size_t(1), size_t(3), size_t(7), size_t(64), size_t(100000)}) {
    checkTranscriptDirection({"conn1.c2s.bin", true, "derp_frames_in_ws_c2s", "websocket_frames_c2s"}, piece);
  }
}

TEST(WebSocketTranscript, ServerToClientUnmasked) {
  for (size_t piece : {size_t(1), size_t(3), size_t(7), size_t(64), size_t(100000)}) {
    checkTranscriptDirection({"conn1.s2c.bin", false, "derp_frames_in_ws_s2c", "websocket_frames_s2c"}, piece);
  }
}

TEST(WebSocketTranscript, WrongMaskModeIsProtocolError) {
  const std::string wire = readVectorFile("transcripts/d-websocket/conn1.c2s.bin");
  const size_t headLen = parseRequestHead(wire).head.headLen;
  WsDecoder wsd(false, 1 << 20);
  Collector c;
  uint16_t code = 0;
  Result<void> r = wsd.feed(asBytes(wire).subspan(headLen), c, &code);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(code, kWsCloseProtocolError);
  EXPECT_TRUE(c.data.empty());
}

// ---------------------------------------------------------------------------
// appendWsFrame / appendWsClose

TEST(WsFrame, HeaderLengthForms) {
  struct Case {
    size_t len;
    size_t headerLen;
    uint8_t len7;
  };
  for (const Case& k : {Case{0, 2, 0}, Case{1, 2, 1}, Case{125, 2, 125}, Case{126, 4, 126}, Case{65535, 4, 126},
                        Case{65536, 10, 127}, Case{70000, 10, 127}}) {
    for (bool mask : {false, true}) {
      SCOPED_TRACE(std::to_string(k.len) + (mask ? " masked" : " unmasked"));
      Bytes out = {0xaa};  // appends, never overwrites
      const Bytes payload = pattern(k.len);
      appendWsFrame(out, WsOpcode::Binary, payload, mask);
      ASSERT_EQ(out.size(), 1 + k.headerLen + (mask ? 4 : 0) + k.len);
      EXPECT_EQ(out[0], 0xaa);
      EXPECT_EQ(out[1], 0x82);
      EXPECT_EQ(out[2], uint8_t((mask ? 0x80 : 0) | k.len7));
      uint64_t declared = k.len7;
      if (k.len7 == 126) declared = (uint64_t(out[3]) << 8) | out[4];
      if (k.len7 == 127) {
        declared = 0;
        for (int i = 0; i < 8; ++i) declared = (declared << 8) | out[3 + i];
      }
      EXPECT_EQ(declared, k.len);
      if (!mask) {
        EXPECT_TRUE(std::equal(payload.begin(), payload.end(), out.begin() + 1 + long(k.headerLen)));
      }
    }
  }
}

TEST(WsFrame, MaskKeysDiffer) {
  // A random key per frame: 8 frames with the same key is a broken RNG.
  std::vector<Bytes> keys;
  for (int i = 0; i < 8; ++i) {
    Bytes out;
    appendWsFrame(out, WsOpcode::Binary, pattern(4), true);
    keys.emplace_back(out.begin() + 2, out.begin() + 6);
  }
  bool anyDiffer = false;
  for (const Bytes& k : keys) anyDiffer |= k != keys[0];
  EXPECT_TRUE(anyDiffer);
}

TEST(WsFrame, RoundTripSizes) {
  std::mt19937 rng(42);
  for (size_t len : {size_t(0), size_t(1), size_t(125), size_t(126), size_t(65535), size_t(65536), size_t(70000)}) {
    for (bool mask : {false, true}) {
      for (size_t maxPiece : {size_t(1), size_t(13), size_t(4096), size_t(200000)}) {
        if (maxPiece == 1 && len > 70000 / 2 && !mask) continue;  // keep the test quick
        SCOPED_TRACE(std::to_string(len) + (mask ? " masked" : " unmasked") + " piece " +
                     std::to_string(maxPiece));
        const Bytes payload = pattern(len, uint8_t(len));
        Bytes wire;
        appendWsFrame(wire, WsOpcode::Binary, payload, mask);
        appendWsFrame(wire, WsOpcode::Ping, asBytes("p"), mask);
        WsDecoder dec(mask, 70000);
        Collector c;
        uint16_t code = 0;
        Result<void> r = feedPieces(dec, wire, c, &code, rng, maxPiece);
        ASSERT_TRUE(r.ok()) << r.error();
        EXPECT_EQ(c.data, payload);
        ASSERT_EQ(c.controls.size(), 1u);
        EXPECT_EQ(c.controls[0].first, WsOpcode::Ping);
        EXPECT_EQ(c.controls[0].second, Bytes{'p'});
      }
    }
  }
}

TEST(WsFrame, CloseFrame) {
  Bytes out;
  appendWsClose(out, kWsClosePolicy, "client must speak the derp subprotocol", false);
  WsDecoder dec(false, 1024);
  Collector c;
  uint16_t code = 0;
  ASSERT_TRUE(dec.feed(out, c, &code).ok());
  ASSERT_EQ(c.controls.size(), 1u);
  EXPECT_EQ(c.controls[0].first, WsOpcode::Close);
  const Bytes& p = c.controls[0].second;
  ASSERT_GE(p.size(), 2u);
  EXPECT_EQ((p[0] << 8) | p[1], 1008);
  EXPECT_EQ(std::string(p.begin() + 2, p.end()), "client must speak the derp subprotocol");

  // The transcript's close frames, byte for byte (unmasked form).
  Bytes normal;
  appendWsClose(normal, kWsCloseNormal, "", false);
  EXPECT_EQ(normal, hexBytes("880203e8"));
}

TEST(WsFrame, CloseReasonTruncatedTo125) {
  for (bool mask : {false, true}) {
    Bytes out;
    appendWsClose(out, kWsCloseNormal, std::string(300, 'r'), mask);
    WsDecoder dec(mask, 16);
    Collector c;
    uint16_t code = 0;
    ASSERT_TRUE(dec.feed(out, c, &code).ok());
    ASSERT_EQ(c.controls.size(), 1u);
    EXPECT_EQ(c.controls[0].second.size(), 125u);
  }
  // A multi-byte UTF-8 character straddling the cut is dropped whole.
  std::string reason(122, 'a');
  reason += "\xc3\xa9";  // bytes 122..123; the cut is at 123
  Bytes out;
  appendWsClose(out, kWsCloseNormal, reason, false);
  EXPECT_EQ(out[1], 2 + 122);
}

// ---------------------------------------------------------------------------
// WsDecoder behaviour

TEST(WsDecoder, FragmentedMessageWithInterleavedControl) {
  for (bool mask : {false, true}) {
    RawFrame a{.fin = false, .opcode = 0x2, .masked = mask, .payload = pattern(10, 1)};
    RawFrame ping{.opcode = 0x9, .masked = mask, .payload = {'h', 'i'}};
    RawFrame b{.fin = false, .opcode = 0x0, .masked = mask, .payload = {}};
    RawFrame c2{.fin = true, .opcode = 0x0, .masked = mask, .payload = pattern(300, 2)};
    RawFrame next{.opcode = 0x2, .masked = mask, .payload = pattern(5, 3)};
    Bytes wire;
    for (const RawFrame* f : {&a, &ping, &b, &c2, &next}) {
      Bytes e = f->encode();
      wire.insert(wire.end(), e.begin(), e.end());
    }
    for (size_t piece : {size_t(1), size_t(2), size_t(1000)}) {
      WsDecoder dec(mask, 1000);
      Collector c;
      uint16_t code = 0;
      std::mt19937 rng(7);
      ASSERT_TRUE(feedPieces(dec, wire, c, &code, rng, piece).ok());
      Bytes exp = a.payload;
      exp.insert(exp.end(), c2.payload.begin(), c2.payload.end());
      exp.insert(exp.end(), next.payload.begin(), next.payload.end());
      EXPECT_EQ(c.data, exp);
      ASSERT_EQ(c.controls.size(), 1u);
      EXPECT_EQ(c.controls[0].first, WsOpcode::Ping);
      EXPECT_EQ(c.controls[0].second, (Bytes{'h', 'i'}));
    }
  }
}

TEST(WsDecoder, StreamsDataWithoutWaitingForWholeFrame) {
  RawFrame f{.opcode = 0x2, .masked = true, .payload = pattern(1000)};
  Bytes wire = f.encode();
  WsDecoder dec(true, 4096);
  Collector c;
  uint16_t code = 0;
  ASSERT_TRUE(dec.feed(ByteView(wire).subspan(0, 2 + 2 + 4 + 10), c, &code).ok());
  EXPECT_EQ(c.data, Bytes(f.payload.begin(), f.payload.begin() + 10));
  ASSERT_TRUE(dec.feed(ByteView(wire).subspan(18), c, &code).ok());
  EXPECT_EQ(c.data, f.payload);
}

TEST(WsDecoder, EmptyFrames) {
  Bytes wire;
  appendWsFrame(wire, WsOpcode::Binary, {}, true);
  appendWsFrame(wire, WsOpcode::Pong, {}, true);
  appendWsFrame(wire, WsOpcode::Close, {}, true);
  WsDecoder dec(true, 0);  // maxFrameLen 0 still allows empty data frames
  Collector c;
  uint16_t code = 0;
  ASSERT_TRUE(dec.feed(wire, c, &code).ok());
  EXPECT_EQ(c.dataCalls, 0u);
  ASSERT_EQ(c.controls.size(), 2u);
  EXPECT_EQ(c.controls[0].first, WsOpcode::Pong);
  EXPECT_TRUE(c.controls[0].second.empty());
  EXPECT_EQ(c.controls[1].first, WsOpcode::Close);
}

TEST(WsDecoder, NonMinimalLengthEncodingAccepted) {
  RawFrame f{.opcode = 0x2, .lenForm = 64, .payload = pattern(3)};
  RawFrame g{.opcode = 0x2, .lenForm = 16, .payload = pattern(4)};
  Bytes wire = f.encode();
  Bytes w2 = g.encode();
  wire.insert(wire.end(), w2.begin(), w2.end());
  WsDecoder dec(false, 100);
  Collector c;
  uint16_t code = 0;
  ASSERT_TRUE(dec.feed(wire, c, &code).ok());
  EXPECT_EQ(c.data.size(), 7u);
}

struct ErrorCase {
  const char* name;
  bool expectMasked;
  uint64_t maxFrameLen;
  std::vector<RawFrame> frames;
  uint16_t code;
};

std::vector<ErrorCase> errorCases() {
  std::vector<ErrorCase> v;
  v.push_back({"text", true, 100, {RawFrame{.opcode = 0x1, .masked = true, .payload = {'x'}}}, kWsCloseUnsupportedData});
  v.push_back({"text fragment", false, 100, {RawFrame{.fin = false, .opcode = 0x1}}, kWsCloseUnsupportedData});
  v.push_back({"rsv1", true, 100, {RawFrame{.rsv = 0x40, .opcode = 0x2, .masked = true}}, kWsCloseProtocolError});
  v.push_back({"rsv2", false, 100, {RawFrame{.rsv = 0x20, .opcode = 0x2}}, kWsCloseProtocolError});
  v.push_back({"rsv3 on ping", false, 100, {RawFrame{.rsv = 0x10, .opcode = 0x9}}, kWsCloseProtocolError});
  v.push_back({"opcode 3", false, 100, {RawFrame{.opcode = 0x3}}, kWsCloseProtocolError});
  v.push_back({"opcode 0xb", true, 100, {RawFrame{.opcode = 0xb, .masked = true}}, kWsCloseProtocolError});
  v.push_back({"opcode 0xf", false, 100, {RawFrame{.opcode = 0xf}}, kWsCloseProtocolError});
  v.push_back({"continuation without message", false, 100, {RawFrame{.opcode = 0x0, .payload = {1}}},
               kWsCloseProtocolError});
  v.push_back({"continuation after finished message", false, 100,
               {RawFrame{.opcode = 0x2, .payload = {1}}, RawFrame{.opcode = 0x0, .payload = {2}}},
               kWsCloseProtocolError});
  v.push_back({"binary inside open message", false, 100,
               {RawFrame{.fin = false, .opcode = 0x2, .payload = {1}}, RawFrame{.opcode = 0x2, .payload = {2}}},
               kWsCloseProtocolError});
  v.push_back({"unmasked to server", true, 100, {RawFrame{.opcode = 0x2, .payload = {1}}}, kWsCloseProtocolError});
  v.push_back({"masked to client", false, 100, {RawFrame{.opcode = 0x2, .masked = true, .payload = {1}}},
               kWsCloseProtocolError});
  v.push_back({"unmasked ping to server", true, 100, {RawFrame{.opcode = 0x9}}, kWsCloseProtocolError});
  v.push_back({"64-bit length top bit", false, UINT64_MAX,
               {RawFrame{.opcode = 0x2, .lenForm = 64, .declaredLen = (uint64_t(1) << 63) | 5}},
               kWsCloseProtocolError});
  v.push_back({"too long 7-bit", false, 10, {RawFrame{.opcode = 0x2, .payload = pattern(11)}}, kWsCloseTooBig});
  v.push_back({"too long 16-bit", true, 1000,
               {RawFrame{.opcode = 0x2, .masked = true, .declaredLen = 1001}}, kWsCloseTooBig});
  v.push_back({"too long 64-bit", false, 65536 + 100,
               {RawFrame{.opcode = 0x2, .declaredLen = 65536 + 101}}, kWsCloseTooBig});
  v.push_back({"huge 64-bit", false, 65536 + 100,
               {RawFrame{.opcode = 0x2, .declaredLen = (uint64_t(1) << 62)}}, kWsCloseTooBig});
  v.push_back({"too long continuation", false, 10,
               {RawFrame{.fin = false, .opcode = 0x2, .payload = pattern(10)},
                RawFrame{.opcode = 0x0, .payload = pattern(11)}},
               kWsCloseTooBig});
  v.push_back({"control len 126", false, 1000, {RawFrame{.opcode = 0x9, .payload = pattern(126)}},
               kWsCloseProtocolError});
  v.push_back({"control 16-bit form", false, 1000, {RawFrame{.opcode = 0xa, .lenForm = 16, .payload = pattern(5)}},
               kWsCloseProtocolError});
  v.push_back({"fragmented ping", false, 1000, {RawFrame{.fin = false, .opcode = 0x9}}, kWsCloseProtocolError});
  v.push_back({"fragmented close", true, 1000, {RawFrame{.fin = false, .opcode = 0x8, .masked = true}},
               kWsCloseProtocolError});
  v.push_back({"close with 1-byte body", false, 1000, {RawFrame{.opcode = 0x8, .payload = {3}}},
               kWsCloseProtocolError});
  return v;
}

TEST(WsDecoder, ErrorCasesWholeAndByteByByte) {
  for (const ErrorCase& e : errorCases()) {
    SCOPED_TRACE(e.name);
    Bytes wire;
    for (const RawFrame& f : e.frames) {
      Bytes b = f.encode();
      wire.insert(wire.end(), b.begin(), b.end());
    }
    for (size_t piece : {size_t(1), size_t(100000)}) {
      WsDecoder dec(e.expectMasked, e.maxFrameLen);
      Collector c;
      uint16_t code = 0;
      std::mt19937 rng(9);
      Result<void> r = feedPieces(dec, wire, c, &code, rng, piece);
      ASSERT_FALSE(r.ok());
      EXPECT_FALSE(r.error().empty());
      EXPECT_EQ(code, e.code);
      // Stays failed; the code is reported again.
      uint16_t again = 0;
      Result<void> r2 = dec.feed(asBytes("\x82\x00"), c, &again);
      EXPECT_FALSE(r2.ok());
      EXPECT_EQ(again, e.code);
      // Nothing from a refused frame reaches the handler.
      EXPECT_TRUE(c.controls.empty());
    }
  }
}

TEST(WsDecoder, ControlFramesNotBoundByMaxFrameLen) {
  WsDecoder dec(false, 4);
  Bytes wire;
  appendWsFrame(wire, WsOpcode::Ping, pattern(125), false);
  Collector c;
  uint16_t code = 0;
  ASSERT_TRUE(dec.feed(wire, c, &code).ok());
  ASSERT_EQ(c.controls.size(), 1u);
  EXPECT_EQ(c.controls[0].second, pattern(125));
}

TEST(WsDecoder, NullCloseCodePointer) {
  WsDecoder dec(true, 10);
  Collector c;
  EXPECT_FALSE(dec.feed(asBytes("\x81\x80\x00\x00\x00\x00"), c, nullptr).ok());
  EXPECT_FALSE(dec.feed(asBytes("\x82\x80"), c, nullptr).ok());
}

}  // namespace
}  // namespace derpd::http
