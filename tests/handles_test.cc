// Every shareable handle, passed as a Process argument, arrives working in the child under
// each start method (DESIGN.md, Handles): fork inherits the descriptors, spawn sends them with
// SCM_RIGHTS over the bootstrap socket.
#include <unistd.h>

#include <cstring>
#include <string>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "ipc/connection.h"
#include "gtest/gtest.h"
#include "shm/segment.h"
#include "shm/shared_memory.h"
#include "spawn/process.h"
#include "sync/barrier.h"
#include "sync/condition.h"
#include "sync/event.h"
#include "sync/lock.h"
#include "sync/semaphore.h"
#include "sync/value.h"

namespace mproc {
namespace {

constexpr int kIncrements = 2000;

int IncrementUnderLock(Lock lock, Value<int64_t> counter) {
  for (int i = 0; i < kIncrements; ++i) {
    if (!lock.Acquire()) return 2;
    counter.Set(counter.Get() + 1);
    if (!lock.Release().ok()) return 3;
  }
  return 0;
}

int IncrementUnderValueLock(Value<int64_t> counter) {
  for (int i = 0; i < kIncrements; ++i) {
    RLockGuard g(counter.GetLock());
    counter.Set(counter.Get() + 1);
  }
  return 0;
}

int RLockRecursion(RLock lock) {
  if (!lock.Acquire() || !lock.Acquire() || lock.Depth() != 2) return 2;
  if (!lock.Release().ok() || !lock.Release().ok() || lock.Locked()) return 3;
  return 0;
}

// Waits for `go` (set by the parent), then signals back through `done` and `sem`.
int EventAndSemaphore(Event go, Event done, Semaphore sem, BoundedSemaphore bounded) {
  if (!go.Wait(absl::Seconds(30))) return 2;
  if (!sem.Release().ok()) return 3;
  if (bounded.Release().ok()) return 4;  // at its bound: over-release refused
  done.Set();
  return 0;
}

int FillArray(Array<double> a) {
  for (size_t i = 0; i < a.size(); ++i) a[i] = 0.5 * static_cast<double>(i);
  return a.HasLock() ? 0 : 2;
}

int WriteSegment(Segment seg, std::string text) {
  absl::StatusOr<Mapping> m = seg.Map();
  if (!m.ok()) return 2;
  std::memcpy(m->data(), text.c_str(), text.size() + 1);
  return 0;
}

int WriteSharedMemory(SharedMemory shm, std::string text) {
  if (shm.size() < text.size() + 1) return 2;
  std::memcpy(shm.data(), text.c_str(), text.size() + 1);
  return 0;
}

// Producer side of a Condition: set the flag under the lock, notify.
int NotifyCondition(Condition cond, Value<int32_t> flag) {
  if (!cond.Acquire()) return 2;
  flag.Set(1);
  absl::Status s = cond.NotifyAll();
  if (!cond.Release().ok() || !s.ok()) return 3;
  return 0;
}

Event* g_action_event = nullptr;
void BarrierAction() {
  if (g_action_event != nullptr) g_action_event->Set();
}
int BarrierParty(Barrier barrier, Event action_ran) {
  g_action_event = &action_ran;
  absl::StatusOr<uint32_t> index = barrier.Wait(absl::Seconds(30));
  g_action_event = nullptr;
  return index.ok() ? 0 : 2;
}

// Replies on the Connection it was handed (CONN-11: connections are handles too).
int EchoOverConnection(Connection conn) {
  absl::StatusOr<std::string> m = conn.RecvBytes(std::nullopt, absl::Seconds(30));
  if (!m.ok()) return 2;
  return conn.SendBytes("child got: " + *m).ok() ? 0 : 3;
}

class HandlesTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }
  void StartAll(std::vector<Process>& ps) {
    for (Process& p : ps) {
      p.SetStartMethod(GetParam());
      MPROC_ASSERT_OK(p.Start());
    }
  }
  void JoinAll(std::vector<Process>& ps) {
    for (Process& p : ps) {
      MPROC_EXPECT_OK(p.Join(absl::Seconds(60)));
      if (p.IsAlive()) {
        ADD_FAILURE() << "child still running";
        (void)p.Kill();
        (void)p.Join();
      }
      EXPECT_EQ(p.exitcode(), 0) << p.name();
    }
  }
};

TEST_P(HandlesTest, LockAndValueCountExactly) {
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  ASSERT_OK_AND_ASSIGN(Value<int64_t> counter, Value<int64_t>::Create(0, LockMode::kNone));
  ASSERT_OK_AND_ASSIGN(Value<int64_t> locked, Value<int64_t>::Create(0));
  std::vector<Process> ps;
  ps.emplace_back(IncrementUnderLock, lock, counter);
  ps.emplace_back(IncrementUnderLock, lock, counter);
  ps.emplace_back(IncrementUnderValueLock, locked);
  ps.emplace_back(IncrementUnderValueLock, locked);
  ps.emplace_back(RLockRecursion, locked.GetLock());
  StartAll(ps);
  JoinAll(ps);
  EXPECT_EQ(counter.Get(), 2 * kIncrements);
  EXPECT_EQ(locked.Get(), 2 * kIncrements);
  EXPECT_FALSE(lock.Locked());
}

TEST_P(HandlesTest, EventsAndSemaphoresWakeAcrossProcesses) {
  ASSERT_OK_AND_ASSIGN(Event go, Event::Create());
  ASSERT_OK_AND_ASSIGN(Event done, Event::Create());
  ASSERT_OK_AND_ASSIGN(Semaphore sem, Semaphore::Create(0));
  ASSERT_OK_AND_ASSIGN(BoundedSemaphore bounded, BoundedSemaphore::Create(1));
  std::vector<Process> ps;
  ps.emplace_back(EventAndSemaphore, go, done, sem, bounded);
  StartAll(ps);
  go.Set();
  EXPECT_TRUE(done.Wait(absl::Seconds(30)));
  EXPECT_TRUE(sem.Acquire(absl::Seconds(30)));
  JoinAll(ps);
}

TEST_P(HandlesTest, ConditionNotifiesAcrossProcesses) {
  ASSERT_OK_AND_ASSIGN(Condition cond, Condition::Create());
  ASSERT_OK_AND_ASSIGN(Value<int32_t> flag, Value<int32_t>::Create(0, LockMode::kNone));
  ASSERT_TRUE(cond.Acquire());
  std::vector<Process> ps;
  ps.emplace_back(NotifyCondition, cond, flag);
  StartAll(ps);
  ASSERT_OK_AND_ASSIGN(bool ok, cond.WaitFor([&] { return flag.Get() == 1; }, absl::Seconds(30)));
  EXPECT_TRUE(ok);
  MPROC_EXPECT_OK(cond.Release());
  JoinAll(ps);
}

TEST_P(HandlesTest, BarrierWithActionAcrossProcesses) {
  ASSERT_OK_AND_ASSIGN(Barrier barrier, Barrier::Create(3, BarrierAction));
  ASSERT_OK_AND_ASSIGN(Event action_ran, Event::Create());
  std::vector<Process> ps;
  ps.emplace_back(BarrierParty, barrier, action_ran);
  ps.emplace_back(BarrierParty, barrier, action_ran);
  StartAll(ps);
  g_action_event = &action_ran;
  ASSERT_OK_AND_ASSIGN(uint32_t index, barrier.Wait(absl::Seconds(30)));
  g_action_event = nullptr;
  EXPECT_LT(index, 3u);
  JoinAll(ps);
  EXPECT_TRUE(action_ran.IsSet());  // run by exactly one party, in whichever process
}

TEST_P(HandlesTest, ArraysSegmentsAndSharedMemory) {
  ASSERT_OK_AND_ASSIGN(Array<double> array, Array<double>::Create(1000));
  ASSERT_OK_AND_ASSIGN(Segment seg, Segment::Create(4096));
  ASSERT_OK_AND_ASSIGN(Segment seg_for_child, seg.Duplicate());
  ASSERT_OK_AND_ASSIGN(SharedMemory shm, SharedMemory::Create(4096));
  ASSERT_OK_AND_ASSIGN(SharedMemory view_for_child, SharedMemory::Attach(shm.name()));
  MPROC_ASSERT_OK(shm.Unlink());  // the descriptor travels, so the name is not needed
  {
    std::vector<Process> ps;
    ps.emplace_back(FillArray, array);
    ps.emplace_back(WriteSegment, std::move(seg_for_child), std::string("segment text"));
    ps.emplace_back(WriteSharedMemory, std::move(view_for_child), std::string("shm text"));
    StartAll(ps);
    JoinAll(ps);
  }
  EXPECT_EQ(array[999], 499.5);
  ASSERT_OK_AND_ASSIGN(Mapping m, seg.Map());
  EXPECT_STREQ(static_cast<const char*>(m.data()), "segment text");
  EXPECT_STREQ(static_cast<const char*>(shm.data()), "shm text");
}

TEST_P(HandlesTest, ConnectionsWorkInTheChild) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  std::vector<Process> ps;
  ps.emplace_back(EchoOverConnection, std::move(pair.second));
  StartAll(ps);
  MPROC_ASSERT_OK(pair.first.SendBytes("hi"));
  ASSERT_OK_AND_ASSIGN(std::string reply, pair.first.RecvBytes(std::nullopt, absl::Seconds(30)));
  EXPECT_EQ(reply, "child got: hi");
  JoinAll(ps);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, HandlesTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

}  // namespace
}  // namespace mproc
