#include "base/proc_stat.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "base/test_util.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

TEST(ProcStatTest, ThisProcessItsParentThreadsAndName) {
  const TaskStat me = ReadTaskStat(::getpid());
  ASSERT_EQ(me.found, TaskStat::kFound);
  EXPECT_EQ(me.state, 'R');
  EXPECT_EQ(me.ppid, ::getppid());
  EXPECT_GE(me.threads, 1);
  EXPECT_GT(me.start_time, 0u);
  std::ifstream comm("/proc/self/comm");
  std::string name;
  std::getline(comm, name);
  EXPECT_EQ(me.comm, name);
}

// comm may hold spaces and parentheses: the fields after it still parse.
TEST(ProcStatTest, ANameWithSpacesAndParentheses) {
  pid_t pid = testing::Child([] {
    ::prctl(PR_SET_NAME, "a) (b c)", 0, 0, 0);
    const TaskStat s = ReadTaskStat(::getpid());
    if (s.comm != "a) (b c)") return 1;
    if (s.ppid != ::getppid() || s.state != 'R' || s.threads != 1) return 2;
    return 0;
  });
  EXPECT_EQ(testing::Join(pid), 0);
}

TEST(ProcStatTest, ZombiesAndTheGone) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(0);
  // Not reaped yet: a zombie, until waitpid.
  siginfo_t info;
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  const TaskStat z = ReadTaskStat(pid);
  EXPECT_EQ(z.found, TaskStat::kFound);
  EXPECT_TRUE(ZombieState(z.state)) << z.state;
  ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
  EXPECT_EQ(ReadTaskStat(pid).found, TaskStat::kGone);
}

}  // namespace
}  // namespace mproc
