#include "base/leak_checker.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(LeakCheckerTest, CleanRunReportsNothing) {
  LeakChecker c;
  c.Snapshot();
  { UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }
  EXPECT_THAT(c.CheckAndCleanUp(), IsEmpty());
}

TEST(LeakCheckerTest, FindsANewDescriptor) {
  LeakChecker c;
  c.Snapshot();
  UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  std::vector<std::string> p = c.CheckAndCleanUp();
  ASSERT_EQ(p.size(), 1u);
  EXPECT_THAT(p[0], HasSubstr("leaked fd " + std::to_string(fd.get()) + " -> /dev/null"));
  EXPECT_THAT(ListOpenFds(), Contains(::testing::Key(fd.get())));
}

TEST(LeakCheckerTest, FindsAndKillsALeakedChild) {
  LeakChecker c;
  c.Snapshot();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::pause();
    _exit(0);
  }
  EXPECT_THAT(ListChildProcesses(), Contains(pid));
  std::vector<std::string> p = c.CheckAndCleanUp();
  ASSERT_EQ(p.size(), 1u);
  EXPECT_THAT(p[0], HasSubstr("leaked child process " + std::to_string(pid)));
  // It was killed and reaped: no longer our child, not even a zombie.
  EXPECT_THAT(ListChildProcesses(), IsEmpty());
  EXPECT_EQ(::kill(pid, 0), -1);
}

TEST(LeakCheckerTest, FindsAZombie) {
  LeakChecker c;
  c.Snapshot();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(0);
  // Wait until it is a zombie (still listed, not reaped).
  for (int i = 0; i < 5000; ++i) {
    siginfo_t si{};
    if (::waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid) break;
    ::usleep(1000);
  }
  std::vector<std::string> p = c.CheckAndCleanUp();
  ASSERT_EQ(p.size(), 1u);
  EXPECT_THAT(p[0], HasSubstr("state Z"));
}

}  // namespace
}  // namespace mproc
