// Sync objects come from shared arenas: a process holds thousands under a small descriptor
// limit (the old one-memfd-per-object design failed at the ~1020th under the usual 1024), and
// many handles travel to a child as one descriptor.

#include <sys/resource.h>
#include <vector>

#include "base/leak_checker.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "spawn/process.h"
#include "sync/internal/shared_state.h"
#include "sync/event.h"
#include "sync/lock.h"
#include "sync/semaphore.h"
#include "sync/value.h"

namespace mproc {
namespace {

// Lowers this process's soft descriptor limit for one scope.
class FdLimit {
 public:
  explicit FdLimit(rlim_t soft) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit l = saved_;
    l.rlim_cur = soft;
    ::setrlimit(RLIMIT_NOFILE, &l);
  }
  ~FdLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }

 private:
  rlimit saved_;
};

// The target: 100,000 Locks and 100,000 Values at once under the usual soft limit of
// 1024 descriptors (here 256, and Semaphores too).
TEST(ArenaTest, AHundredThousandLocksValuesAndSemaphoresUnderALimitOf256Descriptors) {
  constexpr int kEach = 100'000;
  const size_t fds_before = ListOpenFds().size();
  {
    FdLimit limit(256);
    std::vector<Lock> locks;
    std::vector<Value<int64_t>> values;
    std::vector<Semaphore> sems;
    locks.reserve(kEach);
    values.reserve(kEach);
    sems.reserve(kEach);
    for (int i = 0; i < kEach; ++i) {
      ASSERT_OK_AND_ASSIGN(Lock l, Lock::Create());
      ASSERT_OK_AND_ASSIGN(Value<int64_t> v, Value<int64_t>::Create(i));
      ASSERT_OK_AND_ASSIGN(Semaphore s, Semaphore::Create(2));
      locks.push_back(std::move(l));
      values.push_back(std::move(v));
      sems.push_back(std::move(s));
    }
    // Each works and is its own object.
    for (int i = 0; i < kEach; ++i) {
      ASSERT_TRUE(locks[i].Acquire(absl::ZeroDuration()).acquired()) << i;
      ASSERT_EQ(values[i].Get(), i);
      values[i].Set(values[i].Get() + 1);
    }
    for (int i = 0; i < kEach; ++i) {
      ASSERT_FALSE(locks[i].Acquire(absl::ZeroDuration()).acquired()) << i;  // still held
      MPROC_ASSERT_OK(locks[i].Release());
      ASSERT_EQ(values[i].Get(), i + 1);
    }
    // 300,000 objects (about 25 MB) in about a hundred 256 KiB chunks.
    EXPECT_LT(ListOpenFds().size() - fds_before, 150u);
    EXPECT_GE(sync_internal::MappedChunksForTesting(), 1u);
  }
  // Every object dropped: every chunk (and its descriptor) is gone.
  EXPECT_EQ(sync_internal::MappedChunksForTesting(), 0u);
  EXPECT_EQ(ListOpenFds().size(), fds_before);
}

// The child first finds lock 500 held (by the parent: the same lock) and says so through
// `tried`; then it takes and releases every lock (waiting for 500 until the parent lets go)
// and bumps every value. It reports how many chunks it mapped for them.
int UseAll(std::vector<Lock> locks, std::vector<Value<int64_t>> values, Event tried) {
  const bool held_elsewhere = !locks[500].Acquire(absl::ZeroDuration()).acquired();
  tried.Set();
  if (!held_elsewhere) return 101;
  for (Lock& l : locks) {
    if (!l.Acquire(absl::Seconds(10)).acquired() || !l.Release().ok()) return 100;
  }
  for (Value<int64_t>& v : values) v.FetchAdd(1);
  return static_cast<int>(sync_internal::MappedChunksForTesting());
}

class ArenaProcessTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }
};

TEST_P(ArenaProcessTest, AThousandHandlesTravelAsOneDescriptor) {
  std::vector<Lock> locks;
  std::vector<Value<int64_t>> values;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_OK_AND_ASSIGN(Lock l, Lock::Create());
    ASSERT_OK_AND_ASSIGN(Value<int64_t> v, Value<int64_t>::Create(10 * i));
    locks.push_back(std::move(l));
    values.push_back(std::move(v));
  }
  // 2000 objects of 64 bytes: one 256 KiB chunk here.
  const size_t chunks = sync_internal::MappedChunksForTesting();
  ASSERT_EQ(chunks, 1u);
  // One lock held here: the child finds it held, so they really share it.
  ASSERT_OK_AND_ASSIGN(Event tried, Event::Create());
  ASSERT_TRUE(locks[500].Acquire(absl::Seconds(1)).acquired());
  Process p(UseAll, locks, values, tried);
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  ASSERT_TRUE(tried.Wait(absl::Seconds(60)));
  MPROC_ASSERT_OK(locks[500].Release());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  // More than 253 handles (the kernel's limit of descriptors per message) went in one start,
  // and the child mapped the chunk once, however many handles named it.
  EXPECT_EQ(p.exitcode(), 1);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(values[i].Get(), 10 * i + 1) << i;
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ArenaProcessTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

}  // namespace
}  // namespace mproc
