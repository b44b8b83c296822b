// Faults found by trying mproc from outside, each under every start method: a child SIGKILLed
// while it holds a shared end or a queue ring and not yet reaped (a zombie), and what its
// parent can still do.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/connection.h"
#include "ipc/queue.h"
#include "spawn/process.h"

namespace mproc {
namespace {

using ::mproc::testing::NowSeconds;
using ::mproc::testing::TaskState;
using ::mproc::testing::WaitUntilAsleep;
using ::testing::HasSubstr;

class FaultsTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }
};

// Waits until `pid` has died: a zombie (our own child, not reaped) or gone (a fork-server
// child, which the server reaps).
bool WaitDead(pid_t pid) {
  for (int i = 0; i < 60000; ++i) {
    char s = TaskState(pid);
    if (s == 'Z' || s == '?') return true;
    ::usleep(500);
  }
  return false;
}

// A second handle on the same end (its descriptors duplicated), for a child to take while the
// parent keeps its own: what a fork child inherits, under every start method.
Connection Copy(const Connection& c) {
  EncodeBuffer b;
  Encode(c, b);
  std::vector<UniqueFd> fds;
  for (int fd : b.fds()) fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  absl::StatusOr<Connection> copy = Decode<Connection>(b.bytes(), std::move(fds));
  EXPECT_TRUE(copy.ok()) << copy.status();
  return *std::move(copy);
}

int SendLongMessage(Connection end) {
  (void)end.SendBytes(std::string(64 << 20, 'k'));  // blocks: nobody reads
  return 0;
}

// A child SIGKILLed inside Send on a Pipe end it shares with its parent, and not reaped: its
// thread is a zombie, which kill(tid, 0) still finds. The parent's next Send used to wait for
// that "holder" forever (or to its timeout); it must take the turn over and report the message
// the dead child cut off.
TEST_P(FaultsTest, AZombieSenderDoesNotWedgeAPipeEndItSharedWithItsParent) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  Process p(SendLongMessage, Copy(a));
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  // The child announced the message (b is readable) and sleeps writing it.
  ASSERT_THAT(b.Poll(absl::Seconds(30)), IsOkAndHolds(true));
  ASSERT_TRUE(WaitUntilAsleep(p.pid()));
  MPROC_ASSERT_OK(p.Kill());
  ASSERT_TRUE(WaitDead(p.pid()));  // not joined: under fork and spawn a zombie now
  const double t0 = NowSeconds();
  EXPECT_THAT(a.SendBytes("after", absl::Seconds(20)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cut off partway")));
  EXPECT_LT(NowSeconds() - t0, 10.0);
  MPROC_EXPECT_OK(p.Join(absl::Seconds(30)));
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

int ClaimARingAndWait(Queue<std::string> q, Connection ready) {
  if (!q.Put("claimed").ok()) return 2;
  (void)ready.SendBytes("ok");
  ::pause();
  return 0;
}

// Sixteen producers claim the queue's sixteen rings and are SIGKILLed without being reaped.
// A new producer must take a dead one's ring over (zombies are dead); before, it found every
// ring "alive" and fell back to the socket, whose small buffer holds a few 16 KiB items where a
// ring holds 4 MiB of them (now it would fall back to a shared ring).
TEST_P(FaultsTest, RingsOfZombieProducersAreTakenOver) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  ASSERT_OK_AND_ASSIGN(auto pipe, Pipe());
  auto& [ready_rx, ready_tx] = pipe;
  std::vector<Process> ps;
  for (int i = 0; i < 16; ++i) ps.emplace_back(ClaimARingAndWait, q, Copy(ready_tx));
  for (Process& p : ps) {
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
  }
  for (int i = 0; i < 16; ++i) {
    ASSERT_THAT(ready_rx.RecvBytes(std::nullopt, absl::Seconds(60)), IsOkAndHolds("ok"));
  }
  for (Process& p : ps) MPROC_ASSERT_OK(p.Kill());
  for (Process& p : ps) ASSERT_TRUE(WaitDead(p.pid()));
  const std::string item(16 << 10, 'q');
  int put = 0;
  for (; put < 1000; ++put) {
    absl::Status s = q.PutNowait(item);
    if (!s.ok()) {
      ASSERT_THAT(s, StatusIs(absl::StatusCode::kResourceExhausted));
      break;
    }
  }
  EXPECT_GE(put, 200) << "the new producer did not get a ring";
  // ... a dead one's own ring, not one of the rings producers beyond the 16th share.
  EXPECT_LT(ipc_internal::QueueTesting::ProducerRing(ipc_internal::QueueTesting::Core(q)),
            ipc_internal::kQueueOwnRings);
  int claimed = 0, ours = 0;
  for (;;) {
    absl::StatusOr<std::string> got = q.GetNowait();
    if (!got.ok()) break;
    if (*got == "claimed") ++claimed;
    if (*got == item) ++ours;
  }
  EXPECT_EQ(claimed, 16);
  EXPECT_EQ(ours, put);
  for (Process& p : ps) {
    MPROC_EXPECT_OK(p.Join(absl::Seconds(30)));
    EXPECT_EQ(p.exitcode(), -SIGKILL);
  }
}

int PutRange(Queue<int> q, int from, int to) {
  for (int i = from; i < to; ++i) {
    if (!q.Put(i).ok()) return 2;
  }
  return 0;
}

int GetAll(Queue<int> q, int n, Connection report) {
  std::string got;
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<int> v = q.Get(absl::Seconds(30));
    if (!v.ok()) return 2;
    got += std::to_string(*v) + ",";
  }
  return report.SendBytes(got).ok() ? 0 : 3;
}

// Puts ordered by happens-before come out in that order, as CPython's single pipe gives: the
// parent puts 0..4, then starts a child that puts 5..9 and joins it; a consumer (here, and in
// another process) gets 0..9. They came out 5..9,0..4 in most runs, each producer having a
// ring of its own.
TEST_P(FaultsTest, PutsOrderedByHappensBeforeComeOutInThatOrder) {
  for (int round = 0; round < 10; ++round) {
    ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create());
    MPROC_ASSERT_OK(PutRange(q, 0, 5) == 0 ? absl::OkStatus() : absl::InternalError("put"));
    Process child(PutRange, q, 5, 10);
    child.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(child.Start());
    MPROC_ASSERT_OK(child.Join(absl::Seconds(60)));
    ASSERT_EQ(child.exitcode(), 0);
    // ... and a third producer after both, from another child.
    Process last(PutRange, q, 10, 12);
    last.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(last.Start());
    MPROC_ASSERT_OK(last.Join(absl::Seconds(60)));
    ASSERT_EQ(last.exitcode(), 0);
    MPROC_ASSERT_OK(PutRange(q, 12, 14) == 0 ? absl::OkStatus() : absl::InternalError("put"));
    const std::string want = "0,1,2,3,4,5,6,7,8,9,10,11,12,13,";
    if (round % 4 == 0) {
      std::string got;
      for (int i = 0; i < 14; ++i) {
        ASSERT_OK_AND_ASSIGN(int v, q.Get(absl::Seconds(30)));
        got += std::to_string(v) + ",";
      }
      EXPECT_EQ(got, want) << "round " << round;
    } else if (round % 4 == 2) {
      // GetMany, whose runs of one ring's records must not jump the order either.
      std::vector<int> out;
      while (out.size() < 14) MPROC_ASSERT_OK(q.GetMany(out, 14, absl::Seconds(30)));
      std::string got;
      for (int v : out) got += std::to_string(v) + ",";
      EXPECT_EQ(got, want) << "round " << round;
    } else {
      ASSERT_OK_AND_ASSIGN(auto pipe, Pipe());
      Process consumer(GetAll, q, 14, Copy(pipe.second));
      consumer.SetStartMethod(GetParam());
      MPROC_ASSERT_OK(consumer.Start());
      EXPECT_THAT(pipe.first.RecvBytes(std::nullopt, absl::Seconds(60)), IsOkAndHolds(want))
          << "round " << round;
      MPROC_ASSERT_OK(consumer.Join(absl::Seconds(60)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(StartMethods, FaultsTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

}  // namespace
}  // namespace mproc
