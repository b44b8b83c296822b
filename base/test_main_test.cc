// Runs base:leak_demo (a test binary that leaks a descriptor and a child on purpose) and checks
// that the shared test main fails exactly those tests and kills the leaked child.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/syscall.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace mproc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string DemoPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && ws != nullptr) return absl::StrCat(srcdir, "/", ws, "/base/leak_demo");
  return "base/leak_demo";
}

TEST(TestMainTest, LeakCheckFailsTheLeakingTestsOnly) {
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);
  // The demo must not write Bazel's test.xml or shard files over ours.
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string s(*e);
    if (s.rfind("XML_OUTPUT_FILE=", 0) == 0 || s.rfind("GTEST_", 0) == 0 ||
        s.rfind("TEST_PREMATURE_EXIT_FILE=", 0) == 0 || s.rfind("TEST_SHARD", 0) == 0 ||
        s.rfind("TEST_TOTAL_SHARDS", 0) == 0) {
      continue;
    }
    env_store.push_back(s);
  }
  std::vector<char*> envp;
  for (auto& s : env_store) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string path = DemoPath();
  char* argv[] = {path.data(), nullptr};
  pid_t pid;
  ASSERT_EQ(::posix_spawn(&pid, path.c_str(), &fa, nullptr, argv, envp.data()), 0) << path;
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  std::string output;
  char buf[4096];
  ssize_t n;
  while ((n = RetryEintr([&] { return ::read(out[0], buf, sizeof(buf)); })) > 0) {
    output.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_NE(WEXITSTATUS(status), 0) << output;

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
