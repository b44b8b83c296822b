#include "spawn/zygote.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

std::timed_mutex g_mu;  // held by another thread when the children are forked

// In the child: writes "pid ppid parent_pid name" to fd, returns 7.
int Report(UniqueFd fd) {
  std::string s = std::to_string(::getpid()) + " " + std::to_string(::getppid()) + " " +
                  std::to_string(ParentPid()) + " " + CurrentProcessName();
  return ::write(fd.get(), s.data(), s.size()) == static_cast<ssize_t>(s.size()) ? 7 : 1;
}

TEST(ZygoteTest, ChildrenAreStartedProcessesOfTheOwner) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Zygote> z, Zygote::Start(Report));
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Process> child, z->Fork(std::move(w), "Worker-1"));
  EXPECT_GT(child->pid(), 0);
  EXPECT_GE(child->sentinel(), 0);
  MPROC_ASSERT_OK(child->Join(absl::Seconds(10)));
  EXPECT_EQ(child->exitcode(), 7);
  char buf[256];
  ssize_t n = ::read(r.get(), buf, sizeof(buf));
  ASSERT_GT(n, 0);
  int pid = 0, ppid = 0, parent = 0;
  char name[64] = {0};
  ASSERT_EQ(std::sscanf(std::string(buf, static_cast<size_t>(n)).c_str(), "%d %d %d %63s", &pid,
                        &ppid, &parent, name),
            4);
  EXPECT_EQ(pid, child->pid());
  EXPECT_EQ(ppid, z->pid());            // forked by the zygote...
  EXPECT_EQ(parent, ::getpid());        // ...on behalf of this process
  EXPECT_STREQ(name, "Worker-1");
}

int SleepForever(UniqueFd) {
  ::pause();
  return 0;
}

TEST(ZygoteTest, KillTerminateAndExitCodes) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Zygote> z, Zygote::Start(SleepForever));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Process> a, z->Fork(UniqueFd(), "A"));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Process> b, z->Fork(UniqueFd(), "B"));
  EXPECT_TRUE(a->IsAlive());
  MPROC_ASSERT_OK(a->Kill());
  MPROC_ASSERT_OK(b->Terminate());
  MPROC_ASSERT_OK(a->Join(absl::Seconds(10)));
  MPROC_ASSERT_OK(b->Join(absl::Seconds(10)));
  EXPECT_EQ(a->exitcode(), -SIGKILL);
  EXPECT_EQ(b->exitcode(), -SIGTERM);
}

// The point of a zygote: a lock another thread holds now was free when the zygote was made,
// so a child forked now can take it (a plain fork() from here would copy it locked forever).
int TakeTheLock(UniqueFd) {
  if (!g_mu.try_lock_for(std::chrono::seconds(5))) return 3;
  g_mu.unlock();
  return 0;
}

TEST(ZygoteTest, ChildrenDoNotInheritLocksHeldByOtherThreadsNow) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Zygote> z, Zygote::Start(TakeTheLock));
  mproc::testing::HeldOnAnotherThread held(g_mu);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Process> child, z->Fork(UniqueFd(), "Locker"));
  MPROC_EXPECT_OK(child->Join(absl::Seconds(20)));
  EXPECT_EQ(child->exitcode(), 0);
}

TEST(ZygoteTest, ADeadZygoteIsUnavailable) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Zygote> z, Zygote::Start(Report));
  ::kill(z->pid(), SIGKILL);
  ::usleep(50'000);
  absl::StatusOr<std::unique_ptr<Process>> c = z->Fork(UniqueFd(), "Late");
  EXPECT_THAT(c.status(), StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace mproc
