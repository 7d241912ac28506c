// Malformed input (PROTOCOL.md §4, §5.2, §2.3): each case closes only the
// offending connection, and a well-behaved pair keeps relaying afterwards.
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/crypto/box.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

using Clock = std::chrono::steady_clock;

Bytes clientInfoFrame(const crypto::NodePublic& claimedKey, const crypto::NodePrivate& sealer,
                      std::string_view json) {
  Bytes sealed = crypto::seal(sealer, keys::serverPublic(), asBytes(json));
  return rawFrame(0x02, concat({claimedKey.bytes(), sealed}));
}

bool isHandshakeSuccess(const client::Message& m) {
  if (std::holds_alternative<client::ServerInfoMsg>(m)) return true;
  if (auto* f = std::get_if<client::OtherFrame>(&m)) return f->type == 0x03;  // ServerInfo in raw mode
  return std::holds_alternative<client::RecvPacket>(m) || std::holds_alternative<client::PeerGone>(m);
}

class BadInputTest : public WorkerTest {
 protected:
  void SetUp() override {
    w_ = startWorker({});
    ASSERT_NE(w_, nullptr);
    auto b = dial(*w_, keys::bob());
    ASSERT_TRUE(b.ok()) << b.error();
    b_ = std::move(b).value();
    auto c = dial(*w_, keys::carol());
    ASSERT_TRUE(c.ok()) << c.error();
    c_ = std::move(c).value();
    ASSERT_TRUE(exchange(*b_, *c_, patternBytes(100, 1)));
  }
  void TearDown() override {
    b_.reset();
    c_.reset();
    WorkerTest::TearDown();
  }
  // The pair connected before the bad input still relays, and a new client
  // can connect and reach it.
  void expectOthersUnaffected() {
    EXPECT_FALSE(b_->closed());
    EXPECT_FALSE(c_->closed());
    EXPECT_TRUE(exchange(*b_, *c_, patternBytes(65536, 2)));
    EXPECT_TRUE(exchange(*c_, *b_, patternBytes(1, 3)));
    auto d = dial(*w_, keys::prober());
    ASSERT_TRUE(d.ok()) << d.error();
    EXPECT_TRUE(exchange(**d, *b_, patternBytes(1280, 4)));
  }
  // A client upgraded to DERP that has not sent ClientInfo.
  std::unique_ptr<client::Client> rawClient(const crypto::NodePrivate& key) {
    auto r = dial(*w_, key, [](client::ClientOptions& o) { o.rawAfterUpgrade = true; });
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  void expectHandshakeRefused(client::Client& c) {
    std::vector<client::Message> seen;
    EXPECT_TRUE(expectClosed(c, kIoTimeout, &seen));
    for (auto& m : seen) EXPECT_FALSE(isHandshakeSuccess(m)) << "got " << describe(m);
  }

  WorkerProcess* w_ = nullptr;
  std::unique_ptr<client::Client> b_, c_;
};

// --- handshake (§4) ---

TEST_F(BadInputTest, ClientInfoSealedWithWrongKey) {
  auto a = rawClient(keys::alice());
  ASSERT_NE(a, nullptr);
  // Claims alice's key, sealed with bob's: the box does not open.
  ASSERT_TRUE(a->sendRaw(clientInfoFrame(keys::alice().publicKey(), keys::bob(),
                                         R"({"version":2,"CanAckPings":true})"))
                  .ok());
  expectHandshakeRefused(*a);
  EXPECT_TRUE(waitForMetric(*w_, "derpd_conn_closes{reason=\"bad_handshake\"}", [](double v) { return v == 1; }));
  expectOthersUnaffected();
}

TEST_F(BadInputTest, ClientInfoInvalidJson) {
  auto a = rawClient(keys::alice());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->sendRaw(clientInfoFrame(keys::alice().publicKey(), keys::alice(), "{\"version\":2,")).ok());
  expectHandshakeRefused(*a);
  EXPECT_TRUE(waitForMetric(*w_, "derpd_conn_closes{reason=\"bad_handshake\"}", [](double v) { return v == 1; }));
  expectOthersUnaffected();
}

TEST_F(BadInputTest, ClientInfoNotAnObject) {
  auto a = rawClient(keys::alice());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->sendRaw(clientInfoFrame(keys::alice().publicKey(), keys::alice(), "[2]")).ok());
  expectHandshakeRefused(*a);
  expectOthersUnaffected();
}

TEST_F(BadInputTest, ClientInfoZeroKey) {
  auto a = rawClient(keys::alice());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->sendRaw(clientInfoFrame(crypto::NodePublic(), keys::alice(), R"({"version":2})")).ok());
  expectHandshakeRefused(*a);
  expectOthersUnaffected();
}

TEST_F(BadInputTest, ClientInfoTooShort) {
  auto a = rawClient(keys::alice());
  ASSERT_NE(a, nullptr);
  Bytes payload = concat({keys::alice().publicKey().bytes(), patternBytes(23, 1)});  // 55 < 56
  ASSERT_TRUE(a->sendRaw(rawFrame(0x02, payload)).ok());
  expectHandshakeRefused(*a);
  expectOthersUnaffected();
}

TEST_F(BadInputTest, ClientInfoTooLong) {
  auto a = rawClient(keys::alice());
  ASSERT_NE(a, nullptr);
  // 256 KiB + 1: refused on the header, before the payload is read.
  sendRefusedFrame(*a, concat({rawFrameHeader(0x02, 256 * 1024 + 1), keys::alice().publicKey().bytes()}));
  expectHandshakeRefused(*a);
  expectOthersUnaffected();
}

TEST_F(BadInputTest, FirstFrameNotClientInfo) {
  auto a = rawClient(keys::alice());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->sendRaw(rawFrame(0x04, concat({keys::bob().publicKey().bytes(), patternBytes(10, 1)}))).ok());
  expectHandshakeRefused(*a);
  EXPECT_TRUE(waitForMetric(*w_, "derpd_conn_closes{reason=\"bad_handshake\"}", [](double v) { return v == 1; }));
  // bob must not have received the packet.
  EXPECT_TRUE(expectQuiet(*b_, Millis(200)));
  expectOthersUnaffected();
}

TEST_F(BadInputTest, FirstFramePing) {
  auto a = rawClient(keys::alice());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->sendRaw(rawFrame(0x12, Bytes{1, 2, 3, 4, 5, 6, 7, 8})).ok());
  std::vector<client::Message> seen;
  EXPECT_TRUE(expectClosed(*a, kIoTimeout, &seen));
  for (auto& m : seen) {
    EXPECT_FALSE(isHandshakeSuccess(m) || std::holds_alternative<client::Pong>(m)) << "got " << describe(m);
  }
  expectOthersUnaffected();
}

// Connect, upgrade, send nothing: the server closes at the 10 s handshake
// deadline (§4), not before and not much later.
TEST_F(BadInputTest, HandshakeDeadline) {
  auto start = Clock::now();
  auto a = rawClient(keys::alice());
  ASSERT_NE(a, nullptr);
  std::vector<client::Message> seen;
  EXPECT_TRUE(expectClosed(*a, Millis(12500), &seen));
  auto took = std::chrono::duration_cast<Millis>(Clock::now() - start);
  EXPECT_GE(took.count(), 9000) << "closed too early";
  EXPECT_LE(took.count(), 12000) << "closed too late";
  for (auto& m : seen) EXPECT_FALSE(isHandshakeSuccess(m)) << "got " << describe(m);
  EXPECT_TRUE(waitForMetric(*w_, "derpd_conn_closes{reason=\"handshake_timeout\"}", [](double v) { return v == 1; }));
  expectOthersUnaffected();
}

// --- after the handshake (§5.2) ---

struct FatalFrame {
  const char* name;
  std::function<Bytes()> build;
  const char* closeReason;
};

class FatalFrameTest : public BadInputTest, public ::testing::WithParamInterface<FatalFrame> {};

TEST_P(FatalFrameTest, ClosesOnlyThisConnection) {
  DERPD_ASSERT_CONNECT(a, dial(*w_, keys::alice()));
  ASSERT_TRUE(exchange(*a, *b_, patternBytes(50, 9)));
  sendRefusedFrame(*a, GetParam().build());
  std::vector<client::Message> seen;
  EXPECT_TRUE(expectClosed(*a, kIoTimeout, &seen));
  for (auto& m : seen) {
    EXPECT_FALSE(std::holds_alternative<client::Pong>(m) || std::holds_alternative<client::RecvPacket>(m))
        << describe(m);
  }
  // bob learns that alice (who sent to it) is gone; no stray packet arrives.
  std::vector<client::Message> skipped;
  auto gone = recvUntil<client::PeerGone>(*b_, kIoTimeout, nullptr, &skipped);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->key, keys::alice().publicKey());
  for (auto& m : skipped) EXPECT_FALSE(std::holds_alternative<client::RecvPacket>(m)) << describe(m);
  std::string reason = std::string("derpd_conn_closes{reason=\"") + GetParam().closeReason + "\"}";
  EXPECT_TRUE(waitForMetric(*w_, reason, [](double v) { return v == 1; }));
  expectOthersUnaffected();
}

Bytes sendPacketFrame(size_t packetLen) {
  return rawFrame(0x04, concat({keys::bob().publicKey().bytes(), patternBytes(packetLen, 5)}));
}

INSTANTIATE_TEST_SUITE_P(
    Frames, FatalFrameTest,
    ::testing::Values(
        FatalFrame{"SendPacketTooLong", [] { return sendPacketFrame(65537); }, "bad_frame"},
        FatalFrame{"SendPacketHugeLength",
                   [] { return concat({rawFrameHeader(0x04, 0x7fffffff), keys::bob().publicKey().bytes()}); },
                   "bad_frame"},
        FatalFrame{"SendPacketShorterThanKey", [] { return rawFrame(0x04, patternBytes(31, 1)); }, "bad_frame"},
        FatalFrame{"NotePreferredLength2", [] { return rawFrame(0x07, Bytes{1, 1}); }, "bad_frame"},
        FatalFrame{"NotePreferredLength0", [] { return rawFrame(0x07, Bytes{}); }, "bad_frame"},
        FatalFrame{"PingTooShort", [] { return rawFrame(0x12, Bytes{1, 2, 3, 4, 5, 6, 7}); }, "bad_frame"},
        FatalFrame{"PingTooLong", [] { return rawFrame(0x12, patternBytes(1001, 2)); }, "bad_frame"},
        FatalFrame{"WatchConnsFromNonMesh", [] { return rawFrame(0x10, Bytes{}); }, "bad_frame"},
        FatalFrame{"ClosePeerFromNonMesh", [] { return rawFrame(0x11, keys::bob().publicKey().bytes()); },
                   "bad_frame"},
        FatalFrame{"ForwardPacketFromNonMesh",
                   [] {
                     return rawFrame(0x0a, concat({keys::fwdsrc().publicKey().bytes(),
                                                   keys::bob().publicKey().bytes(), patternBytes(20, 3)}));
                   },
                   "bad_frame"}),
    [](const ::testing::TestParamInfo<FatalFrame>& i) { return std::string(i.param.name); });

// Unknown and client-irrelevant frame types are skipped whatever their
// length (§5.2): the connection stays open and keeps working.
TEST_F(BadInputTest, UnknownFramesAreSkipped) {
  DERPD_ASSERT_CONNECT(a, dial(*w_, keys::alice()));
  Bytes huge(2u << 20, 0x5a);  // 2 MiB payload of an unknown type
  ASSERT_TRUE(a->sendRaw(rawFrame(0x7f, huge)).ok());
  ASSERT_TRUE(a->sendRaw(rawFrame(0xff, patternBytes(70000, 1))).ok());
  ASSERT_TRUE(a->sendRaw(rawFrame(0x13, Bytes{1, 2, 3, 4, 5, 6, 7, 8})).ok());  // Pong: skipped
  ASSERT_TRUE(a->sendRaw(rawFrame(0x01, patternBytes(100, 2))).ok());          // ServerKey from a client
  ASSERT_TRUE(a->sendRaw(rawFrame(0x02, patternBytes(300, 3))).ok());          // ClientInfo again
  ASSERT_TRUE(a->sendRaw(rawFrame(0x05, patternBytes(40, 4))).ok());           // RecvPacket from a client
  ASSERT_TRUE(a->sendRaw(rawFrame(0x06, Bytes{})).ok());                       // KeepAlive
  ASSERT_TRUE(a->sendRaw(rawFrame(0x16, Bytes{})).ok());                       // unknown, empty
  ASSERT_TRUE(pingPong(*a, {1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_TRUE(exchange(*a, *b_, patternBytes(65536, 5)));
  EXPECT_TRUE(waitForMetric(*w_, "derp_unknown_frames", [](double v) { return v >= 3; }));
  EXPECT_TRUE(waitForMetric(*w_, "derp_current_connections", [](double v) { return v == 3; }));
  expectOthersUnaffected();
}

// A frame split across many small writes is reassembled.
TEST_F(BadInputTest, FrameInTinyPieces) {
  DERPD_ASSERT_CONNECT(a, dial(*w_, keys::alice()));
  Bytes data = patternBytes(3000, 6);
  Bytes frame = rawFrame(0x04, concat({b_->publicKey().bytes(), data}));
  for (size_t off = 0; off < frame.size(); off += 7) {
    size_t n = std::min<size_t>(7, frame.size() - off);
    ASSERT_TRUE(a->sendRaw(ByteView(frame.data() + off, n)).ok());
  }
  EXPECT_TRUE(expectPacket(*b_, a->publicKey(), data));
}

// --- HTTP (§2.3) ---

TEST_F(BadInputTest, GarbageInsteadOfHttp) {
  const std::string garbage = "\x16\x03\x01 not http at all\r\n\r\n";
  auto got = rawHttp(w_->port(), garbage);
  EXPECT_TRUE(got.serverClosed) << "server kept the connection open";
  if (!got.data.empty()) {
    EXPECT_EQ(got.data.rfind("HTTP/1.1 400", 0), 0u) << got.data.substr(0, 200);
  }
  auto binary = rawHttp(w_->port(), std::string("\x00\x01\x02\x03\xff\xfe\r\n\r\n", 10));
  EXPECT_TRUE(binary.serverClosed) << "server kept the connection open";
  expectOthersUnaffected();
}

TEST_F(BadInputTest, OversizedHttpHead) {
  std::string req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (int i = 0; i < 40; i++) req += "X-Filler-" + std::to_string(i) + ": " + std::string(500, 'x') + "\r\n";
  req += "\r\n";
  ASSERT_GT(req.size(), 16u * 1024);
  auto got = rawHttp(w_->port(), req);
  EXPECT_EQ(got.data.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u) << got.data.substr(0, 200);
  EXPECT_TRUE(got.serverClosed);
  // Same without ever finishing the head.
  std::string endless = "GET / HTTP/1.1\r\nX-Long: " + std::string(20000, 'y');
  auto got2 = rawHttp(w_->port(), endless);
  EXPECT_EQ(got2.data.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u) << got2.data.substr(0, 200);
  EXPECT_TRUE(got2.serverClosed);
  expectOthersUnaffected();
}

}  // namespace
}  // namespace derpd::test
