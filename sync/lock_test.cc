#include "sync/lock.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/test_util.h"
#include "sync/value.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;
using testing::Child;
using testing::Join;
using testing::NowSeconds;

TEST(LockTest, AcquireReleaseAndMisuse) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  EXPECT_FALSE(lock.Locked());
  EXPECT_TRUE(lock.Acquire());
  EXPECT_TRUE(lock.Locked());
  EXPECT_FALSE(lock.TryAcquire());
  EXPECT_FALSE(lock.Acquire(absl::ZeroDuration()));
  MPROC_EXPECT_OK(lock.Release());
  EXPECT_THAT(lock.Release(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too many")));
  EXPECT_TRUE(lock.TryAcquire());
  MPROC_EXPECT_OK(lock.Release());
}

TEST(LockTest, TimeoutIsALowerBound) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  ASSERT_TRUE(lock.Acquire());
  std::thread t([&] {
    double t0 = NowSeconds();
    EXPECT_FALSE(lock.Acquire(absl::Milliseconds(100)));
    EXPECT_GE(NowSeconds() - t0, 0.1);
  });
  t.join();
  MPROC_EXPECT_OK(lock.Release());
}

TEST(LockTest, AnotherProcessMayReleaseALock) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  ASSERT_TRUE(lock.Acquire());
  pid_t pid = Child([&] { return lock.Release().ok() ? 0 : 1; });  // CPython SYNC-6
  EXPECT_EQ(Join(pid), 0);
  EXPECT_FALSE(lock.Locked());
}

TEST(LockTest, LockedIsVisibleFromAnotherProcess) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  ASSERT_TRUE(lock.Acquire());
  EXPECT_EQ(Join(Child([&] { return lock.Locked() && !lock.TryAcquire() ? 0 : 1; })), 0);
  MPROC_EXPECT_OK(lock.Release());
}

// N processes x M increments of a plain int under the lock: exactly N*M.
TEST(LockTest, MutualExclusionAcrossProcesses) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  ASSERT_OK_AND_ASSIGN(Value<int64_t> counter, Value<int64_t>::Create(0, LockMode::kNone));
  constexpr int kProcs = 4, kIncrements = 20000;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pids.push_back(Child([&] {
      for (int i = 0; i < kIncrements; ++i) {
        if (!lock.Acquire()) return 1;
        int64_t* v = counter.GetObj();
        *v = *v + 1;  // deliberately not atomic: only the lock protects it
        if (!lock.Release().ok()) return 2;
      }
      return 0;
    }));
  }
  for (pid_t pid : pids) EXPECT_EQ(Join(pid), 0);
  EXPECT_EQ(counter.Get(), kProcs * kIncrements);
}

TEST(LockTest, KilledHolderIsRecoveredAndReported) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  ASSERT_OK_AND_ASSIGN(Value<int> held, Value<int>::Create(0, LockMode::kNone));
  pid_t holder = Child([&] {
    if (!lock.Acquire()) return 1;
    held.Store(1);
    ::pause();
    return 0;
  });
  while (held.Load() == 0) ::usleep(1000);
  ::kill(holder, SIGKILL);  // dies holding the lock (a zombie until reaped)
  double t0 = NowSeconds();
  AcquireResult r = lock.Acquire(absl::Seconds(30));
  double took = NowSeconds() - t0;
  EXPECT_TRUE(r);
  EXPECT_TRUE(r.previous_owner_died());
  EXPECT_LT(took, 5.0);
  MPROC_EXPECT_OK(lock.Release());
  EXPECT_EQ(Join(holder), 128 + SIGKILL);
  // The lock works normally afterwards.
  AcquireResult again = lock.Acquire();
  EXPECT_TRUE(again);
  EXPECT_FALSE(again.previous_owner_died());
  MPROC_EXPECT_OK(lock.Release());
}

TEST(LockTest, TryAcquireTakesOverFromADeadHolder) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  pid_t holder = Child([&] { return lock.Acquire() ? 0 : 1; });  // exits holding it
  EXPECT_EQ(Join(holder), 0);
  AcquireResult r = lock.TryAcquire();
  EXPECT_TRUE(r);
  EXPECT_TRUE(r.previous_owner_died());
  MPROC_EXPECT_OK(lock.Release());
}

// A timeout shorter than the sleep slice after which a waiter checks the holder (20 ms) still
// takes over from a dead holder at its deadline, as TryAcquire does; before, Acquire(1 ms)
// returned false for ever on a dead holder's lock.
TEST(LockTest, AShortTimeoutTakesOverFromADeadHolder) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  pid_t holder = Child([&] { return lock.Acquire() ? 0 : 1; });  // exits holding it
  EXPECT_EQ(Join(holder), 0);
  AcquireResult r = lock.Acquire(absl::Milliseconds(1));
  EXPECT_TRUE(r);
  EXPECT_TRUE(r.previous_owner_died());
  MPROC_EXPECT_OK(lock.Release());
  // ... and a live holder's lock times out as before.
  ASSERT_OK_AND_ASSIGN(Value<int> held, Value<int>::Create(0, LockMode::kNone));
  pid_t live = Child([&] {
    if (!lock.Acquire()) return 1;
    held.Store(1);
    ::pause();
    return 0;
  });
  while (held.Load() == 0) ::usleep(1000);
  EXPECT_FALSE(lock.Acquire(absl::Milliseconds(1)));
  EXPECT_FALSE(lock.Acquire(absl::ZeroDuration()));
  ::kill(live, SIGKILL);
  EXPECT_EQ(Join(live), 128 + SIGKILL);
}

TEST(RLockTest, RecursionAndOwnership) {
  ASSERT_OK_AND_ASSIGN(RLock lock, RLock::Create());
  EXPECT_TRUE(lock.Acquire());
  EXPECT_TRUE(lock.Acquire());
  EXPECT_TRUE(lock.TryAcquire());
  EXPECT_EQ(lock.Depth(), 3u);
  std::thread other([&] {
    EXPECT_FALSE(lock.TryAcquire());
    EXPECT_THAT(lock.Release(), StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_EQ(lock.Depth(), 0u);
  });
  other.join();
  MPROC_EXPECT_OK(lock.Release());
  MPROC_EXPECT_OK(lock.Release());
  EXPECT_TRUE(lock.Locked());
  MPROC_EXPECT_OK(lock.Release());
  EXPECT_FALSE(lock.Locked());
  EXPECT_THAT(lock.Release(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(RLockTest, ReleaseFromAnotherProcessIsRefused) {
  ASSERT_OK_AND_ASSIGN(RLock lock, RLock::Create());
  ASSERT_TRUE(lock.Acquire());
  EXPECT_EQ(Join(Child([&] { return lock.Release().ok() ? 1 : 0; })), 0);
  EXPECT_TRUE(lock.Locked());
  MPROC_EXPECT_OK(lock.Release());
}

TEST(RLockTest, KilledHolderIsRecoveredWithDepthReset) {
  ASSERT_OK_AND_ASSIGN(RLock lock, RLock::Create());
  pid_t holder = Child([&] {
    if (!lock.Acquire() || !lock.Acquire()) return 1;
    ::pause();
    return 0;
  });
  while (!lock.Locked()) ::usleep(1000);
  ::kill(holder, SIGKILL);
  AcquireResult r = lock.Acquire(absl::Seconds(30));
  EXPECT_TRUE(r);
  EXPECT_TRUE(r.previous_owner_died());
  EXPECT_EQ(lock.Depth(), 1u);
  MPROC_EXPECT_OK(lock.Release());
  EXPECT_FALSE(lock.Locked());
  Join(holder);
}

TEST(LockGuardTest, ReleasesOnScopeExit) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  {
    LockGuard g(lock);
    EXPECT_TRUE(lock.Locked());
    EXPECT_FALSE(g.previous_owner_died());
  }
  EXPECT_FALSE(lock.Locked());
}

// One guard name for every lock type: an RLock (a Value's lock is one) deduces its own.
TEST(LockGuardTest, GuardsAnRLockToo) {
  ASSERT_OK_AND_ASSIGN(RLock lock, RLock::Create());
  {
    LockGuard g(lock);
    static_assert(std::is_same_v<decltype(g), LockGuard<RLock>>);
    EXPECT_TRUE(lock.Locked());
    EXPECT_EQ(lock.Depth(), 1u);
  }
  EXPECT_FALSE(lock.Locked());
}

}  // namespace
}  // namespace mproc
