// derp-worker's per-connection timers seen from a client (PROTOCOL.md §5.5):
// the keepalive period (60 s + jitter in [0, 5 s)) and the 2 s write timeout.
#include <sys/socket.h>

#include <chrono>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

class TimersTest : public WorkerTest {};

// Real clients give up after 120 s of silence; derper sends a KeepAlive
// every 60 s + jitter. An idle client must see one in that window, and not
// earlier.
TEST_F(TimersTest, KeepAliveBetween60And65Seconds) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  auto start = std::chrono::steady_clock::now();
  auto m = a->recv(Millis(67000));
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(m.ok()) << m.error() << " after " << secs << " s";
  EXPECT_TRUE(std::holds_alternative<client::KeepAlive>(*m)) << describe(*m);
  EXPECT_GE(secs, 59.5);
  EXPECT_LE(secs, 66.0);
}

// A client whose socket stops draining is disconnected once the server's
// output makes no progress for 2 s; everyone else keeps relaying.
TEST_F(TimersTest, StalledReaderClosedByWriteTimeout) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(sender, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(sink, dial(*w, keys::bob()));
  DERPD_ASSERT_CONNECT(c, dial(*w, keys::carol()));
  int small = 4096;
  ASSERT_EQ(::setsockopt(sink->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  Bytes big = patternBytes(65536, 7);
  for (int i = 0; i < 200; i++) {
    auto r = sender->sendPacket(sink->publicKey(), big);
    ASSERT_TRUE(r.ok()) << "packet " << i << ": " << r.error();
  }
  EXPECT_TRUE(waitForMetric(*w, "derpd_conn_closes{reason=\"write_timeout\"}", [](double v) { return v >= 1; },
                            Millis(10000)));
  EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 2; }, Millis(5000)));
  EXPECT_TRUE(exchange(*sender, *c, patternBytes(1280, 1)));
}

}  // namespace
}  // namespace derpd::test
