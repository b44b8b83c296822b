#include "base/features.h"

#include <errno.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "base/fork_child.h"
#include "base/seccomp_for_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#ifndef __NR_clone3
#define __NR_clone3 435
#endif

namespace mproc {
namespace {

using ::testing::HasSubstr;

TEST(FeaturesTest, ProbesAreStableAndConsistent) {
  for (int i = 0; i < static_cast<int>(Feature::kCount); ++i) {
    Feature f = static_cast<Feature>(i);
    bool first = HasFeature(f);
    EXPECT_EQ(HasFeature(f), first) << FeatureName(f);
    EXPECT_EQ(FeatureErrno(f) == 0, first) << FeatureName(f);
  }
  // The io_uring sub-features need io_uring itself.
  if (!HasFeature(Feature::kIoUring)) {
    EXPECT_FALSE(HasFeature(Feature::kIoUringFutex));
    EXPECT_FALSE(HasFeature(Feature::kIoUringWaitid));
    EXPECT_TRUE(IoUringOpcodes().none());
  } else {
    EXPECT_TRUE(IoUringOpcodes().test(0));  // IORING_OP_NOP exists wherever io_uring does
  }
  // Everything mproc targets has memfd and pidfd_open (Linux >= 5.3).
  EXPECT_TRUE(HasFeature(Feature::kMemfdCreate));
  EXPECT_TRUE(HasFeature(Feature::kPidfdOpen));
}

TEST(FeaturesTest, ForcingOffAndBack) {
  bool had = HasFeature(Feature::kClone3);
  SetFeatureForcedOff(Feature::kClone3, true);
  EXPECT_FALSE(HasFeature(Feature::kClone3));
  EXPECT_EQ(FeatureErrno(Feature::kClone3), ENOSYS);
  EXPECT_THAT(DescribeFeatures(), HasSubstr("clone3: no (ENOSYS)"));
  SetFeatureForcedOff(Feature::kClone3, false);
  EXPECT_EQ(HasFeature(Feature::kClone3), had);
}

// The io_uring opcodes ride on io_uring: forcing it off forces them off with it, and forcing
// it back on lets them be probed again.
TEST(FeaturesTest, ForcingIoUringOffForcesItsOpcodesOff) {
  const bool futex = HasFeature(Feature::kIoUringFutex);
  const bool waitid = HasFeature(Feature::kIoUringWaitid);
  SetFeatureForcedOff(Feature::kIoUring, true);
  EXPECT_FALSE(HasFeature(Feature::kIoUring));
  EXPECT_FALSE(HasFeature(Feature::kIoUringFutex));
  EXPECT_EQ(FeatureErrno(Feature::kIoUringFutex), ENOSYS);
  EXPECT_FALSE(HasFeature(Feature::kIoUringWaitid));
  EXPECT_EQ(FeatureErrno(Feature::kIoUringWaitid), ENOSYS);
  EXPECT_TRUE(IoUringOpcodes().none());
  EXPECT_THAT(DescribeFeatures(), HasSubstr("io_uring_futex: no (ENOSYS)"));
  SetFeatureForcedOff(Feature::kIoUring, false);
  EXPECT_EQ(HasFeature(Feature::kIoUringFutex), futex);
  EXPECT_EQ(HasFeature(Feature::kIoUringWaitid), waitid);
}

// Runs `body` in a forked child with `nr` failing as `err`; returns the child's exit code.
template <typename F>
int InChildWithSeccomp(long nr, int err, F body) {
  return ReapChild(ForkChild([&] {
    if (InstallSeccompErrno(nr, err) != 0) return 99;
    ResetFeatureCacheForTesting();
    return body();
  }));
}

TEST(FeaturesTest, SeccompDeniedClone3IsDetected) {
  EXPECT_EQ(InChildWithSeccomp(__NR_clone3, ENOSYS, [] {
              return (!HasFeature(Feature::kClone3) && FeatureErrno(Feature::kClone3) == ENOSYS)
                         ? 0
                         : 1;
            }),
            0);
}

TEST(FeaturesTest, SeccompDeniedIoUringIsDetectedForEachErrno) {
  for (int err : {ENOSYS, EPERM, EOPNOTSUPP}) {
    EXPECT_EQ(InChildWithSeccomp(__NR_io_uring_setup, err,
                                 [err] {
                                   return (!HasFeature(Feature::kIoUring) &&
                                           !HasFeature(Feature::kIoUringFutex) &&
                                           FeatureErrno(Feature::kIoUring) == err &&
                                           IoUringOpcodes().none())
                                              ? 0
                                              : 1;
                                 }),
              0)
        << "errno " << err;
  }
}

TEST(FeaturesTest, DescribeListsEveryFeature) {
  std::string d = DescribeFeatures();
  for (int i = 0; i < static_cast<int>(Feature::kCount); ++i) {
    EXPECT_THAT(d, HasSubstr(std::string(FeatureName(static_cast<Feature>(i))) + ": "));
  }
}

}  // namespace
}  // namespace mproc
