// A destination's packet queues: 32 deep as derper's, the oldest dropped
// when full (queue_head), never the new packet.
#include <gtest/gtest.h>

#include <vector>

#include "client_conn.hpp"

namespace derpd::worker {
namespace {

TEST(SendQueue, ThirtyTwoDeepDroppingTheHead) {
  EXPECT_EQ(kPerClientSendQueueDepth, 32u) << "derper's per-client queue depth";
  for (const char* which : {"data", "disco"}) {  // one rule for both queues
    SCOPED_TRACE(which);
    std::vector<int> q;
    for (int i = 1; i <= 31; ++i) {
      const QueuePush r = pushDroppingHead(q, i);
      EXPECT_FALSE(r.droppedHead) << i;
      EXPECT_FALSE(r.full) << i;
    }
    QueuePush r = pushDroppingHead(q, 32);
    EXPECT_FALSE(r.droppedHead);
    EXPECT_TRUE(r.full) << "the 32nd packet fills the queue";
    r = pushDroppingHead(q, 33);
    EXPECT_TRUE(r.droppedHead) << "the 33rd drops the oldest";
    EXPECT_TRUE(r.full);
    ASSERT_EQ(q.size(), 32u);
    EXPECT_EQ(q.front(), 2) << "#1 was the one dropped";
    EXPECT_EQ(q.back(), 33) << "the new packet is kept";
    for (size_t i = 0; i < q.size(); ++i) EXPECT_EQ(q[i], int(i) + 2);
  }
}

}  // namespace
}  // namespace derpd::worker
