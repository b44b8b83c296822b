// Runs with MPROC_DISABLE_FEATURES=clone3,io_uring_futex (see BUILD).
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/features.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

TEST(FeaturesEnvTest, EnvironmentForcesFeaturesOff) {
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

}  // namespace
}  // namespace mproc
