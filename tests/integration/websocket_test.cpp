// DERP over WebSocket (PROTOCOL.md §2.5): relaying between a WebSocket client
// and a plain one, the derp_websocket_accepts counter, text-message refusal.
#include <string>
#include <vector>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

using Mode = WorkerConfig::Mode;

class WebSocketTest : public WorkerTest, public ::testing::WithParamInterface<Mode> {};

TEST_P(WebSocketTest, RelaysToAndFromPlainClient) {
  WorkerConfig cfg;
  cfg.mode = GetParam();
  WorkerProcess* w = startWorker(cfg);
  ASSERT_NE(w, nullptr);
  auto accepts = metric(*w, "derp_websocket_accepts");
  ASSERT_TRUE(accepts.has_value());
  EXPECT_EQ(*accepts, 0);
  DERPD_ASSERT_CONNECT(ws, dial(*w, keys::ws1(), [](client::ClientOptions& o) { o.websocket = true; }));
  DERPD_ASSERT_CONNECT(plain, dial(*w, keys::ws2()));
  EXPECT_EQ(ws->info().httpStatus, 101);
  EXPECT_EQ(ws->serverKey(), keys::serverPublic());
  EXPECT_TRUE(waitForMetric(*w, "derp_websocket_accepts", [](double v) { return v == 1; }));
  uint8_t seed = 1;
  for (size_t n : {size_t(1), size_t(1280), size_t(65536), size_t(40000)}) {
    SCOPED_TRACE(n);
    EXPECT_TRUE(exchange(*ws, *plain, patternBytes(n, seed++)));
  }
  EXPECT_TRUE(pingPong(*ws, {9, 9, 8, 8, 7, 7, 6, 6}));
  // A second WebSocket client talks to the first.
  {
    DERPD_ASSERT_CONNECT(ws3, dial(*w, keys::odd(), [](client::ClientOptions& o) { o.websocket = true; }));
    EXPECT_TRUE(exchange(*ws, *ws3, patternBytes(65536, 9)));
    EXPECT_TRUE(waitForMetric(*w, "derp_websocket_accepts", [](double v) { return v == 2; }));
  }
  // The WebSocket client leaves: the plain one, which it sent to, hears it.
  ws->close();
  auto gone = recvUntil<client::PeerGone>(*plain, kIoTimeout);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->key, keys::ws1().publicKey());
  EXPECT_EQ(gone->reason, derp::PeerGoneReason::Disconnected);
}

INSTANTIATE_TEST_SUITE_P(Transports, WebSocketTest, ::testing::Values(Mode::Plain, Mode::TlsLocalhost),
                         [](const ::testing::TestParamInfo<Mode>& i) {
                           return i.param == Mode::Plain ? std::string("Plain") : std::string("Tls");
                         });

// One server->client WebSocket frame (unmasked), parsed by hand.
struct WsFrame {
  uint8_t opcode = 0;
  bool fin = false;
  std::string payload;
};

Result<WsFrame> readWsFrame(RawConn& c, Millis timeout) {
  auto h = c.readExact(2, timeout);
  if (!h.ok()) return makeError(h.error());
  WsFrame f;
  uint8_t b0 = static_cast<uint8_t>((*h)[0]), b1 = static_cast<uint8_t>((*h)[1]);
  f.fin = b0 & 0x80;
  f.opcode = b0 & 0x0f;
  if (b1 & 0x80) return makeError("server frame is masked");
  uint64_t len = b1 & 0x7f;
  if (len == 126 || len == 127) {
    auto ext = c.readExact(len == 126 ? 2 : 8, timeout);
    if (!ext.ok()) return makeError(ext.error());
    len = 0;
    for (char ch : *ext) len = (len << 8) | static_cast<uint8_t>(ch);
  }
  if (len > (1u << 20)) return makeError("frame too long");
  auto p = c.readExact(static_cast<size_t>(len), timeout);
  if (!p.ok()) return makeError(p.error());
  f.payload = *p;
  return f;
}

std::string maskedFrame(uint8_t opcode, std::string_view payload) {
  std::string f;
  f.push_back(static_cast<char>(0x80 | opcode));
  f.push_back(static_cast<char>(0x80 | payload.size()));  // < 126 bytes here
  const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
  f.append(reinterpret_cast<const char*>(mask), 4);
  for (size_t i = 0; i < payload.size(); i++) f.push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
  return f;
}

class WebSocketRawTest : public WorkerTest {};

// The 101 answer (RFC 6455 accept, subprotocol derp), DERP inside binary
// messages, and a text message refused with close code 1003.
TEST_F(WebSocketRawTest, HandshakeAndTextMessageRefused) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  auto c = RawConn::dial(w->port());
  ASSERT_TRUE(c.ok()) << c.error();
  ASSERT_TRUE((*c)->sendAll(std::string_view("GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                                              "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                              "Sec-WebSocket-Protocol: derp\r\n\r\n"))
                  .ok());
  std::string head;
  for (int i = 0; i < 4096 && head.find("\r\n\r\n") == std::string::npos; i++) {
    auto b = (*c)->readExact(1, kIoTimeout);
    ASSERT_TRUE(b.ok()) << "reading the 101: " << b.error() << " after '" << head << "'";
    head += *b;
  }
  auto r = parseHttpResponse(head, true);
  ASSERT_TRUE(r.has_value()) << head;
  EXPECT_EQ(r->status, 101) << r->statusLine;
  EXPECT_EQ(r->header("Sec-WebSocket-Accept").value_or(""), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  EXPECT_EQ(r->header("Sec-WebSocket-Protocol").value_or(""), "derp");
  // The ServerKey frame arrives inside binary message(s).
  std::string derpBytes;
  for (int i = 0; i < 10 && derpBytes.size() < 45; i++) {
    auto f = readWsFrame(**c, kIoTimeout);
    ASSERT_TRUE(f.ok()) << f.error();
    ASSERT_EQ(f->opcode, 2) << "expected a binary message";
    derpBytes += f->payload;
  }
  ASSERT_GE(derpBytes.size(), 45u);
  EXPECT_EQ(derpBytes.substr(0, 5), std::string("\x01\x00\x00\x00\x28", 5));
  EXPECT_EQ(derpBytes.substr(13, 32), std::string(asChars(keys::serverPublic().bytes())));
  EXPECT_TRUE(waitForMetric(*w, "derp_websocket_accepts", [](double v) { return v == 1; }));

  ASSERT_TRUE((*c)->sendAll(maskedFrame(0x1, "hello")).ok());
  bool sawClose = false;
  for (int i = 0; i < 10; i++) {
    auto f = readWsFrame(**c, kIoTimeout);
    if (!f.ok()) break;  // closed
    if (f->opcode == 0x8) {
      sawClose = true;
      ASSERT_GE(f->payload.size(), 2u);
      int code = (static_cast<uint8_t>(f->payload[0]) << 8) | static_cast<uint8_t>(f->payload[1]);
      EXPECT_EQ(code, 1003);
      break;
    }
  }
  EXPECT_TRUE(sawClose) << "no close frame for a text message";
  EXPECT_TRUE((*c)->waitClosed(kIoTimeout));
}

}  // namespace
}  // namespace derpd::test
