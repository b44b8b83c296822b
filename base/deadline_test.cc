#include "base/deadline.h"

#include "gtest/gtest.h"

namespace mproc {
namespace {

TEST(DeadlineTest, Infinite) {
  Deadline d = Deadline::After(absl::InfiniteDuration());
  EXPECT_TRUE(d.infinite());
  EXPECT_FALSE(d.Expired());
  EXPECT_EQ(d.Remaining(), absl::InfiniteDuration());
  EXPECT_EQ(d.PollTimeoutMs(), -1);
  EXPECT_TRUE(Deadline::Infinite().infinite());
}

TEST(DeadlineTest, ZeroAndNegativeAreAlreadyExpired) {
  for (absl::Duration t : {absl::ZeroDuration(), absl::Seconds(-1)}) {
    Deadline d = Deadline::After(t);
    EXPECT_FALSE(d.infinite());
    EXPECT_TRUE(d.Expired());
    EXPECT_EQ(d.Remaining(), absl::ZeroDuration());
    EXPECT_EQ(d.PollTimeoutMs(), 0);
  }
}

TEST(DeadlineTest, FiniteIsAbsoluteMonotonic) {
  int64_t before = MonotonicNowNs();
  Deadline d = Deadline::After(absl::Seconds(10));
  int64_t after = MonotonicNowNs();
  EXPECT_GE(d.monotonic_ns(), before + 10'000'000'000);
  EXPECT_LE(d.monotonic_ns(), after + 10'000'000'000);
  EXPECT_FALSE(d.Expired());
  EXPECT_LE(d.Remaining(), absl::Seconds(10));
  EXPECT_GT(d.Remaining(), absl::Seconds(5));
  EXPECT_GT(d.PollTimeoutMs(), 5000);
  EXPECT_LE(d.PollTimeoutMs(), 10000);
  timespec ts = d.AbsTimespec();
  EXPECT_EQ(int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec, d.monotonic_ns());
}

TEST(DeadlineTest, PollTimeoutRoundsUp) {
  Deadline d = Deadline::AtMonotonicNs(MonotonicNowNs() + 1'500'000'000);  // ~1.5 s
  EXPECT_GE(d.PollTimeoutMs(), 1);
  Deadline tiny = Deadline::AtMonotonicNs(MonotonicNowNs() + 10'000'000);  // 10 ms
  int ms = tiny.PollTimeoutMs();
  EXPECT_GE(ms, 0);
  EXPECT_LE(ms, 10);
}

TEST(DeadlineTest, HugeTimeoutSaturatesToInfinite) {
  EXPECT_TRUE(Deadline::After(absl::Hours(1e9)).infinite());
}

}  // namespace
}  // namespace mproc
