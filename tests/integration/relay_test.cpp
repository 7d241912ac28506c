// Packet relaying through the real derp-worker (PROTOCOL.md §3-§5), over
// plain HTTP and TLS (hostname and IP-literal certificates), with two event
// loops so deliveries cross loops.
#include <sys/socket.h>

#include <array>
#include <string>
#include <thread>
#include <vector>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

using Mode = WorkerConfig::Mode;

std::string modeName(Mode m) {
  switch (m) {
    case Mode::Plain:
      return "Plain";
    case Mode::TlsLocalhost:
      return "TlsLocalhost";
    case Mode::TlsIp:
      return "TlsIp";
  }
  return "Unknown";
}

class RelayTest : public WorkerTest, public ::testing::WithParamInterface<Mode> {
 protected:
  WorkerProcess* start() {
    WorkerConfig cfg;
    cfg.mode = GetParam();
    return startWorker(cfg);
  }
};

// Packets of 0, 1, 1280 and 65536 bytes both ways, with the right source key
// and exact contents; the byte and packet counters count packet bytes only.
TEST_P(RelayTest, ExchangesPacketsBothWays) {
  WorkerProcess* w = start();
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  EXPECT_EQ(a->serverKey(), keys::serverPublic());
  EXPECT_EQ(b->serverKey(), keys::serverPublic());
  EXPECT_EQ(a->publicKey(), keys::alice().publicKey());
  double bytes = 0;
  int packets = 0;
  uint8_t seed = 1;
  for (size_t n : {size_t(1), size_t(1280), size_t(65536), size_t(0), size_t(65535)}) {
    SCOPED_TRACE(n);
    Bytes data = patternBytes(n, seed++);
    ASSERT_TRUE(exchange(*a, *b, data));
    bytes += 2.0 * n;
    packets += 2;
  }
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_received", [&](double v) { return v == packets; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_sent", [&](double v) { return v == packets; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_bytes_received", [&](double v) { return v == bytes; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_bytes_sent", [&](double v) { return v == bytes; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_dropped", [](double v) { return v == 0; }));
}

// A client may send to itself (§5.3 "self-send is normal").
TEST_P(RelayTest, SelfSend) {
  WorkerProcess* w = start();
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  Bytes data = patternBytes(1000, 7);
  ASSERT_TRUE(a->sendPacket(a->publicKey(), data).ok());
  EXPECT_TRUE(expectPacket(*a, a->publicKey(), data));
}

// Many small packets from one sender to a receiver that reads all the time
// arrive complete and in order: 100 x <= 300 bytes is far below any socket
// buffer, so nothing is slow and no queue may drop (§5.4 drops are for
// receivers that do not keep up).
TEST_P(RelayTest, PreservesOrder) {
  WorkerProcess* w = start();
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  constexpr int kCount = 100;
  auto packet = [](int i) {
    Bytes p = patternBytes(100 + size_t(i) * 2, uint8_t(i));
    p[0] = uint8_t(i);
    return p;
  };
  std::vector<Bytes> got;
  std::string readerError;
  std::thread reader([&] {
    auto deadline = std::chrono::steady_clock::now() + kIoTimeout;
    while (int(got.size()) < kCount && std::chrono::steady_clock::now() < deadline) {
      auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      auto m = b->recv(std::max(left, Millis(1)));
      if (!m.ok()) {
        readerError = m.error();
        return;
      }
      if (auto* p = std::get_if<client::RecvPacket>(&*m)) {
        if (!(p->src == keys::alice().publicKey())) readerError = "packet from another key";
        got.push_back(p->data);
      }
    }
  });
  for (int i = 0; i < kCount; i++) {
    ASSERT_TRUE(a->sendPacket(b->publicKey(), packet(i)).ok()) << i;
  }
  reader.join();
  EXPECT_EQ(readerError, "");
  std::string order;
  for (auto& p : got) order += std::to_string(p.empty() ? -1 : int(p[0])) + " ";
  ASSERT_EQ(int(got.size()), kCount) << "received (first byte = index): " << order << "; drops: queue_head "
                                     << metric(*w, "derp_packets_dropped_reason{reason=\"queue_head\"}").value_or(-1)
                                     << ", queue_tail "
                                     << metric(*w, "derp_packets_dropped_reason{reason=\"queue_tail\"}").value_or(-1);
  for (int i = 0; i < kCount; i++) EXPECT_EQ(got[i], packet(i)) << "packet " << i;
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_dropped", [](double v) { return v == 0; }));
}

// A SendPacket whose packet is 65537 bytes closes the sender's connection
// and only that one (§5.2).
TEST_P(RelayTest, OversizedPacketClosesOnlySender) {
  WorkerProcess* w = start();
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  DERPD_ASSERT_CONNECT(c, dial(*w, keys::carol()));
  ASSERT_TRUE(exchange(*a, *b, patternBytes(10, 1)));
  Bytes packet = patternBytes(65537, 2);
  Bytes frame = rawFrame(0x04, concat({b->publicKey().bytes(), packet}));
  sendRefusedFrame(*a, frame);
  std::vector<client::Message> seen;
  EXPECT_TRUE(expectClosed(*a, kIoTimeout, &seen));
  for (auto& m : seen) EXPECT_FALSE(std::holds_alternative<client::RecvPacket>(m)) << describe(m);
  // b never gets the oversized packet; b and c keep relaying, and b learns that a left.
  auto gone = recvUntil<client::PeerGone>(*b, kIoTimeout);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->key, a->publicKey());
  EXPECT_EQ(gone->reason, derp::PeerGoneReason::Disconnected);
  EXPECT_TRUE(exchange(*b, *c, patternBytes(65536, 3)));
  EXPECT_TRUE(waitForMetric(*w, "derpd_conn_closes{reason=\"bad_frame\"}", [](double v) { return v == 1; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 2; }));
}

// Ping -> Pong with the same 8 bytes (§5.6); counters got_ping / sent_pong.
TEST_P(RelayTest, PingPong) {
  WorkerProcess* w = start();
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  ASSERT_TRUE(pingPong(*a, {1, 2, 3, 4, 5, 6, 7, 8}));
  ASSERT_TRUE(pingPong(*a, {0xff, 0, 0xfe, 1, 0xfd, 2, 0xfc, 3}));
  // A Ping longer than 8 bytes (up to 1000) is answered with its first 8.
  Bytes longPing = {9, 8, 7, 6, 5, 4, 3, 2};
  longPing.resize(1000, 0xab);
  ASSERT_TRUE(a->sendRaw(rawFrame(0x12, longPing)).ok());
  auto pong = recvUntil<client::Pong>(*a, kIoTimeout);
  ASSERT_TRUE(pong.ok()) << pong.error();
  EXPECT_EQ(pong->data, (std::array<uint8_t, 8>{9, 8, 7, 6, 5, 4, 3, 2}));
  EXPECT_TRUE(waitForMetric(*w, "derp_got_ping", [](double v) { return v == 3; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_sent_pong", [](double v) { return v == 3; }));
  // Still a working connection.
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  EXPECT_TRUE(exchange(*a, *b, patternBytes(100, 4)));
}

// NotePreferred moves derp_current_home_connections (§5.6); disconnecting a
// preferred client decrements it.
TEST_P(RelayTest, NotePreferredGauge) {
  WorkerProcess* w = start();
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  ASSERT_TRUE(a->notePreferred(true).ok());
  ASSERT_TRUE(pingPong(*a, {1, 1, 1, 1, 1, 1, 1, 1}));  // the frame before it has been read
  EXPECT_TRUE(waitForMetric(*w, "derp_current_home_connections", [](double v) { return v == 1; }));
  ASSERT_TRUE(b->notePreferred(true).ok());
  ASSERT_TRUE(b->notePreferred(true).ok());  // no change
  ASSERT_TRUE(pingPong(*b, {2, 2, 2, 2, 2, 2, 2, 2}));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_home_connections", [](double v) { return v == 2; }));
  ASSERT_TRUE(a->notePreferred(false).ok());
  ASSERT_TRUE(pingPong(*a, {3, 3, 3, 3, 3, 3, 3, 3}));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_home_connections", [](double v) { return v == 1; }));
  b->close();
  EXPECT_TRUE(waitForMetric(*w, "derp_current_home_connections", [](double v) { return v == 0; }));
  // Home moves count only > 5 s after connect.
  EXPECT_TRUE(waitForMetric(*w, "derp_home_moves_in", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_home_moves_out", [](double v) { return v == 0; }));
}

INSTANTIATE_TEST_SUITE_P(Transports, RelayTest,
                         ::testing::Values(Mode::Plain, Mode::TlsLocalhost, Mode::TlsIp),
                         [](const ::testing::TestParamInfo<Mode>& i) { return modeName(i.param); });

// ---------------------------------------------------------------------------
// PeerGone (§5.3, §5.10)

class PeerGoneTest : public WorkerTest {};

// B sent to A; B leaves -> A gets PeerGone(B, Disconnected). PeerGone goes
// to the peers the leaving key sent to (sentTo[B], §5.10; Go's
// notePeerGoneFromRegionLocked "parties that key has sent to previously"),
// so C, which only sent to B, hears nothing.
TEST_F(PeerGoneTest, DisconnectedToThoseItSentTo) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  DERPD_ASSERT_CONNECT(c, dial(*w, keys::carol()));
  Bytes data = patternBytes(64, 1);
  ASSERT_TRUE(b->sendPacket(a->publicKey(), data).ok());
  ASSERT_TRUE(expectPacket(*a, b->publicKey(), data));
  ASSERT_TRUE(c->sendPacket(b->publicKey(), data).ok());
  ASSERT_TRUE(expectPacket(*b, c->publicKey(), data));
  b->close();
  auto gone = recvUntil<client::PeerGone>(*a, kIoTimeout);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->key, keys::bob().publicKey());
  EXPECT_EQ(gone->reason, derp::PeerGoneReason::Disconnected);
  EXPECT_TRUE(expectQuiet(*c, Millis(300), [](const client::Message& m) {
    return std::holds_alternative<client::PeerGone>(m);
  }));
  EXPECT_TRUE(waitForMetric(*w, "derp_peer_gone_disconnected_frames", [](double v) { return v == 1; }));
}

// The same when the leaving client is closed by the server (a bad frame).
TEST_F(PeerGoneTest, DisconnectedWhenServerClosesSender) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  Bytes data = patternBytes(64, 2);
  ASSERT_TRUE(b->sendPacket(a->publicKey(), data).ok());
  ASSERT_TRUE(expectPacket(*a, b->publicKey(), data));
  sendRefusedFrame(*b, rawFrame(0x07, Bytes{1, 1}));
  EXPECT_TRUE(expectClosed(*b));
  auto gone = recvUntil<client::PeerGone>(*a, kIoTimeout);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->key, keys::bob().publicKey());
  EXPECT_EQ(gone->reason, derp::PeerGoneReason::Disconnected);
}

// Disco-looking packet to an absent key -> PeerGone(absent, NotHere); a
// non-disco one (or one of 61 bytes with the magic) -> nothing but the
// unknown_dest drop counter.
TEST_F(PeerGoneTest, NotHereOnlyForDisco) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  const auto absent = keys::absent().publicKey();
  auto isPeerGone = [](const client::Message& m) { return std::holds_alternative<client::PeerGone>(m); };

  ASSERT_TRUE(a->sendPacket(absent, patternBytes(100, 9)).ok());
  Bytes shortDisco = discoPacket();
  shortDisco.resize(61);
  ASSERT_TRUE(a->sendPacket(absent, shortDisco).ok());
  std::vector<client::Message> skipped;
  ASSERT_TRUE(pingPong(*a, {4, 4, 4, 4, 4, 4, 4, 4}, kIoTimeout, &skipped));
  for (auto& m : skipped) EXPECT_FALSE(isPeerGone(m)) << describe(m);
  EXPECT_TRUE(expectQuiet(*a, Millis(300), isPeerGone));
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_dropped_reason{reason=\"unknown_dest\"}",
                            [](double v) { return v == 2; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_dropped_type{type=\"other\"}", [](double v) { return v == 2; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_peer_gone_not_here_frames", [](double v) { return v == 0; }));

  ASSERT_TRUE(a->sendPacket(absent, discoPacket()).ok());
  auto gone = recvUntil<client::PeerGone>(*a, kIoTimeout);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->key, absent);
  EXPECT_EQ(gone->reason, derp::PeerGoneReason::NotHere);
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_dropped_reason{reason=\"unknown_dest\"}",
                            [](double v) { return v == 3; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_dropped_type{type=\"disco\"}", [](double v) { return v == 1; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_peer_gone_not_here_frames", [](double v) { return v == 1; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_dropped", [](double v) { return v == 3; }));
}

// ---------------------------------------------------------------------------
// Duplicate keys (§5.8)

class DupKeyTest : public WorkerTest {};

TEST_F(DupKeyTest, NewestGetsPacketsUntilOlderSpeaks) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  DERPD_ASSERT_CONNECT(a1, dial(*w, keys::alice()));
  ASSERT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 2; }));
  DERPD_ASSERT_CONNECT(a2, dial(*w, keys::alice()));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 3; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_keys", [](double v) { return v == 1; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_conns", [](double v) { return v == 2; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_total_dup_client_conns", [](double v) { return v == 1; }));
  auto isPacket = [](const client::Message& m) { return std::holds_alternative<client::RecvPacket>(m); };

  // alice (the newest conn) sends to b, so b will hear PeerGone(alice) once
  // alice is entirely gone (§5.10).
  Bytes hello = patternBytes(50, 9);
  ASSERT_TRUE(a2->sendPacket(b->publicKey(), hello).ok());
  ASSERT_TRUE(expectPacket(*b, keys::alice().publicKey(), hello));

  // Packets go to the newest connection; the older one stays open and quiet.
  Bytes p1 = patternBytes(500, 1);
  ASSERT_TRUE(b->sendPacket(keys::alice().publicKey(), p1).ok());
  ASSERT_TRUE(expectPacket(*a2, b->publicKey(), p1));
  EXPECT_TRUE(expectQuiet(*a1, Millis(300), isPacket));

  // Any frame from the older one makes it the active one.
  ASSERT_TRUE(pingPong(*a1, {1, 2, 3, 4, 5, 6, 7, 8}));
  Bytes p2 = patternBytes(600, 2);
  ASSERT_TRUE(b->sendPacket(keys::alice().publicKey(), p2).ok());
  ASSERT_TRUE(expectPacket(*a1, b->publicKey(), p2));
  EXPECT_TRUE(expectQuiet(*a2, Millis(300), isPacket));

  // And back to the newer one when it speaks (NotePreferred counts too).
  ASSERT_TRUE(a2->notePreferred(false).ok());
  ASSERT_TRUE(pingPong(*a2, {8, 7, 6, 5, 4, 3, 2, 1}));
  Bytes p3 = patternBytes(700, 3);
  ASSERT_TRUE(b->sendPacket(keys::alice().publicKey(), p3).ok());
  ASSERT_TRUE(expectPacket(*a2, b->publicKey(), p3));
  EXPECT_TRUE(expectQuiet(*a1, Millis(300), isPacket));

  // The active one leaves: one connection remains, an ordinary client that
  // gets packets; no PeerGone(alice) while a connection for alice is left.
  a2->close();
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_keys", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_conns", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_total_dup_client_conns", [](double v) { return v == 1; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 2; }));
  Bytes p4 = patternBytes(800, 4);
  ASSERT_TRUE(b->sendPacket(keys::alice().publicKey(), p4).ok());
  ASSERT_TRUE(expectPacket(*a1, b->publicKey(), p4));
  EXPECT_TRUE(expectQuiet(*b, Millis(200), [](const client::Message& m) {
    return std::holds_alternative<client::PeerGone>(m);
  }));
  // The last one leaves: now b hears that alice is gone.
  a1->close();
  auto gone = recvUntil<client::PeerGone>(*b, kIoTimeout);
  ASSERT_TRUE(gone.ok()) << gone.error();
  EXPECT_EQ(gone->key, keys::alice().publicKey());
  EXPECT_EQ(gone->reason, derp::PeerGoneReason::Disconnected);
}

TEST_F(DupKeyTest, ThreeConnectionsGauges) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  DERPD_ASSERT_CONNECT(a1, dial(*w, keys::alice()));
  ASSERT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 2; }));
  DERPD_ASSERT_CONNECT(a2, dial(*w, keys::alice()));
  ASSERT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 3; }));
  DERPD_ASSERT_CONNECT(a3, dial(*w, keys::alice()));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 4; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_keys", [](double v) { return v == 1; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_conns", [](double v) { return v == 3; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_total_dup_client_conns", [](double v) { return v == 2; }));
  Bytes p = patternBytes(300, 5);
  ASSERT_TRUE(b->sendPacket(keys::alice().publicKey(), p).ok());
  ASSERT_TRUE(expectPacket(*a3, b->publicKey(), p));
  auto isPacket = [](const client::Message& m) { return std::holds_alternative<client::RecvPacket>(m); };
  EXPECT_TRUE(expectQuiet(*a1, Millis(200), isPacket));
  EXPECT_TRUE(expectQuiet(*a2, Millis(200), isPacket));
  a1->close();  // an inactive one leaves: still a dup set of two
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_conns", [](double v) { return v == 2; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_keys", [](double v) { return v == 1; }));
  Bytes q = patternBytes(301, 6);
  ASSERT_TRUE(b->sendPacket(keys::alice().publicKey(), q).ok());
  EXPECT_TRUE(expectPacket(*a3, b->publicKey(), q));
  a2->close();
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_conns", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_dup_client_keys", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_total_dup_client_conns", [](double v) { return v == 2; }));
}

// ---------------------------------------------------------------------------
// Slow receivers (§5.4)

class SlowReceiverTest : public WorkerTest {};

// A receiver that never reads (small receive buffer) while a sender floods
// 64 KiB packets: the server drops at the queue head instead of blocking,
// and everyone else keeps relaying.
TEST_F(SlowReceiverTest, QueueHeadDropsAndOthersUnaffected) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(sender, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(sink, dial(*w, keys::bob()));
  DERPD_ASSERT_CONNECT(c, dial(*w, keys::carol()));
  DERPD_ASSERT_CONNECT(d, dial(*w, keys::prober()));
  DERPD_ASSERT_CONNECT(e, dial(*w, keys::fast()));
  int small = 4096;
  ASSERT_EQ(::setsockopt(sink->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);

  // 4 MiB of kernel send buffer + 32 queued packets is well under 400 x 64 KiB.
  constexpr int kFlood = 400;
  Bytes big = patternBytes(65536, 42);
  for (int i = 0; i < kFlood; i++) {
    auto r = sender->sendPacket(sink->publicKey(), big);
    ASSERT_TRUE(r.ok()) << "flood packet " << i << ": " << r.error();
  }
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_dropped_reason{reason=\"queue_head\"}",
                            [](double v) { return v > 0; }, Millis(10000)));
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_dropped_type{type=\"other\"}", [](double v) { return v > 0; }));
  // The sender and other pairs keep relaying.
  EXPECT_TRUE(exchange(*sender, *c, patternBytes(1280, 1)));
  EXPECT_TRUE(exchange(*d, *e, patternBytes(65536, 2)));
  EXPECT_TRUE(exchange(*c, *d, patternBytes(10, 3)));
  auto m = varz(*w);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_GE((*m)["derp_packets_dropped"], (*m)["derp_packets_dropped_reason{reason=\"queue_head\"}"]);
  EXPECT_EQ((*m)["derp_packets_received"], kFlood + 6);
}

}  // namespace
}  // namespace derpd::test
