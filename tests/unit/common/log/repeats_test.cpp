// log::Repeats: the first line at once, then one per interval that counts
// what was left out.
#include <gtest/gtest.h>

#include <chrono>

#include "common/log/log.hpp"

namespace derpd::log {
namespace {

using namespace std::chrono_literals;

TEST(LogRepeats, FirstAtOnceThenOnePerIntervalWithTheCount) {
  Repeats r(1s);
  const auto t0 = std::chrono::steady_clock::time_point{} + 100s;
  auto first = r.admit(t0);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, 0u);
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(r.admit(t0 + std::chrono::microseconds(i)).has_value());
  EXPECT_EQ(r.leftOut(), 1000u);
  EXPECT_FALSE(r.admit(t0 + 999ms).has_value());
  auto next = r.admit(t0 + 1s);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(*next, 1001u);
  EXPECT_EQ(r.leftOut(), 0u);
  // Quiet for a while: the next one is logged at once, with nothing left out.
  auto later = r.admit(t0 + 10s);
  ASSERT_TRUE(later.has_value());
  EXPECT_EQ(*later, 0u);
}

}  // namespace
}  // namespace derpd::log
