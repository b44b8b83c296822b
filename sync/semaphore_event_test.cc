#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/event.h"
#include "sync/semaphore.h"
#include "base/test_util.h"
#include "sync/value.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;
using testing::Child;
using testing::Join;
using testing::NowSeconds;

TEST(SemaphoreTest, CountsLikeCPython) {
  ASSERT_OK_AND_ASSIGN(Semaphore s, Semaphore::Create(2));
  EXPECT_EQ(s.GetValue(), 2u);
  EXPECT_TRUE(s.Acquire());
  EXPECT_TRUE(s.Acquire());
  EXPECT_EQ(s.GetValue(), 0u);
  EXPECT_FALSE(s.TryAcquire());
  MPROC_EXPECT_OK(s.Release());
  MPROC_EXPECT_OK(s.Release());
  MPROC_EXPECT_OK(s.Release());  // beyond the initial value is allowed (SYNC-7)
  EXPECT_EQ(s.GetValue(), 3u);
}

TEST(SemaphoreTest, TimeoutsAreLowerBounds) {
  ASSERT_OK_AND_ASSIGN(Semaphore s, Semaphore::Create(0));
  double t0 = NowSeconds();
  EXPECT_FALSE(s.Acquire(absl::ZeroDuration()));
  EXPECT_LT(NowSeconds() - t0, 0.5);
  t0 = NowSeconds();
  EXPECT_FALSE(s.Acquire(absl::Milliseconds(100)));
  EXPECT_GE(NowSeconds() - t0, 0.1);
}

TEST(BoundedSemaphoreTest, RefusesOverRelease) {
  ASSERT_OK_AND_ASSIGN(BoundedSemaphore s, BoundedSemaphore::Create(2));
  EXPECT_TRUE(s.Acquire());
  MPROC_EXPECT_OK(s.Release());
  EXPECT_THAT(s.Release(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too many")));
  EXPECT_EQ(s.GetValue(), 2u);
}

// A bound of 0 is a bound (it meant "unbounded", so Release never failed), and a huge n cannot
// wrap past the bound, or past a Semaphore's largest count (CPython's SEM_VALUE_MAX).
TEST(BoundedSemaphoreTest, ZeroIsABoundAndNoReleaseWraps) {
  ASSERT_OK_AND_ASSIGN(BoundedSemaphore zero, BoundedSemaphore::Create(0));
  EXPECT_FALSE(zero.TryAcquire());
  EXPECT_THAT(zero.Release(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(zero.GetValue(), 0u);
  ASSERT_OK_AND_ASSIGN(BoundedSemaphore two, BoundedSemaphore::Create(2));
  EXPECT_TRUE(two.Acquire());
  EXPECT_THAT(two.Release(UINT32_MAX), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(two.GetValue(), 1u);
  ASSERT_OK_AND_ASSIGN(Semaphore s, Semaphore::Create(kSemaphoreMax - 1));
  MPROC_EXPECT_OK(s.Release());
  EXPECT_THAT(s.Release(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too many")));
  EXPECT_THAT(s.Release(UINT32_MAX), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(s.GetValue(), kSemaphoreMax);
}

// Semaphore(n) never admits more than n holders across processes.
TEST(SemaphoreTest, NeverMoreThanNHolders) {
  constexpr uint32_t kN = 2;
  ASSERT_OK_AND_ASSIGN(Semaphore s, Semaphore::Create(kN));
  ASSERT_OK_AND_ASSIGN(Value<int32_t> inside, Value<int32_t>::Create(0, LockMode::kNone));
  ASSERT_OK_AND_ASSIGN(Value<int32_t> max_seen, Value<int32_t>::Create(0, LockMode::kNone));
  std::vector<pid_t> pids;
  for (int p = 0; p < 5; ++p) {
    pids.push_back(Child([&] {
      for (int i = 0; i < 300; ++i) {
        if (!s.Acquire()) return 1;
        int32_t now = inside.FetchAdd(1) + 1;
        int32_t m = max_seen.Load();
        while (now > m && !max_seen.CompareExchange(m, now)) {
        }
        if (i % 50 == 0) ::usleep(100);
        inside.FetchAdd(-1);
        if (!s.Release().ok()) return 2;
      }
      return 0;
    }));
  }
  for (pid_t pid : pids) EXPECT_EQ(Join(pid), 0);
  EXPECT_LE(max_seen.Get(), static_cast<int32_t>(kN));
  EXPECT_GE(max_seen.Get(), 1);
  EXPECT_EQ(s.GetValue(), kN);
}

TEST(SemaphoreTest, ReleaseWakesAWaiterInAnotherProcess) {
  ASSERT_OK_AND_ASSIGN(Semaphore s, Semaphore::Create(0));
  pid_t pid = Child([&] { return s.Acquire(absl::Seconds(30)) ? 0 : 1; });
  ::usleep(50'000);
  MPROC_EXPECT_OK(s.Release());
  EXPECT_EQ(Join(pid), 0);
  EXPECT_EQ(s.GetValue(), 0u);
}

Semaphore* g_sem = nullptr;
void ReleaseFromHandler(int) { g_sem->Release().IgnoreError(); }

TEST(SemaphoreTest, ReleaseIsAsyncSignalSafe) {
  ASSERT_OK_AND_ASSIGN(Semaphore s, Semaphore::Create(0));
  g_sem = &s;
  struct sigaction sa = {}, old;
  sa.sa_handler = ReleaseFromHandler;
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
  pid_t self = ::getpid();
  std::thread poke([self] {
    ::usleep(20'000);
    ::kill(self, SIGUSR2);
  });
  EXPECT_TRUE(s.Acquire(absl::Seconds(30)));
  poke.join();
  ::sigaction(SIGUSR2, &old, nullptr);
}

TEST(EventTest, SetClearWaitLikeCPython) {
  ASSERT_OK_AND_ASSIGN(Event e, Event::Create());
  EXPECT_FALSE(e.IsSet());
  EXPECT_FALSE(e.Wait(absl::ZeroDuration()));
  double t0 = NowSeconds();
  EXPECT_FALSE(e.Wait(absl::Milliseconds(100)));
  EXPECT_GE(NowSeconds() - t0, 0.1);
  e.Set();
  EXPECT_TRUE(e.IsSet());
  EXPECT_TRUE(e.Wait());
  EXPECT_TRUE(e.Wait(absl::Milliseconds(1)));
  e.Clear();
  EXPECT_FALSE(e.IsSet());
}

TEST(EventTest, SetFromAnotherProcessWakesEveryWaiter) {
  ASSERT_OK_AND_ASSIGN(Event e, Event::Create());
  std::vector<pid_t> waiters;
  for (int i = 0; i < 3; ++i) waiters.push_back(Child([&] { return e.Wait(absl::Seconds(30)) ? 0 : 1; }));
  ::usleep(50'000);
  pid_t setter = Child([&] {
    e.Set();
    return 0;
  });
  EXPECT_EQ(Join(setter), 0);
  for (pid_t pid : waiters) EXPECT_EQ(Join(pid), 0);
}

// CPython's Event: every waiter present at a Set returns true, even when a Clear follows
// before it wakes (its Wait returns the flag its Condition saw when notified). Each waiter
// here sleeps in the kernel (checked) when Set and Clear run back to back.
TEST(EventTest, AWaiterPresentAtASetReturnsTrueThoughAClearFollows) {
  ASSERT_OK_AND_ASSIGN(Event e, Event::Create());
  for (int round = 0; round < 20; ++round) {
    testing::ThreadIds ids;
    std::vector<std::thread> waiters;
    std::atomic<int> woke_true{0};
    for (int i = 0; i < 2; ++i) {
      waiters.emplace_back([&] {
        ids.Add();
        if (e.Wait(absl::Seconds(30))) woke_true.fetch_add(1);
      });
    }
    ASSERT_TRUE(ids.WaitAllAsleep(2));
    e.Set();
    e.Clear();
    for (auto& t : waiters) t.join();
    EXPECT_EQ(woke_true.load(), 2) << "round " << round;
    EXPECT_FALSE(e.IsSet());
  }
}

TEST(EventTest, PingPongAcrossProcesses) {
  ASSERT_OK_AND_ASSIGN(Event ping, Event::Create());
  ASSERT_OK_AND_ASSIGN(Event pong, Event::Create());
  constexpr int kRounds = 500;
  pid_t pid = Child([&] {
    for (int i = 0; i < kRounds; ++i) {
      if (!ping.Wait(absl::Seconds(30))) return 1;
      ping.Clear();
      pong.Set();
    }
    return 0;
  });
  for (int i = 0; i < kRounds; ++i) {
    ping.Set();
    ASSERT_TRUE(pong.Wait(absl::Seconds(30))) << i;
    pong.Clear();
  }
  EXPECT_EQ(Join(pid), 0);
}

}  // namespace
}  // namespace mproc
