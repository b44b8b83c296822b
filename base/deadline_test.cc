#include "base/deadline.h"

#include <thread>
#include <vector>

#include "absl/time/clock.h"
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
  const int64_t at = d.monotonic_ns();  // fixed now, by this first look
  int64_t after = MonotonicNowNs();
  EXPECT_GE(at, before + 10'000'000'000);
  EXPECT_LE(at, after + 10'000'000'000);
  EXPECT_EQ(d.monotonic_ns(), at);
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

// A finite deadline is fixed when first looked at, never in After(), and then never moves.
TEST(DeadlineTest, FixedWhenFirstLookedAtThenStill) {
  Deadline d = Deadline::After(absl::Milliseconds(20));
  absl::SleepFor(absl::Milliseconds(40));  // longer than the timeout, before any look
  const int64_t first_look = MonotonicNowNs();
  EXPECT_FALSE(d.Expired());  // the first look starts the 20 ms
  EXPECT_GE(d.monotonic_ns(), first_look + 20'000'000);
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_TRUE(d.Expired());
  EXPECT_EQ(d.Remaining(), absl::ZeroDuration());
}

// A copy fixes the original first, so the two can never drift apart.
TEST(DeadlineTest, CopiesShareOneFixedTime) {
  Deadline d = Deadline::After(absl::Seconds(5));
  Deadline copy = d;
  absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(copy.monotonic_ns(), d.monotonic_ns());
  Deadline assigned = Deadline::Infinite();
  assigned = d;
  EXPECT_FALSE(assigned.infinite());
  EXPECT_EQ(assigned.monotonic_ns(), d.monotonic_ns());
}

// Threads looking at one unfixed deadline at once all see the same time.
TEST(DeadlineTest, ConcurrentFirstLooksAgree) {
  for (int round = 0; round < 100; ++round) {
    Deadline d = Deadline::After(absl::Seconds(1));
    int64_t seen[4] = {};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { seen[i] = d.monotonic_ns(); });
    for (std::thread& t : threads) t.join();
    for (int i = 1; i < 4; ++i) ASSERT_EQ(seen[i], seen[0]);
  }
}

TEST(DeadlineTest, HugeTimeoutSaturatesToInfinite) {
  EXPECT_TRUE(Deadline::After(absl::Hours(1e9)).infinite());
}

TEST(DeadlineTest, SliceIsTheEarlierOfTheDeadlineAndTheLength) {
  const int64_t before = MonotonicNowNs();
  const Deadline slice = Deadline::Infinite().Slice(absl::Milliseconds(10));
  EXPECT_FALSE(slice.infinite());
  EXPECT_GE(slice.monotonic_ns(), before + 10'000'000);
  EXPECT_LE(slice.monotonic_ns(), MonotonicNowNs() + 10'000'000);
  const Deadline soon = Deadline::After(absl::Milliseconds(1));
  EXPECT_EQ(soon.Slice(absl::Seconds(10)).monotonic_ns(), soon.monotonic_ns());
  const Deadline late = Deadline::After(absl::Seconds(100));
  EXPECT_LT(late.Slice(absl::Milliseconds(10)).monotonic_ns(), late.monotonic_ns());
  EXPECT_TRUE(Deadline::After(absl::ZeroDuration()).Slice(absl::Seconds(1)).Expired());
}

}  // namespace
}  // namespace mproc
