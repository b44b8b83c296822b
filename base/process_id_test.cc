#include "base/process_id.h"

#include <sys/wait.h>
#include <unistd.h>

#include "base/test_util.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

TEST(ProcessIdTest, MatchesGetpidAndIsResetInForkChildren) {
  ASSERT_EQ(CurrentPid(), ::getpid());  // primes the cache
  pid_t child = testing::Child(
      [] { return CurrentPid() == ::getpid() && CurrentPid() != ::getppid() ? 0 : 1; });
  ASSERT_GE(child, 0);
  EXPECT_EQ(testing::Join(child), 0);
  EXPECT_EQ(CurrentPid(), ::getpid());
}

}  // namespace
}  // namespace mproc
