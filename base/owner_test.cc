// The owner word and process owners (base/owner.h) against real processes: living, exited,
// zombie (killed and not yet reaped), a pid whose start time does not match, and a process
// whose main thread exited while another runs on.

#include "base/owner.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "base/test_util.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::mproc::testing::Child;
using ::mproc::testing::Join;
using ::mproc::testing::TaskState;

// A word in MAP_SHARED memory, seen by forked children.
struct SharedWords {
  SharedWords() {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    words = static_cast<std::atomic<uint32_t>*>(p);
    new (&words[0]) std::atomic<uint32_t>(0);
    new (&words[1]) std::atomic<uint32_t>(0);
  }
  ~SharedWords() { ::munmap(words, 4096); }
  std::atomic<uint32_t>* words;
};

// A child's CurrentProcessOwner(), published in two shared words (owner_lo last).
void PublishOwner(SharedWords& shared) {
  const uint64_t o = CurrentProcessOwner();
  shared.words[1].store(static_cast<uint32_t>(o >> 32));
  shared.words[0].store(static_cast<uint32_t>(o));
}
uint64_t AwaitOwner(SharedWords& shared) {
  while (shared.words[0].load() == 0) ::usleep(100);
  return shared.words[0].load() | (uint64_t{shared.words[1].load()} << 32);
}

// Waits until `pid` is a zombie (killed, not reaped).
bool WaitZombie(pid_t pid) {
  for (int i = 0; i < 20000; ++i) {
    if (TaskState(pid) == 'Z') return true;
    ::usleep(500);
  }
  return false;
}

TEST(OwnerTest, CurrentTidIsTheKernelsAndFollowsFork) {
  EXPECT_EQ(CurrentTid(), static_cast<uint32_t>(::syscall(SYS_gettid)));
  uint32_t other = 0;
  std::thread([&] { other = CurrentTid(); }).join();
  EXPECT_NE(other, CurrentTid());
  pid_t pid = Child([] {
    return CurrentTid() == static_cast<uint32_t>(::getpid()) ? 0 : 1;
  });
  EXPECT_EQ(Join(pid), 0);
}

TEST(OwnerTest, LivingExitedAndZombieTasks) {
  EXPECT_TRUE(TaskAlive(CurrentTid()));
  int go[2];
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  pid_t pid = Child([&] {
    char c;
    (void)!::read(go[0], &c, 1);
    return 0;
  });
  ::close(go[0]);
  EXPECT_TRUE(TaskAlive(static_cast<uint32_t>(pid)));
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(WaitZombie(pid));
  // kill(pid, 0) still succeeds on a zombie; the owner check does not take that for life.
  EXPECT_EQ(::kill(pid, 0), 0);
  EXPECT_FALSE(TaskAlive(static_cast<uint32_t>(pid)));
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
  EXPECT_FALSE(TaskAlive(static_cast<uint32_t>(pid)));
  ::close(go[1]);
}

TEST(OwnerTest, ProcessOwnersCarryTheirStartTime) {
  const uint64_t me = CurrentProcessOwner();
  EXPECT_EQ(OwnerPid(me), ::getpid());
  EXPECT_TRUE(ProcessOwnerAlive(me));
  // The same pid with another start time is another process: a reused pid is not the owner.
  EXPECT_FALSE(ProcessOwnerAlive(me ^ (uint64_t{1} << 40)));
  EXPECT_FALSE(ProcessOwnerAlive(0));
  SharedWords shared;
  pid_t pid = Child([&] {
    PublishOwner(shared);
    ::pause();
    return 0;
  });
  const uint64_t child = AwaitOwner(shared);
  EXPECT_EQ(OwnerPid(child), pid);
  EXPECT_NE(child, me);
  EXPECT_TRUE(ProcessOwnerAlive(child));
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(WaitZombie(pid));
  EXPECT_FALSE(ProcessOwnerAlive(child));
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
  EXPECT_FALSE(ProcessOwnerAlive(child));
}

// A process whose main thread exited shows its leader as a zombie while another thread runs:
// the process still owns what it owns; the exited thread holds no lock any more.
TEST(OwnerTest, AProcessWhoseMainThreadExitedIsStillAlive) {
  SharedWords shared;
  pid_t pid = Child([&] {
    PublishOwner(shared);
    pthread_t t;
    pthread_create(&t, nullptr, [](void*) -> void* {
      ::pause();
      return nullptr;
    }, nullptr);
    ::syscall(SYS_exit, 0);  // this thread only, without unwinding the test's frames
    return 0;
  });
  const uint64_t child = AwaitOwner(shared);
  ASSERT_TRUE(WaitZombie(pid));  // the leader
  EXPECT_TRUE(ProcessOwnerAlive(child));
  EXPECT_FALSE(TaskAlive(static_cast<uint32_t>(pid)));
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
}

TEST(OwnerTest, AWordHeldByALivingTaskTimesOut) {
  std::atomic<uint32_t> word{0};
  ASSERT_EQ(TryAcquireOwnerWord(&word, CurrentTid()), OwnerAcquire::kAcquired);
  uint32_t other = 0;
  OwnerAcquire r = OwnerAcquire::kAcquired;
  std::thread([&] {
    other = CurrentTid();
    EXPECT_EQ(TryAcquireOwnerWord(&word, other), OwnerAcquire::kTimedOut);
    r = AcquireOwnerWord(&word, other, Deadline::After(absl::Milliseconds(60)));
  }).join();
  EXPECT_EQ(r, OwnerAcquire::kTimedOut);
  EXPECT_EQ(word.load() & kOwnerTidMask, CurrentTid());
  // The waiter left the waiters bit: a release wakes (nobody now) and frees the word.
  EXPECT_EQ(ReleaseOwnerWord(&word) & kOwnerTidMask, CurrentTid());
  EXPECT_EQ(word.load(), 0u);
}

// A word holding the caller's own tid: a lock this thread holds (kWait: it waits, as a
// non-recursive lock taken twice does), or a dead holder whose tid it was given (kStale: taken
// at once, the waiters bit kept for whoever sleeps on it).
TEST(OwnerTest, OwnTidIsWaitedForOrTakenOverAsAsked) {
  std::atomic<uint32_t> word{0};
  const uint32_t me = CurrentTid();
  ASSERT_TRUE(TakeFreeOwnerWord(&word, me));
  uint32_t seen = 0;
  EXPECT_FALSE(TakeFreeOwnerWord(&word, me, &seen));
  EXPECT_EQ(seen, me);
  EXPECT_EQ(AcquireOwnerWord(&word, me, Deadline::After(absl::Milliseconds(30))),
            OwnerAcquire::kTimedOut);
  EXPECT_EQ(word.load(), me | kOwnerWaitersBit);
  EXPECT_EQ(AcquireOwnerWord(&word, me, Deadline::After(absl::Seconds(10)), OwnerSelf::kStale),
            OwnerAcquire::kOwnerDied);
  EXPECT_EQ(word.load(), me | kOwnerWaitersBit);
  EXPECT_EQ(ReleaseOwnerWord(&word), me | kOwnerWaitersBit);
  EXPECT_EQ(ReleaseOwnerWord(&word), 0u);  // not held
}

// A child SIGKILLed holding the word and not yet reaped (a zombie, whose pid kill(2) still
// finds) is dead: a waiter in its parent takes the word over and is told so. Before, only the
// parent could reap the zombie, and it was the one waiting.
TEST(OwnerTest, AZombieHolderIsTakenOver) {
  SharedWords shared;
  std::atomic<uint32_t>* word = &shared.words[0];
  pid_t pid = Child([&] {
    if (TryAcquireOwnerWord(word, CurrentTid()) != OwnerAcquire::kAcquired) return 1;
    ::pause();
    return 0;
  });
  while (word->load() == 0) ::usleep(100);
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(WaitZombie(pid));
  EXPECT_EQ(AcquireOwnerWord(word, CurrentTid(), Deadline::After(absl::Seconds(10))),
            OwnerAcquire::kOwnerDied);
  EXPECT_EQ(word->load() & kOwnerTidMask, CurrentTid());
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
  // And the one-attempt form, against a holder already reaped.
  word->store(static_cast<uint32_t>(pid));
  EXPECT_EQ(TryAcquireOwnerWord(word, CurrentTid()), OwnerAcquire::kOwnerDied);
}

}  // namespace
}  // namespace mproc
