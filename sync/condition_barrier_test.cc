#include <signal.h>
#include <unistd.h>

#include <set>
#include <thread>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/barrier.h"
#include "sync/condition.h"
#include "base/test_util.h"
#include "sync/value.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;
using testing::Child;
using testing::Join;
using testing::NowSeconds;

TEST(ConditionTest, WaitWithoutTheLockIsMisuse) {
  ASSERT_OK_AND_ASSIGN(Condition c, Condition::Create());
  EXPECT_THAT(c.Wait(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("must acquire")));
  EXPECT_THAT(c.Notify(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(ConditionTest, TimedWaitReturnsFalseAndRestoresRLockDepth) {
  ASSERT_OK_AND_ASSIGN(Condition c, Condition::Create());
  ASSERT_TRUE(c.rlock().Acquire());
  ASSERT_TRUE(c.rlock().Acquire());
  double t0 = NowSeconds();
  EXPECT_THAT(c.Wait(absl::Milliseconds(100)), IsOkAndHolds(false));
  EXPECT_GE(NowSeconds() - t0, 0.1);
  EXPECT_EQ(c.rlock().Depth(), 2u);  // every recursion level restored
  EXPECT_THAT(c.Wait(absl::ZeroDuration()), IsOkAndHolds(false));
  MPROC_EXPECT_OK(c.Notify(3));  // no waiters: nothing happens
  MPROC_EXPECT_OK(c.rlock().Release());
  MPROC_EXPECT_OK(c.rlock().Release());
}

TEST(ConditionTest, NotifyWakesExactlyN) {
  ASSERT_OK_AND_ASSIGN(Condition c, Condition::Create());
  ASSERT_OK_AND_ASSIGN(Value<int32_t> woken, Value<int32_t>::Create(0, LockMode::kNone));
  ASSERT_OK_AND_ASSIGN(Value<int32_t> sleeping, Value<int32_t>::Create(0, LockMode::kNone));
  constexpr int kWaiters = 5;
  std::vector<pid_t> pids;
  for (int i = 0; i < kWaiters; ++i) {
    pids.push_back(Child([&] {
      if (!c.Acquire()) return 1;
      sleeping.FetchAdd(1);
      absl::StatusOr<bool> r = c.Wait(absl::Seconds(30));
      if (r.ok() && *r) woken.FetchAdd(1);
      return c.Release().ok() && r.ok() && *r ? 0 : 2;
    }));
  }
  while (sleeping.Load() < kWaiters) ::usleep(1000);
  auto notify = [&](uint32_t n) {
    ASSERT_TRUE(c.Acquire());
    MPROC_ASSERT_OK(c.Notify(n));
    MPROC_ASSERT_OK(c.Release());
  };
  notify(2);
  for (int i = 0; i < 3000 && woken.Load() < 2; ++i) ::usleep(1000);
  ::usleep(100'000);
  EXPECT_EQ(woken.Load(), 2);  // not more
  notify(100);                 // the rest (notify(n) with n > waiters)
  for (pid_t pid : pids) EXPECT_EQ(Join(pid), 0);
  EXPECT_EQ(woken.Load(), kWaiters);
}

TEST(ConditionTest, ProducerConsumerAcrossProcesses) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  ASSERT_OK_AND_ASSIGN(Condition c, Condition::Create(lock));
  ASSERT_OK_AND_ASSIGN(Array<int32_t> buf, Array<int32_t>::Create(2, LockMode::kNone));  // [items, sum]
  constexpr int kItems = 300;
  pid_t consumer = Child([&] {
    int32_t consumed = 0;
    int64_t sum = 0;
    while (consumed < kItems) {
      if (!c.Acquire()) return 1;
      absl::StatusOr<bool> ok = c.WaitFor([&] { return buf[0] > 0; }, absl::Seconds(30));
      if (!ok.ok() || !*ok) return 2;
      sum += buf[1];
      buf[0] = buf[0] - 1;
      buf[1] = 0;
      ++consumed;
      if (!c.NotifyAll().ok() || !c.Release().ok()) return 3;
    }
    return sum == int64_t{kItems} * (kItems + 1) / 2 ? 0 : 4;
  });
  for (int i = 1; i <= kItems; ++i) {
    ASSERT_TRUE(c.Acquire());
    ASSERT_THAT(c.WaitFor([&] { return buf[0] == 0; }, absl::Seconds(30)), IsOkAndHolds(true));
    buf[1] = i;
    buf[0] = 1;
    MPROC_ASSERT_OK(c.NotifyAll());
    MPROC_ASSERT_OK(c.Release());
  }
  EXPECT_EQ(Join(consumer), 0);
}

// Waiters SIGKILLed inside Wait never free their slots; once every slot was taken that way,
// every later Wait failed RESOURCE_EXHAUSTED for good. A Wait that finds no free slot now
// reclaims a dead waiter's.
TEST(ConditionTest, SlotsOfWaitersKilledInWaitAreReclaimed) {
  constexpr int kWaiters = sync_internal::ConditionState::kMaxWaiters;
  ASSERT_OK_AND_ASSIGN(Condition c, Condition::Create());
  ASSERT_OK_AND_ASSIGN(Value<int> waiting, Value<int>::Create(0, LockMode::kNone));
  std::vector<pid_t> pids;
  for (int i = 0; i < kWaiters; ++i) {
    pids.push_back(Child([&] {
      if (!c.Acquire()) return 1;
      waiting.FetchAdd(1);  // under the lock, before Wait releases it
      (void)c.Wait();
      return 0;
    }));
  }
  for (int i = 0; waiting.Load() < kWaiters; ++i) {
    ASSERT_LT(i, 60000);
    ::usleep(1000);
  }
  // Each counted itself before its Wait released the lock: once we hold it, all wait.
  ASSERT_TRUE(c.Acquire(absl::Seconds(30)));
  MPROC_ASSERT_OK(c.Release());
  for (pid_t pid : pids) ::kill(pid, SIGKILL);
  for (pid_t pid : pids) EXPECT_EQ(Join(pid), 128 + SIGKILL);
  ASSERT_TRUE(c.Acquire());
  EXPECT_THAT(c.Wait(absl::Milliseconds(10)), IsOkAndHolds(false));  // timed out, not refused
  EXPECT_THAT(c.Wait(absl::Milliseconds(10)), IsOkAndHolds(false));
  MPROC_EXPECT_OK(c.Release());
}

TEST(ConditionTest, WaitForTimesOutWithThePredicateValue) {
  ASSERT_OK_AND_ASSIGN(Condition c, Condition::Create());
  ASSERT_TRUE(c.Acquire());
  double t0 = NowSeconds();
  EXPECT_THAT(c.WaitFor([] { return false; }, absl::Milliseconds(100)), IsOkAndHolds(false));
  EXPECT_GE(NowSeconds() - t0, 0.1);
  EXPECT_THAT(c.WaitFor([] { return true; }, absl::Milliseconds(100)), IsOkAndHolds(true));
  MPROC_EXPECT_OK(c.Release());
}

std::atomic<int>* g_actions = nullptr;
Value<int32_t>* g_action_count = nullptr;
void CountAction() { g_action_count->FetchAdd(1); }

TEST(BarrierTest, ManyGenerationsWithExactIndexSetsAndOneActionPerRound) {
  constexpr uint32_t kParties = 4, kRounds = 200;
  ASSERT_OK_AND_ASSIGN(Value<int32_t> actions, Value<int32_t>::Create(0, LockMode::kNone));
  g_action_count = &actions;
  ASSERT_OK_AND_ASSIGN(Barrier b, Barrier::Create(kParties, CountAction, absl::Seconds(60)));
  ASSERT_OK_AND_ASSIGN(Array<uint32_t> seen, Array<uint32_t>::Create(kRounds * kParties, LockMode::kNone));
  std::vector<pid_t> pids;
  for (uint32_t p = 0; p < kParties; ++p) {
    pids.push_back(Child([&, p] {
      for (uint32_t r = 0; r < kRounds; ++r) {
        absl::StatusOr<uint32_t> idx = b.Wait();
        if (!idx.ok()) return 1;
        seen[r * kParties + p] = *idx;
        // The action ran exactly once per round before anyone was released.
        if (actions.Load() < static_cast<int32_t>(r + 1)) return 2;
      }
      return 0;
    }));
  }
  for (pid_t pid : pids) EXPECT_EQ(Join(pid, 120), 0);
  EXPECT_EQ(actions.Get(), static_cast<int32_t>(kRounds));
  for (uint32_t r = 0; r < kRounds; ++r) {
    std::set<uint32_t> idx;
    for (uint32_t p = 0; p < kParties; ++p) idx.insert(seen[r * kParties + p]);
    EXPECT_EQ(idx, (std::set<uint32_t>{0, 1, 2, 3})) << "round " << r;
  }
  EXPECT_EQ(b.NWaiting(), 0u);
  EXPECT_FALSE(b.Broken());
}

// For the test below: the action hangs (in the child only), with the barrier's lock held.
pid_t g_test_parent = 0;
Value<int> g_in_action;
void HangInAChild() {
  if (::getpid() == g_test_parent) return;
  g_in_action.Store(1);
  for (;;) ::pause();
}

// A party SIGKILLed inside the barrier (here in the action, which runs under its lock), and
// left a zombie: the next call takes the lock over and finds the barrier broken, instead of
// waiting for ever on a dead holder; Reset makes it usable again.
TEST(BarrierTest, APartyKilledInsideTheBarrierBreaksItInsteadOfHangingEveryone) {
  g_test_parent = ::getpid();
  ASSERT_OK_AND_ASSIGN(g_in_action, Value<int>::Create(0, LockMode::kNone));
  ASSERT_OK_AND_ASSIGN(Barrier b, Barrier::Create(1, HangInAChild));
  pid_t child = Child([&] { return b.Wait().ok() ? 0 : 1; });
  for (int i = 0; g_in_action.Load() == 0; ++i) {
    ASSERT_LT(i, 30000);
    ::usleep(1000);
  }
  ASSERT_EQ(::kill(child, SIGKILL), 0);  // dies holding the lock
  EXPECT_TRUE(b.Broken());
  EXPECT_THAT(b.Wait(absl::Seconds(5)), StatusIs(absl::StatusCode::kFailedPrecondition));
  b.Reset();
  EXPECT_FALSE(b.Broken());
  EXPECT_EQ(b.NWaiting(), 0u);
  EXPECT_THAT(b.Wait(absl::Seconds(5)), IsOkAndHolds(0u));  // the parent's action returns
  EXPECT_EQ(Join(child), 128 + SIGKILL);
  g_in_action = Value<int>();  // its shared chunk goes with the test
}

TEST(BarrierTest, SinglePartyNeverBlocks) {
  ASSERT_OK_AND_ASSIGN(Barrier b, Barrier::Create(1));
  EXPECT_THAT(b.Wait(), IsOkAndHolds(0u));
  EXPECT_THAT(b.Wait(), IsOkAndHolds(0u));
}

TEST(BarrierTest, TimeoutBreaksItForEveryPartyUntilReset) {
  ASSERT_OK_AND_ASSIGN(Barrier b, Barrier::Create(3));
  pid_t other = Child([&] {
    absl::StatusOr<uint32_t> r = b.Wait(absl::Seconds(30));
    return !r.ok() && r.status().code() == absl::StatusCode::kFailedPrecondition ? 0 : 1;
  });
  while (b.NWaiting() < 1) ::usleep(1000);
  double t0 = NowSeconds();
  EXPECT_THAT(b.Wait(absl::Milliseconds(100)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("timed out")));
  EXPECT_GE(NowSeconds() - t0, 0.1);
  EXPECT_EQ(Join(other), 0);
  EXPECT_TRUE(b.Broken());
  EXPECT_THAT(b.Wait(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("broken")));
  b.Reset();
  EXPECT_FALSE(b.Broken());
  std::thread t([&] { EXPECT_TRUE(b.Wait(absl::Seconds(30)).ok()); });
  std::thread u([&] { EXPECT_TRUE(b.Wait(absl::Seconds(30)).ok()); });
  EXPECT_TRUE(b.Wait(absl::Seconds(30)).ok());
  t.join();
  u.join();
}

TEST(BarrierTest, AbortAndResetWhileWaiting) {
  ASSERT_OK_AND_ASSIGN(Barrier b, Barrier::Create(3));
  std::thread w([&] {
    EXPECT_THAT(b.Wait(absl::Seconds(30)), StatusIs(absl::StatusCode::kFailedPrecondition));
  });
  while (b.NWaiting() < 1) ::usleep(1000);
  b.Reset();  // the waiting party's round ends broken
  w.join();
  EXPECT_FALSE(b.Broken());
  b.Abort();
  EXPECT_TRUE(b.Broken());
  EXPECT_THAT(b.Wait(), StatusIs(absl::StatusCode::kFailedPrecondition));
  b.Reset();
  EXPECT_FALSE(b.Broken());
}

}  // namespace
}  // namespace mproc
