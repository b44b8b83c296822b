// Handles (Lock, Value, Queue, SharedMemory) passed as task arguments work inside pool workers
// under every start method: the task's descriptors travel with it over the worker's channel.
#include <cstring>
#include <string>
#include <vector>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "ipc/queue.h"
#include "pool/pool.h"
#include "shm/shared_memory.h"
#include "sync/lock.h"
#include "sync/value.h"

namespace mproc {
namespace {

int AddUnderLock(Lock lock, Value<int64_t> total, int n) {
  for (int i = 0; i < n; ++i) {
    LockGuard g(lock);
    total.Set(total.Get() + 1);
  }
  return n;
}

int PutSquare(Queue<int> q, int x) { return q.Put(x * x).ok() ? 0 : 1; }

int WriteAt(SharedMemory shm, int index) {
  static_cast<char*>(shm.data())[index] = static_cast<char>('a' + index);
  return index;
}

class PoolHandlesTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }
};

TEST_P(PoolHandlesTest, HandlesWorkInsideTasks) {
  Pool::Options o;
  o.processes = 2;
  o.start_method = GetParam();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  ASSERT_OK_AND_ASSIGN(Value<int64_t> total, Value<int64_t>::Create(0, LockMode::kNone));
  std::vector<std::tuple<Lock, Value<int64_t>, int>> jobs(8, {lock, total, 500});
  ASSERT_OK_AND_ASSIGN(std::vector<int> done, pool->StarMap(AddUnderLock, jobs, 1));
  EXPECT_EQ(total.Get(), 8 * 500);

  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create());
  std::vector<std::tuple<Queue<int>, int>> puts;
  for (int i = 0; i < 5; ++i) puts.emplace_back(q, i);
  ASSERT_OK_AND_ASSIGN(std::vector<int> rc, pool->StarMap(PutSquare, puts));
  int sum = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(int v, q.Get(absl::Seconds(10)));
    sum += v;
  }
  EXPECT_EQ(sum, 0 + 1 + 4 + 9 + 16);

  ASSERT_OK_AND_ASSIGN(SharedMemory shm, SharedMemory::Create(64));
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(SharedMemory view, SharedMemory::Attach(shm.name()));
    EXPECT_EQ(pool->Apply(WriteAt, std::move(view), i).value_or(-1), i);
  }
  EXPECT_EQ(std::string(static_cast<const char*>(shm.data()), 4), "abcd");
  MPROC_EXPECT_OK(shm.Unlink());
}

INSTANTIATE_TEST_SUITE_P(StartMethods, PoolHandlesTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

}  // namespace
}  // namespace mproc
