#include "base/leak_checker.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/proc_stat.h"
#include "base/syscall.h"
#include "base/unique_fd.h"

namespace mproc {

std::map<int, std::string> ListOpenFds() {
  std::map<int, std::string> out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  const int own = ::dirfd(dir);
  while (dirent* e = ::readdir(dir)) {
    int fd;
    if (!absl::SimpleAtoi(e->d_name, &fd) || fd == own) continue;
    char target[512];
    std::string path = absl::StrCat("/proc/self/fd/", fd);
    ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
    out[fd] = n > 0 ? std::string(target, static_cast<size_t>(n)) : "?";
  }
  ::closedir(dir);
  return out;
}

namespace {

// The process a pidfd refers to ("Pid:" in its fdinfo), -1 when unknown.
pid_t PidfdTarget(int fd) {
  std::ifstream f(absl::StrCat("/proc/self/fdinfo/", fd));
  std::string key;
  while (f >> key) {
    if (key == "Pid:") {
      pid_t pid = -1;
      f >> pid;
      return pid;
    }
  }
  return -1;
}

}  // namespace

std::vector<pid_t> ListChildProcesses() {
  std::vector<pid_t> out;
  const pid_t self = ::getpid();
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* e = ::readdir(dir)) {
    pid_t pid;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    const TaskStat st = ReadTaskStat(pid);
    if (st.found == TaskStat::kFound && st.ppid == self) out.push_back(pid);
  }
  ::closedir(dir);
  return out;
}

void LeakChecker::Snapshot() { fds_ = ListOpenFds(); }

std::vector<std::string> LeakChecker::CheckAndCleanUp() {
  std::vector<std::string> problems;
  std::map<int, std::string> now = ListOpenFds();
  char exe[512];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  const std::string self = n > 0 ? std::string(exe, static_cast<size_t>(n)) : "";
  for (const auto& [fd, target] : now) {
    // A symbolizer (absl::Symbolize, used for remote-error traces) keeps the executable open
    // as a cache, once per process: not a leak.
    if (!self.empty() && target == self) continue;
    // A thread's io_uring (base/io_ring.h) lives as long as the thread, like its stack.
    if (target == "anon_inode:[io_uring]") continue;
    // A pidfd on this process itself: spawn/ keeps one per process, for its children to watch
    // their parent by (ExitWhenParentExits).
    if (target == "anon_inode:[pidfd]" && PidfdTarget(fd) == ::getpid()) continue;
    auto it = fds_.find(fd);
    if (it == fds_.end()) {
      problems.push_back(absl::StrCat("leaked fd ", fd, " -> ", target));
    } else if (it->second != target) {
      problems.push_back(
          absl::StrCat("leaked fd ", fd, " -> ", target, " (was ", it->second, " before the test)"));
    }
  }
  fds_ = std::move(now);

  for (pid_t pid : ListChildProcesses()) {
    const TaskStat st = ReadTaskStat(pid);
    problems.push_back(absl::StrCat("leaked child process ", pid, " (", st.comm, ", state ",
                                    std::string(1, st.state), "); killed it"));
    ::kill(pid, SIGKILL);
    RetryEintr([&] { return ::waitpid(pid, nullptr, __WALL); });
  }
  return problems;
}

}  // namespace mproc
