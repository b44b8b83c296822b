#include "base/fork_child.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "base/syscall.h"

namespace mproc {

pid_t ForkChild(const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  return pid;
}

int ExitCodeOf(int wait_status) {
  return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

int ReapChild(pid_t pid, bool kill) {
  if (pid <= 0) return -1;
  if (kill) ::kill(pid, SIGKILL);
  int status = 0;
  if (RetryEintr([&] { return ::waitpid(pid, &status, 0); }) != pid) return -1;
  return ExitCodeOf(status);
}

}  // namespace mproc
