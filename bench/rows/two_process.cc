#include "bench/rows/two_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "base/syscall.h"
#include "bench/report/report.h"

namespace mproc::bench {

pid_t ForkPinnedChild(int cpu, const std::function<int()>& body) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    PinSelf(cpu);
    _exit(body());
  }
  return pid;
}

int ReapChild(pid_t pid, bool kill) {
  if (pid <= 0) return -1;
  if (kill) ::kill(pid, SIGKILL);
  int status = 0;
  if (RetryEintr([&] { return ::waitpid(pid, &status, 0); }) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace mproc::bench
