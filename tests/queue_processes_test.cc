// Queues across processes: many producers and consumers under every start method (nothing
// lost, nothing duplicated, FIFO per producer), more producers than the queue has rings,
// producers killed mid-stream (every acknowledged Put is delivered), and 1000 random consumer
// kills that lose at most the item each killed consumer held and never desynchronise the queue.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <random>
#include <vector>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gtest/gtest.h"
#include "ipc/queue.h"
#include "spawn/process.h"
#include "sync/value.h"

namespace mproc {
namespace {

using Item = std::pair<int32_t, int32_t>;  // (producer, sequence)
constexpr int kProducers = 3;
constexpr int kItemsEach = 2000;
constexpr int kTotal = kProducers * kItemsEach;

int Produce(Queue<Item> q, int32_t producer) {
  for (int32_t i = 0; i < kItemsEach; ++i) {
    if (!q.Put({producer, i}).ok()) return 2;
  }
  return 0;
}

// Takes items until `taken` reaches kTotal; counts each in `seen`; checks FIFO per producer.
int Consume(Queue<Item> q, Array<uint32_t> seen, Value<int64_t> taken) {
  std::vector<int32_t> last(kProducers, -1);
  for (;;) {
    if (taken.Load() >= kTotal) return 0;
    absl::StatusOr<Item> item = q.Get(absl::Milliseconds(50));
    if (!item.ok()) {
      if (absl::IsDeadlineExceeded(item.status())) continue;
      return 2;
    }
    auto [p, i] = *item;
    if (p < 0 || p >= kProducers || i < 0 || i >= kItemsEach) return 3;
    if (i <= last[p]) return 4;  // FIFO per producer broken
    last[p] = i;
    std::atomic_ref<uint32_t>(seen[static_cast<size_t>(p * kItemsEach + i)]).fetch_add(1);
    taken.FetchAdd(1);
  }
}

class QueueProcessesTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }
};

TEST_P(QueueProcessesTest, ManyProducersAndConsumersLoseAndDuplicateNothing) {
  ASSERT_OK_AND_ASSIGN(Queue<Item> q, Queue<Item>::Create(100));
  ASSERT_OK_AND_ASSIGN(Array<uint32_t> seen, Array<uint32_t>::Create(kTotal, LockMode::kNone));
  ASSERT_OK_AND_ASSIGN(Value<int64_t> taken, Value<int64_t>::Create(0, LockMode::kNone));
  std::vector<Process> ps;
  for (int32_t p = 0; p < kProducers; ++p) ps.emplace_back(Produce, q, p);
  for (int c = 0; c < 2; ++c) ps.emplace_back(Consume, q, seen, taken);
  for (Process& p : ps) {
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
  }
  for (Process& p : ps) {
    MPROC_EXPECT_OK(p.Join(absl::Seconds(120)));
    if (p.IsAlive()) {
      (void)p.Kill();
      (void)p.Join();
    }
    EXPECT_EQ(p.exitcode(), 0);
  }
  for (int k = 0; k < kTotal; ++k) ASSERT_EQ(seen[static_cast<size_t>(k)], 1u) << "item " << k;
  EXPECT_TRUE(q.Empty());
}

INSTANTIATE_TEST_SUITE_P(StartMethods, QueueProcessesTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

// A consumer that takes items forever and marks each one it got.
[[noreturn]] void ConsumeForever(Queue<int32_t>& q, Array<uint32_t>& seen) {
  for (;;) {
    absl::StatusOr<int32_t> v = q.Get(absl::Seconds(1));
    if (v.ok()) {
      std::atomic_ref<uint32_t>(seen[static_cast<size_t>(*v)]).fetch_add(1);
    } else if (!absl::IsDeadlineExceeded(v.status())) {
      _exit(3);  // a desynchronised channel would show up here
    }
  }
}

TEST(QueueKillTest, ThousandConsumerKillsLoseAtMostTheHeldItems) {
  constexpr int kItems = 20000;
  constexpr int kKills = 1000;
  ASSERT_OK_AND_ASSIGN(Queue<int32_t> q, Queue<int32_t>::Create());
  ASSERT_OK_AND_ASSIGN(Array<uint32_t> seen, Array<uint32_t>::Create(kItems, LockMode::kNone));
  // The producer is paced so that items keep arriving while consumers are being killed.
  pid_t producer = testing::Child([&] {
    for (int32_t i = 0; i < kItems; ++i) {
      if (!q.Put(i, absl::Seconds(60)).ok()) return 2;
      if (i % 20 == 19) ::usleep(1000);
    }
    return 0;
  });
  std::mt19937 rng(12345);
  int abnormal = 0;
  for (int k = 0; k < kKills; ++k) {
    pid_t c = testing::Child([&]() -> int { ConsumeForever(q, seen); });
    ::usleep(std::uniform_int_distribution<int>(0, 1500)(rng));
    ::kill(c, SIGKILL);
    int status = 0;
    ::waitpid(c, &status, 0);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) ++abnormal;
  }
  EXPECT_EQ(abnormal, 0) << "a consumer exited by itself (desynchronised channel?)";
  EXPECT_EQ(testing::Join(producer, 120), 0);
  // Drain what is left with a consumer nobody kills.
  for (;;) {
    absl::StatusOr<int32_t> v = q.GetNowait();
    if (!v.ok()) {
      ASSERT_TRUE(absl::IsUnavailable(v.status())) << v.status();
      break;
    }
    std::atomic_ref<uint32_t>(seen[static_cast<size_t>(*v)]).fetch_add(1);
  }
  int missing = 0;
  for (int i = 0; i < kItems; ++i) {
    ASSERT_LE(seen[static_cast<size_t>(i)], 1u) << "item " << i << " delivered twice";
    if (seen[static_cast<size_t>(i)] == 0) ++missing;
  }
  // Each killed consumer can have held at most one item it had not marked yet.
  EXPECT_LE(missing, kKills);
  std::printf("%d kills, %d items lost (each held by a killed consumer)\n", kKills, missing);
}

// More concurrent producers (40) than a queue has rings of their own (16): the extra ones
// share 4 rings, several to a ring, and every producer's items still arrive once each, in
// order, mixed with small and large (1 MiB, socket path) items.
TEST(QueueManyProducersTest, MoreProducersThanRingsKeepOrderAndLoseNothing) {
  constexpr int kProducersHere = 40;
  constexpr int kEach = 300;
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  std::vector<pid_t> pids;
  for (int p = 0; p < kProducersHere; ++p) {
    pids.push_back(testing::Child([&, p] {
      for (int i = 0; i < kEach; ++i) {
        std::string item = std::to_string(p) + ":" + std::to_string(i) + ":";
        if (i % 50 == 7) item.resize(1 << 20, 'z');
        if (!q.Put(item, absl::Seconds(60)).ok()) return 2;
      }
      return 0;
    }));
  }
  std::vector<int> next(kProducersHere, 0);
  for (int n = 0; n < kProducersHere * kEach; ++n) {
    ASSERT_OK_AND_ASSIGN(std::string item, q.Get(absl::Seconds(60)));
    int p = -1, i = -1;
    ASSERT_EQ(std::sscanf(item.c_str(), "%d:%d:", &p, &i), 2) << item.substr(0, 40);
    ASSERT_TRUE(p >= 0 && p < kProducersHere) << p;
    ASSERT_EQ(i, next[p]) << "producer " << p << " out of order or duplicated";
    ++next[p];
    EXPECT_EQ(item.size() == (1u << 20), i % 50 == 7);
  }
  for (pid_t pid : pids) EXPECT_EQ(testing::Join(pid), 0);
  EXPECT_TRUE(q.Empty());
}

using ipc_internal::kQueueOwnRings;
using ipc_internal::QueueTesting;

// Puts ordered by happens-before come out in that order for producers beyond the 16th too:
// 16 producers hold the queue's own rings, then a 17th puts x0..x4 and exits, and only then
// does one of the 16 put y0..y4: every x comes before every y. The 17th used to go on the
// socket, which a consumer reads after the rings: the y's came first.
TEST(QueueManyProducersTest, AProducerBeyondTheOwnedRingsKeepsHappensBeforeOrder) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  ASSERT_OK_AND_ASSIGN(Value<int64_t> ready, Value<int64_t>::Create(0));
  ASSERT_OK_AND_ASSIGN(Value<int64_t> step, Value<int64_t>::Create(0));  // 1: put the y's, 2: exit
  ASSERT_OK_AND_ASSIGN(Value<int64_t> ys_put, Value<int64_t>::Create(0));
  std::vector<pid_t> owners;
  for (int i = 0; i < kQueueOwnRings; ++i) {
    owners.push_back(testing::Child([&, i] {
      if (!q.Put("claimed").ok()) return 2;
      if (QueueTesting::ProducerRing(QueueTesting::Core(q)) >= kQueueOwnRings) return 3;
      ready.FetchAdd(1);
      while (step.Load() < 1) ::usleep(500);
      if (i == 0) {
        for (int k = 0; k < 5; ++k) {
          if (!q.Put("y" + std::to_string(k)).ok()) return 4;
        }
        ys_put.Store(1);
      }
      while (step.Load() < 2) ::usleep(500);
      return 0;
    }));
  }
  while (ready.Load() < kQueueOwnRings) ::usleep(500);
  pid_t x = testing::Child([&] {
    for (int k = 0; k < 5; ++k) {
      if (!q.Put("x" + std::to_string(k)).ok()) return 2;
    }
    return QueueTesting::ProducerRing(QueueTesting::Core(q)) >= kQueueOwnRings ? 0 : 3;
  });
  ASSERT_EQ(testing::Join(x), 0) << "the 17th producer did not put into a shared ring";
  step.Store(1);
  while (ys_put.Load() == 0) ::usleep(500);
  std::string order;
  int claimed = 0;
  for (int n = 0; n < kQueueOwnRings + 10; ++n) {
    ASSERT_OK_AND_ASSIGN(std::string item, q.Get(absl::Seconds(30)));
    if (item == "claimed") {
      ++claimed;
    } else {
      order += item + ",";
    }
  }
  EXPECT_EQ(order, "x0,x1,x2,x3,x4,y0,y1,y2,y3,y4,");
  EXPECT_EQ(claimed, kQueueOwnRings);
  step.Store(2);
  for (pid_t pid : owners) EXPECT_EQ(testing::Join(pid), 0);
  EXPECT_TRUE(q.Empty());
}

// A producer SIGKILLed while it holds its shared ring's put lock (and left a zombie) does not
// wedge the ring: the next producer of that ring takes the lock over, and every item put
// before and after arrives once, in order.
TEST(QueueManyProducersTest, AProducerKilledHoldingASharedRingsLockIsTakenOverFrom) {
  ASSERT_OK_AND_ASSIGN(Queue<int64_t> q, Queue<int64_t>::Create());
  ASSERT_OK_AND_ASSIGN(Value<int64_t> holding, Value<int64_t>::Create(0));
  pid_t holder = testing::Child([&] {
    if (!QueueTesting::UseSharedRing(QueueTesting::Core(q), 0).ok()) return 2;
    if (!q.Put(1).ok()) return 3;
    if (!QueueTesting::HoldSharedRingLock(QueueTesting::Core(q)).ok()) return 4;
    holding.Store(1);
    for (;;) ::pause();
  });
  while (holding.Load() == 0) ::usleep(500);
  ASSERT_EQ(::kill(holder, SIGKILL), 0);  // not reaped yet: a zombie holds the lock
  pid_t next = testing::Child([&] {
    if (!QueueTesting::UseSharedRing(QueueTesting::Core(q), 0).ok()) return 2;
    for (int64_t i = 2; i <= 101; ++i) {
      if (!q.Put(i, absl::Seconds(30)).ok()) return 3;
    }
    return 0;
  });
  EXPECT_EQ(testing::Join(next), 0);
  for (int64_t i = 1; i <= 101; ++i) {
    ASSERT_OK_AND_ASSIGN(int64_t v, q.Get(absl::Seconds(30)));
    ASSERT_EQ(v, i);
  }
  EXPECT_TRUE(q.Empty());
  EXPECT_EQ(testing::Join(holder), 128 + SIGKILL);
}

// The producers of a shared ring share its byte budget: once one has filled it, another's
// PutNowait is RESOURCE_EXHAUSTED, and its blocking Put goes through as soon as a consumer
// makes room (they wait together, woken at any take).
TEST(QueueManyProducersTest, ProducersOfASharedRingShareItsBudgetAndWakeForRoom) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  MPROC_ASSERT_OK(QueueTesting::UseSharedRing(QueueTesting::Core(q), 1));
  const std::string item(64 << 10, 'f');
  const std::string late(64 << 10, 'l');
  int filled = 0;
  for (; filled < 1000; ++filled) {
    absl::Status s = q.PutNowait(item);
    if (!s.ok()) {
      ASSERT_THAT(s, StatusIs(absl::StatusCode::kResourceExhausted));
      break;
    }
  }
  ASSERT_GE(filled, 32);
  ASSERT_LT(filled, 1000);
  ASSERT_OK_AND_ASSIGN(Value<int64_t> refused, Value<int64_t>::Create(0));
  pid_t other = testing::Child([&] {
    if (!QueueTesting::UseSharedRing(QueueTesting::Core(q), 1).ok()) return 2;
    if (!absl::IsResourceExhausted(q.PutNowait(late))) return 3;
    refused.Store(1);
    return q.Put(late, absl::Seconds(30)).ok() ? 0 : 4;
  });
  for (int waited = 0; refused.Load() == 0; ++waited) {
    ASSERT_NE(testing::TaskState(other), 'Z') << "the other producer's PutNowait was not refused";
    ASSERT_LT(waited, 60'000);
    ::usleep(500);
  }
  int got = 0;
  bool got_late = false;
  while (!got_late) {
    ASSERT_OK_AND_ASSIGN(std::string v, q.Get(absl::Seconds(30)));
    if (v == late) {
      got_late = true;
    } else {
      ASSERT_EQ(v, item);
      ++got;
    }
  }
  EXPECT_EQ(got, filled);
  EXPECT_EQ(testing::Join(other), 0);
  EXPECT_TRUE(q.Empty());
}

// A producer SIGKILLed at a random moment: every item whose Put had returned is delivered, in
// order, and nothing else (a half-written record is never seen). Its ring is taken over by the
// next producer.
TEST(QueueManyProducersTest, KilledProducersLoseNoAcknowledgedItem) {
  ASSERT_OK_AND_ASSIGN(Queue<int64_t> q, Queue<int64_t>::Create());
  ASSERT_OK_AND_ASSIGN(Array<int64_t> acked, Array<int64_t>::Create(40, LockMode::kNone));
  std::mt19937 rng(777);
  for (int round = 0; round < 40; ++round) {
    pid_t pid = testing::Child([&, round] {
      for (int64_t i = 0;; ++i) {
        if (!q.Put(round * 1000000 + i, absl::Seconds(30)).ok()) return 2;
        std::atomic_ref<int64_t>(acked[static_cast<size_t>(round)]).store(i + 1);
      }
    });
    ::usleep(std::uniform_int_distribution<int>(200, 3000)(rng));
    ::kill(pid, SIGKILL);
    EXPECT_EQ(testing::Join(pid), 128 + SIGKILL);
    // Drain this producer's items: exactly 0..n-1 with n >= what it acknowledged.
    int64_t n = 0;
    for (;;) {
      absl::StatusOr<int64_t> v = q.GetNowait();
      if (!v.ok()) {
        ASSERT_TRUE(absl::IsUnavailable(v.status())) << v.status();
        break;
      }
      ASSERT_EQ(*v, round * 1000000 + n) << "round " << round;
      ++n;
    }
    const int64_t ack = std::atomic_ref<int64_t>(acked[static_cast<size_t>(round)]).load();
    EXPECT_GE(n, ack) << "round " << round << ": an acknowledged item was lost";
    EXPECT_LE(n, ack + 1) << "round " << round;  // at most the one whose ack it never wrote
  }
}

}  // namespace
}  // namespace mproc
