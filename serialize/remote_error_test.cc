#include "serialize/remote_error.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "base/fork_child.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "serialize/frame.h"

namespace mproc {

// Outside any anonymous namespace so its symbol name is stable in the trace.
__attribute__((noinline)) void MprocTestThrowingFunction(int x) {
  if (x > 0) throw std::invalid_argument("bad x: " + std::to_string(x));
}

namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

RemoteError CatchOne() {
  try {
    MprocTestThrowingFunction(42);
  } catch (...) {
    return CaptureCurrentException("Worker-7");
  }
  return {};
}

TEST(RemoteErrorTest, CapturesTypeWhatPidAndTheThrowingFunction) {
  RemoteError e = CatchOne();
  EXPECT_EQ(e.type_name, "std::invalid_argument");
  EXPECT_EQ(e.what, "bad x: 42");
  EXPECT_EQ(e.pid, ::getpid());
  EXPECT_EQ(e.process_name, "Worker-7");
  ASSERT_FALSE(e.trace.empty());
  EXPECT_THAT(e.trace[0], HasSubstr("MprocTestThrowingFunction"));
  EXPECT_THAT(e.Describe(), HasSubstr("std::invalid_argument: bad x: 42"));
}

TEST(RemoteErrorTest, NonStdExceptions) {
  RemoteError e;
  try {
    throw 17;
  } catch (...) {
    e = CaptureCurrentException("p");
  }
  EXPECT_EQ(e.type_name, "int");
  EXPECT_EQ(e.what, "(not a std::exception)");
}

TEST(RemoteErrorTest, TravelsAsAbortedStatusPayload) {
  RemoteError e = CatchOne();
  absl::Status s = RemoteErrorToStatus(e);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kAborted, HasSubstr("bad x: 42")));
  std::optional<RemoteError> back = RemoteErrorFromStatus(s);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->trace, e.trace);
  EXPECT_EQ(back->pid, e.pid);
  EXPECT_FALSE(RemoteErrorFromStatus(absl::AbortedError("plain")).has_value());
  // Python's str(exc) and type(exc), straight from the status.
  EXPECT_EQ(ExceptionMessage(s), "bad x: 42");
  EXPECT_EQ(ExceptionType(s), e.type_name);
  EXPECT_FALSE(e.type_name.empty());
  EXPECT_EQ(ExceptionMessage(absl::AbortedError("plain")), "plain");
  EXPECT_EQ(ExceptionType(absl::AbortedError("plain")), "");
  try {
    ThrowIfRemoteError(s);
    ADD_FAILURE() << "did not throw";
  } catch (const RemoteException& ex) {
    EXPECT_EQ(ex.error().what, "bad x: 42");
    EXPECT_THAT(ex.what(), HasSubstr("MprocTestThrowingFunction"));
  }
  ThrowIfRemoteError(absl::OkStatus());  // no-op
}

TEST(RemoteErrorTest, CrossesAProcessBoundary) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  const pid_t pid = ForkChild([&] {
    ::close(p[0]);
    absl::Status s;
    try {
      MprocTestThrowingFunction(3);
    } catch (...) {
      s = RemoteErrorToStatus(CaptureCurrentException("Child"));
    }
    return WritePipeValue(p[1], 1, s, Deadline::Infinite()).ok() ? 0 : 1;
  });
  ASSERT_GT(pid, 0);
  ::close(p[1]);
  ASSERT_OK_AND_ASSIGN(Frame f, ReadFrame(p[0], Deadline::After(absl::Seconds(60))));
  ::close(p[0]);
  absl::Status got;
  MPROC_ASSERT_OK(DecodeInto(f.payload(), got));
  EXPECT_EQ(ReapChild(pid), 0);
  std::optional<RemoteError> e = RemoteErrorFromStatus(got);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->pid, pid);
  EXPECT_EQ(e->process_name, "Child");
  ASSERT_FALSE(e->trace.empty());
  EXPECT_THAT(e->trace[0], HasSubstr("MprocTestThrowingFunction"));
}

}  // namespace
}  // namespace mproc
