// The DERP handshake on the wire (PROTOCOL.md §2.3, §4, §12.1-2), driven
// byte by byte over a raw socket: ServerKey first, ServerInfo second, and
// frames pipelined behind the HTTP request belong to DERP.
#include <string>
#include <vector>

#include "common/crypto/box.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

Bytes clientInfo(const crypto::NodePrivate& key, std::string_view json) {
  Bytes sealed = crypto::seal(key, keys::serverPublic(), asBytes(json));
  return rawFrame(0x02, concat({key.publicKey().bytes(), sealed}));
}

// Checks ServerKey then ServerInfo ({"version":2} sealed to `key`).
void expectServerKeyThenInfo(RawConn& c, const crypto::NodePrivate& key) {
  auto sk = c.readFrame(kIoTimeout);
  ASSERT_TRUE(sk.ok()) << "ServerKey: " << sk.error();
  ASSERT_EQ(sk->type, 0x01);
  ASSERT_EQ(sk->payload.size(), 40u);
  EXPECT_TRUE(std::equal(derp::kMagic.begin(), derp::kMagic.end(), sk->payload.begin()));
  EXPECT_EQ(crypto::NodePublic::fromRaw(ByteView(sk->payload).subspan(8, 32)), keys::serverPublic());
  auto si = c.readFrame(kIoTimeout);
  ASSERT_TRUE(si.ok()) << "ServerInfo: " << si.error();
  ASSERT_EQ(si->type, 0x03) << "the frame after ServerKey must be ServerInfo";
  auto plain = crypto::open(key, keys::serverPublic(), si->payload);
  ASSERT_TRUE(plain.ok()) << plain.error();
  EXPECT_EQ(std::string(asChars(*plain)), "{\"version\":2}");
}

class HandshakeTest : public WorkerTest {};

// Request, ClientInfo, NotePreferred, SendPacket and Ping in one write, as
// tailscaled pipelines them: 101, ServerKey, ServerInfo, then the Pong; the
// packet reaches its destination.
TEST_F(HandshakeTest, PipelinedAfterRequest) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));
  auto c = RawConn::dial(w->port());
  ASSERT_TRUE(c.ok()) << c.error();
  Bytes packet = patternBytes(1280, 1);
  std::string req =
      "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\n"
      "Connection: Upgrade\r\nUpgrade: DERP\r\n\r\n";
  Bytes all = concat({asBytes(req), clientInfo(keys::alice(), R"({"version":2,"CanAckPings":true})"),
                      rawFrame(0x07, Bytes{1}), rawFrame(0x04, concat({keys::bob().publicKey().bytes(), packet})),
                      rawFrame(0x12, Bytes{1, 2, 3, 4, 5, 6, 7, 8})});
  ASSERT_TRUE((*c)->sendAll(all).ok());
  auto head = (*c)->readHttpHead(kIoTimeout);
  ASSERT_TRUE(head.ok()) << head.error();
  EXPECT_EQ(*head, std::string("HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                               "Derp-Version: 2\r\nDerp-Public-Key: ") +
                       kServerPublicHex + "\r\n\r\n");
  ASSERT_NO_FATAL_FAILURE(expectServerKeyThenInfo(**c, keys::alice()));
  auto pong = (*c)->readFrame(kIoTimeout);
  ASSERT_TRUE(pong.ok()) << pong.error();
  EXPECT_EQ(pong->type, 0x13);
  EXPECT_EQ(pong->payload, (Bytes{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_TRUE(expectPacket(*bob, keys::alice().publicKey(), packet));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_home_connections", [](double v) { return v == 1; }));
}

// Fast start on the wire: no HTTP bytes, ServerKey is the first byte.
TEST_F(HandshakeTest, FastStartWritesNoHttp) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  auto c = RawConn::dial(w->port());
  ASSERT_TRUE(c.ok()) << c.error();
  std::string req =
      "GET /derp HTTP/1.1\r\nHost: derp.example.com\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n"
      "Derp-Fast-Start: 1\r\n\r\n";
  ASSERT_TRUE((*c)->sendAll(concat({asBytes(req), clientInfo(keys::fast(), R"({"version":2})")})).ok());
  ASSERT_NO_FATAL_FAILURE(expectServerKeyThenInfo(**c, keys::fast()));
}

// ClientInfo JSON as Go's encoding/json reads it (§4): key names are
// case-insensitive and unknown keys are ignored; IsProber sets the prober flag.
TEST_F(HandshakeTest, ClientInfoJsonLeniency) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));
  auto c = RawConn::dial(w->port());
  ASSERT_TRUE(c.ok()) << c.error();
  std::string req = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: derp\r\n\r\n";
  ASSERT_TRUE((*c)->sendAll(concat({asBytes(req), clientInfo(keys::alice(), R"({"VERSION":2,"canackpings":true,)"
                                                                            R"("AppName":"x","Future":{"a":[1,2]}})")}))
                  .ok());
  auto head = (*c)->readHttpHead(kIoTimeout);
  ASSERT_TRUE(head.ok()) << head.error();
  ASSERT_NO_FATAL_FAILURE(expectServerKeyThenInfo(**c, keys::alice()));
  Bytes packet = patternBytes(99, 2);
  ASSERT_TRUE((*c)->sendAll(rawFrame(0x04, concat({keys::bob().publicKey().bytes(), packet}))).ok());
  EXPECT_TRUE(expectPacket(*bob, keys::alice().publicKey(), packet));
}

}  // namespace
}  // namespace derpd::test
