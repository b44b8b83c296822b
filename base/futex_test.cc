#include "base/futex.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "base/test_util.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

struct Shared {
  std::atomic<uint32_t> word{0};
  std::atomic<uint32_t> ack{0};
};

Shared* MapShared() {
  void* p = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
  EXPECT_NE(p, MAP_FAILED);
  return new (p) Shared;
}

TEST(FutexTest, ValueChangedReturnsImmediately) {
  std::atomic<uint32_t> w{5};
  EXPECT_EQ(FutexWait(&w, 4, Deadline::Infinite()), FutexResult::kValueChanged);
  EXPECT_EQ(FutexWait(&w, 4, Deadline::Infinite(), FutexScope::kPrivate),
            FutexResult::kValueChanged);
}

TEST(FutexTest, TimedWaitHonoursTheDeadlineAsALowerBound) {
  std::atomic<uint32_t> w{0};
  int64_t t0 = MonotonicNowNs();
  FutexResult r;
  do {
    r = FutexWait(&w, 0, Deadline::AtMonotonicNs(t0 + 50'000'000));
  } while (r == FutexResult::kAwoken || r == FutexResult::kInterrupted);
  EXPECT_EQ(r, FutexResult::kTimedOut);
  EXPECT_GE(MonotonicNowNs() - t0, 50'000'000);
}

TEST(FutexTest, ExpiredDeadlineTimesOutAtOnce) {
  std::atomic<uint32_t> w{0};
  EXPECT_EQ(FutexWait(&w, 0, Deadline::After(absl::ZeroDuration())), FutexResult::kTimedOut);
}

TEST(FutexTest, WakeAcrossThreadsPrivate) {
  std::atomic<uint32_t> w{0};
  std::thread t([&] {
    ::usleep(10'000);
    w.store(1, std::memory_order_release);
    FutexWake(&w, 1, FutexScope::kPrivate);
  });
  while (w.load(std::memory_order_acquire) == 0) {
    FutexWait(&w, 0, Deadline::After(absl::Seconds(30)), FutexScope::kPrivate);
  }
  t.join();
  EXPECT_EQ(w.load(), 1u);
}

// A shared futex in MAP_SHARED memory: the child waits, the parent wakes it, many rounds.
TEST(FutexTest, PingPongAcrossProcesses) {
  Shared* s = MapShared();
  constexpr uint32_t kRounds = 200;
  pid_t pid = testing::Child([&] {
    for (uint32_t i = 1; i <= kRounds; ++i) {
      while (s->word.load(std::memory_order_acquire) < i) {
        if (FutexWait(&s->word, i - 1, Deadline::After(absl::Seconds(30))) ==
            FutexResult::kTimedOut) {
          return 2;
        }
      }
      s->ack.store(i, std::memory_order_release);
      FutexWake(&s->ack, 1);
    }
    return 0;
  });
  ASSERT_GE(pid, 0);
  for (uint32_t i = 1; i <= kRounds; ++i) {
    s->word.store(i, std::memory_order_release);
    FutexWake(&s->word, 1);
    while (s->ack.load(std::memory_order_acquire) < i) {
      ASSERT_NE(FutexWait(&s->ack, i - 1, Deadline::After(absl::Seconds(30))),
                FutexResult::kTimedOut);
    }
  }
  EXPECT_EQ(testing::Join(pid), 0);
  EXPECT_EQ(s->ack.load(), kRounds);
  ::munmap(s, sizeof(Shared));
}

TEST(FutexTest, WakeCountsWaiters) {
  std::atomic<uint32_t> w{0};
  EXPECT_EQ(FutexWake(&w, 1), 0);  // nobody waiting
}

}  // namespace
}  // namespace mproc
