#include "base/status.h"

#include <cerrno>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(StatusTest, ErrnoToStatusNamesSyscallObjectAndErrno) {
  absl::Status s = ErrnoToStatus(ENOENT, "shm_open(/mproc-x)");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("shm_open(/mproc-x)"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("ENOENT"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("No such file"));
}

TEST(StatusTest, ProjectMapping) {
  EXPECT_EQ(ErrnoToCode(EPIPE), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ErrnoToCode(ECONNRESET), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ErrnoToCode(ETIMEDOUT), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ErrnoToCode(EAGAIN), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrnoToCode(ENOSPC), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoToCode(EMFILE), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoToCode(EINVAL), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrnoToCode(EEXIST), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ErrnoToCode(EINTR), absl::StatusCode::kCancelled);
  EXPECT_STREQ(ErrnoName(EBADF), "EBADF");
  EXPECT_STREQ(ErrnoName(9999), "E9999");
}

absl::Status Fails() { return absl::InvalidArgumentError("bad"); }
absl::StatusOr<int> Value(bool ok) {
  if (!ok) return absl::NotFoundError("none");
  return 7;
}

absl::Status UseReturnIfError(bool fail, int* reached) {
  if (fail) MPROC_RETURN_IF_ERROR(Fails());
  MPROC_RETURN_IF_ERROR(absl::OkStatus());
  *reached = 1;
  return absl::OkStatus();
}

absl::StatusOr<int> UseAssignOrReturn(bool ok) {
  MPROC_ASSIGN_OR_RETURN(int v, Value(ok));
  return v * 2;
}

TEST(StatusTest, Macros) {
  int reached = 0;
  EXPECT_THAT(UseReturnIfError(true, &reached), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(reached, 0);
  MPROC_EXPECT_OK(UseReturnIfError(false, &reached));
  EXPECT_EQ(reached, 1);
  EXPECT_THAT(UseAssignOrReturn(true), IsOkAndHolds(14));
  EXPECT_THAT(UseAssignOrReturn(false), StatusIs(absl::StatusCode::kNotFound, "none"));
}

TEST(StatusTest, Matchers) {
  EXPECT_THAT(absl::OkStatus(), IsOk());
  EXPECT_THAT(Fails(), Not(IsOk()));
  EXPECT_THAT(Fails(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ba")));
  EXPECT_THAT(Fails(), Not(StatusIs(absl::StatusCode::kNotFound)));
  EXPECT_THAT(Value(true), IsOkAndHolds(7));
  EXPECT_THAT(Value(true), Not(IsOkAndHolds(8)));
  EXPECT_THAT(Value(false), Not(IsOkAndHolds(7)));
  ASSERT_OK_AND_ASSIGN(int v, Value(true));
  EXPECT_EQ(v, 7);
}

}  // namespace
}  // namespace mproc
