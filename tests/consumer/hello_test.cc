#include <atomic>

#include "base/futex.h"
#include "base/status.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"

TEST(ConsumerTest, UsesMprocTargets) {
  std::atomic<uint32_t> w{1};
  EXPECT_EQ(mproc::FutexWait(&w, 0), mproc::FutexResult::kValueChanged);
  EXPECT_THAT(mproc::ErrnoToStatus(ENOENT, "open(x)"),
              mproc::StatusIs(absl::StatusCode::kNotFound));
}
