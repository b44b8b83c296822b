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

// More concurrent producers (24) than a queue has rings (16): the extra ones use the socket
// path, and every producer's items still arrive once each, in order, mixed with small and large
// (1 MiB) items.
TEST(QueueManyProducersTest, MoreProducersThanRingsKeepOrderAndLoseNothing) {
  constexpr int kProducersHere = 24;
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
