// A gtest binary that leaks on purpose, run by test_main_test.cc: the shared test main must
// fail LeaksAnFd and LeaksAChild, pass Clean, and kill the leaked child.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include "gtest/gtest.h"

TEST(LeakDemo, Clean) { SUCCEED(); }

TEST(LeakDemo, LeaksAnFd) {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
}

TEST(LeakDemo, LeaksAChild) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::sleep(600);
    _exit(0);
  }
  std::printf("LEAKED_CHILD_PID=%d\n", pid);
  std::fflush(stdout);
}
