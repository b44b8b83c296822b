// Runs base:leak_demo (a test binary that leaks a descriptor and a child on purpose) and checks
// that the shared test main fails exactly those tests and kills the leaked child.
#include <signal.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TestMainTest, LeakCheckFailsTheLeakingTestsOnly) {
  // The demo must not write Bazel's test.xml or shard files over ours.
  const std::vector<std::string> env = testing::EnvForNestedTest();
  const char* tmp = std::getenv("TEST_TMPDIR");
  testing::ProgramOutcome r = testing::RunProgram({testing::Runfile("base/leak_demo")},
                                                  tmp != nullptr ? tmp : "/tmp", 120, &env);
  const std::string output = r.out + r.err;
  ASSERT_GE(r.exit_code, 0) << output;
  ASSERT_LT(r.exit_code, 128) << output;  // it exited, not killed
  EXPECT_NE(r.exit_code, 0) << output;

  EXPECT_THAT(output, HasSubstr("[       OK ] LeakDemo.Clean"));
  EXPECT_THAT(output, HasSubstr("[  FAILED  ] LeakDemo.LeaksAnFd"));
  EXPECT_THAT(output, HasSubstr("[  FAILED  ] LeakDemo.LeaksAChild"));
  EXPECT_THAT(output, HasSubstr("-> /dev/null"));
  EXPECT_THAT(output, HasSubstr("leaked child process"));
  EXPECT_THAT(output, Not(HasSubstr("[  FAILED  ] LeakDemo.Clean")));

  // The leaked child was killed by the test main (it would otherwise sleep for 10 minutes).
  size_t at = output.find("LEAKED_CHILD_PID=");
  ASSERT_NE(at, std::string::npos) << output;
  int child = 0;
  size_t start = at + 17, end = output.find('\n', start);
  ASSERT_TRUE(absl::SimpleAtoi(output.substr(start, end - start), &child));
  EXPECT_EQ(::kill(child, 0), -1);
}

}  // namespace
}  // namespace mproc
