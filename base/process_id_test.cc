#include "base/process_id.h"

#include <sys/wait.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace mproc {
namespace {

TEST(ProcessIdTest, MatchesGetpidAndIsResetInForkChildren) {
  ASSERT_EQ(CurrentPid(), ::getpid());  // primes the cache
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(CurrentPid() == ::getpid() && CurrentPid() != ::getppid() ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(CurrentPid(), ::getpid());
}

}  // namespace
}  // namespace mproc
