// Runs with MPROC_DISABLE_FEATURES=clone3,io_uring_futex (features_env_test) and with
// MPROC_DISABLE_FEATURES=io_uring (features_env_uring_test); see BUILD.
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "base/features.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

TEST(FeaturesEnvTest, EnvironmentForcesFeaturesOff) {
  const char* env = std::getenv("MPROC_DISABLE_FEATURES");
  if (env == nullptr || std::string(env) != "clone3,io_uring_futex") GTEST_SKIP() << "other env";
  EXPECT_FALSE(HasFeature(Feature::kClone3));
  EXPECT_EQ(FeatureErrno(Feature::kClone3), ENOSYS);
  EXPECT_FALSE(HasFeature(Feature::kIoUringFutex));
  // Features not named stay probed normally.
  EXPECT_TRUE(HasFeature(Feature::kMemfdCreate));
  // Clearing the override probes the kernel.
  SetFeatureForcedOff(Feature::kClone3, false);
  long r = ::syscall(SYS_clone3, nullptr, 0);
  bool kernel_has_clone3 = r < 0 && errno == EINVAL;
  EXPECT_EQ(HasFeature(Feature::kClone3), kernel_has_clone3);
}

// features_env_uring_test runs this file with MPROC_DISABLE_FEATURES=io_uring only.
TEST(FeaturesEnvTest, DisablingIoUringDisablesItsOpcodes) {
  const char* env = std::getenv("MPROC_DISABLE_FEATURES");
  if (env == nullptr || std::string(env) != "io_uring") GTEST_SKIP() << "runs under io_uring only";
  EXPECT_FALSE(HasFeature(Feature::kIoUring));
  EXPECT_FALSE(HasFeature(Feature::kIoUringFutex));
  EXPECT_FALSE(HasFeature(Feature::kIoUringWaitid));
  EXPECT_EQ(FeatureErrno(Feature::kIoUringWaitid), ENOSYS);
}

}  // namespace
}  // namespace mproc
