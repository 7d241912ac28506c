// Bounded memory under abuse (docs/SECURITY.md): a receiver that never
// reads while a sender floods 64 KiB packets, and 10,000 connections opened
// and dropped in bursts, keep derp-worker's RSS under the documented bound,
// and its RSS and descriptor count come back to their baseline afterwards.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>


#include "support/harness.hpp"

namespace derpd::test {
namespace {

constexpr int64_t kMiB = 1 << 20;

// Under ASan freed memory sits in the allocator's quarantine (and shadow
// memory grows with the heap): RSS bounds are for the release build.
#ifdef DERPD_SANITIZED
constexpr bool kCheckRss = false;
#else
constexpr bool kCheckRss = true;
#endif


class AbuseTest : public WorkerTest {
 protected:
  // derpd (plain HTTP, two loops) and its derp-worker's pid, warmed up by
  // one relayed packet so the baseline includes what any client costs once.
  void start() {
    w_ = startDerpd(derpdArgs());
    ASSERT_NE(w_, nullptr);
    worker_ = startedPid(*w_, "derp-worker", 1);
    ASSERT_GT(worker_, 0);
    {
      DERPD_ASSERT_CONNECT(a, dial(*w_, keys::alice()));
      DERPD_ASSERT_CONNECT(b, dial(*w_, keys::bob()));
      ASSERT_TRUE(exchange(*a, *b, asBytes(std::string_view("warm up"))));
    }
    ASSERT_TRUE(waitForMetric(*w_, "derp_current_connections", [](double v) { return v == 0; }));
    baselineRss_ = processRssBytes(worker_);
    baselineFds_ = processFdCount(worker_);
    ASSERT_GT(baselineRss_, 0);
  }

  // RSS and descriptors back near the baseline (derp-worker hands freed
  // memory back within ~10 s).
  ::testing::AssertionResult backToBaseline() {
    bool ok = waitFor([&] {
      return (!kCheckRss || processRssBytes(worker_) <= baselineRss_ + 4 * kMiB) && processFdCount(worker_) <= baselineFds_;
    },
                      Millis(20000), Millis(200));
    if (ok) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "rss " << processRssBytes(worker_) << " (baseline " << baselineRss_ << "), fds "
                                         << processFdCount(worker_) << " (baseline " << baselineFds_ << ")";
  }

  WorkerProcess* w_ = nullptr;
  pid_t worker_ = -1;
  int64_t baselineRss_ = 0;
  int baselineFds_ = 0;
};

// 2,000 packets of 64 KiB to a receiver whose socket is never read: the
// server queues at most 32 of them, then closes the stalled receiver; RSS
// stays within baseline + 32 MiB and returns afterwards.
TEST_F(AbuseTest, FloodToAReceiverThatNeverReads) {
  start();
  DERPD_ASSERT_CONNECT(sink, dial(*w_, keys::bob()));
  int small = 4096;
  ASSERT_EQ(::setsockopt(sink->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  DERPD_ASSERT_CONNECT(src, dial(*w_, keys::alice()));
  Bytes pkt = patternBytes(64 * 1024, 7);
  int64_t peak = 0;
  int sent = 0;
  for (; sent < 2000; ++sent) {
    if (!src->sendPacket(keys::bob().publicKey(), pkt).ok()) break;
    if (sent % 50 == 0) peak = std::max(peak, processRssBytes(worker_));
  }
  EXPECT_EQ(sent, 2000);  // the sender is never held up by the stalled receiver
  peak = std::max(peak, processRssBytes(worker_));
  if (kCheckRss) {
    EXPECT_LT(peak, baselineRss_ + 32 * kMiB) << "baseline " << baselineRss_;
  }
  // The stalled receiver is closed (no write progress for 2 s).
  EXPECT_TRUE(waitForMetric(*w_, "derpd_conn_closes{reason=\"write_timeout\"}", [](double v) { return v >= 1; },
                            Millis(10000)));
  EXPECT_TRUE(waitForMetric(*w_, "derp_packets_dropped_reason{reason=\"queue_head\"}", [](double v) { return v > 0; }));
  src.reset();
  sink.reset();
  EXPECT_TRUE(waitForMetric(*w_, "derp_current_connections", [](double v) { return v == 0; }));
  EXPECT_TRUE(backToBaseline());
}

// 10,000 TCP connections opened and dropped in bursts of 500 (half of them
// after sending part of a request): nothing is left behind.
TEST_F(AbuseTest, TenThousandConnectsAndDisconnects) {
  start();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(w_->port());
  int64_t peak = 0;
  for (int burst = 0; burst < 20; ++burst) {
    std::vector<int> fds;
    for (int i = 0; i < 500; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << burst << "/" << i;
      if (i % 2) {
        static const char part[] = "GET /derp HTTP/1.1\r\nUpgrade: DERP\r\n";
        ASSERT_GT(::send(fd, part, sizeof part - 1, MSG_NOSIGNAL), 0);
      }
      fds.push_back(fd);
    }
    peak = std::max(peak, processRssBytes(worker_));
    for (int fd : fds) ::close(fd);
  }
  if (kCheckRss) {
    EXPECT_LT(peak, baselineRss_ + 32 * kMiB) << "baseline " << baselineRss_;
  }
  EXPECT_TRUE(waitForMetric(*w_, "derpd_handshakes_pending", [](double v) { return v <= 1; }, Millis(10000)));
  EXPECT_TRUE(backToBaseline());
  // Still serving.
  DERPD_ASSERT_CONNECT(x, dial(*w_, keys::alice()));
  DERPD_ASSERT_CONNECT(y, dial(*w_, keys::bob()));
  EXPECT_TRUE(exchange(*x, *y, asBytes(std::string_view("after the storm"))));
}

}  // namespace
}  // namespace derpd::test
