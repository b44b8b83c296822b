#include "base/fork_child.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "base/syscall.h"

namespace mproc {

pid_t ForkChild(const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  return pid;
}

pid_t SpawnProgram(const std::vector<std::string>& args, const ProgramFds& fds,
                   const std::vector<std::string>* env) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const int targets[] = {0, 1, 2, 3};
  const int sources[] = {fds.in, fds.out, fds.err, fds.fd3};
  for (int i = 0; i < 4; ++i) {
    if (sources[i] >= 0) posix_spawn_file_actions_adddup2(&fa, sources[i], targets[i]);
  }
  std::vector<std::string> arg_store = args;
  std::vector<char*> argv;
  for (auto& a : arg_store) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_store;
  std::vector<char*> envp;
  if (env != nullptr) {
    env_store = *env;
    for (auto& e : env_store) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
  std::fflush(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(),
                                env != nullptr ? envp.data() : environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  return pid;
}

std::string ReadToEnd(int fd) {
  std::string text;
  char buf[8192];
  ssize_t n;
  while ((n = RetryEintr([&] { return ::read(fd, buf, sizeof(buf)); })) > 0) {
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
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
