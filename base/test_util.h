// base/test_util.h — forked children for cross-process tests, bounded in time, and the test
// binaries' runfiles (testonly).
#ifndef MPROC_BASE_TEST_UTIL_H_
#define MPROC_BASE_TEST_UTIL_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/fork_child.h"
#include "base/mutex.h"
#include "base/owner.h"
#include "base/proc_stat.h"
#include "base/unique_fd.h"
#include "gtest/gtest.h"

extern char** environ;

namespace mproc::testing {

// A file of the test's runfiles by its workspace path ("bench/report"), or `rel` itself when
// not run by Bazel.
inline std::string Runfile(const std::string& rel) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  if (srcdir && ws) return std::string(srcdir) + "/" + ws + "/" + rel;
  return rel;
}

// A connected pair of AF_UNIX stream sockets (close-on-exec), for tests of stream protocols.
struct StreamSockets {
  UniqueFd a, b;
};
inline StreamSockets StreamSocketPair() {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

// The whole contents of a file ("" when it cannot be read).
inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Forks a child running `body`; its return value is the exit code (base/fork_child.h).
inline pid_t Child(const std::function<int()>& body) { return ForkChild(body); }

// Waits up to `seconds` for `pid`; kills it if it is still running. Returns the exit code,
// 128 + signal, or -1 when it had to be killed.
inline int Join(pid_t pid, int seconds = 60) {
  for (int i = 0; i < seconds * 100; ++i) {
    int status;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return ExitCodeOf(status);
    ::usleep(10'000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ADD_FAILURE() << "child " << pid << " did not finish in " << seconds << " s";
  return -1;
}

// What a program run by RunProgram did: its exit code (as Join's), stdout and stderr.
struct ProgramOutcome {
  int exit_code = -1;
  std::string out, err;
};

// This process's environment without what would make a test binary run as a child write
// over this test's own Bazel outputs or shard its cases (XML_OUTPUT_FILE, GTEST_*,
// TEST_PREMATURE_EXIT_FILE, TEST_SHARD*, TEST_TOTAL_SHARDS).
inline std::vector<std::string> EnvForNestedTest() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string s(*e);
    if (s.rfind("XML_OUTPUT_FILE=", 0) == 0 || s.rfind("GTEST_", 0) == 0 ||
        s.rfind("TEST_PREMATURE_EXIT_FILE=", 0) == 0 || s.rfind("TEST_SHARD", 0) == 0 ||
        s.rfind("TEST_TOTAL_SHARDS", 0) == 0) {
      continue;
    }
    env.push_back(s);
  }
  return env;
}

// Runs argv (argv[0] looked up in PATH) with stdin /dev/null and stdout and stderr in files
// under `scratch_dir` (so a straggling grandchild cannot hold the test on a pipe), for at most
// `limit_s` seconds (then it is killed and the test fails, as Join), in `env` ("K=V" each;
// nullptr: this process's environment).
inline ProgramOutcome RunProgram(std::vector<std::string> args, const std::string& scratch_dir,
                                 int limit_s = 120, const std::vector<std::string>* env = nullptr) {
  const std::string out = scratch_dir + "/out", err = scratch_dir + "/err";
  ProgramOutcome o;
  const int in_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  pid_t pid = -1;
  int spawn_errno = 0;
  if (in_fd >= 0 && out_fd >= 0 && err_fd >= 0) {
    pid = SpawnProgram(args, {.in = in_fd, .out = out_fd, .err = err_fd}, env);
    spawn_errno = errno;
  } else {
    spawn_errno = errno;
  }
  for (int fd : {in_fd, out_fd, err_fd}) {
    if (fd >= 0) ::close(fd);
  }
  if (pid < 0) {
    ADD_FAILURE() << "cannot start " << args[0] << ": " << std::strerror(spawn_errno);
    return o;
  }
  o.exit_code = Join(pid, limit_s);
  o.out = ReadFile(out);
  o.err = ReadFile(err);
  ::unlink(out.c_str());
  ::unlink(err.c_str());
  return o;
}

// Holds `mu` locked on another thread from construction until destruction: the lock some
// other thread holds at the moment of a fork, which fork-safety tests need.
template <typename Lockable>
class HeldOnAnotherThread {
 public:
  explicit HeldOnAnotherThread(Lockable& mu)
      : thread_([this, &mu] {
          std::unique_lock<Lockable> hold(mu);
          MutexLock l(&m_);
          held_ = true;
          cv_.SignalAll();
          cv_.Wait(l, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(m_) { return release_; });
        }) {
    MutexLock l(&m_);
    cv_.Wait(l, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(m_) { return held_; });
  }
  ~HeldOnAnotherThread() {
    {
      MutexLock l(&m_);
      release_ = true;
    }
    cv_.SignalAll();
    thread_.join();
  }
  HeldOnAnotherThread(const HeldOnAnotherThread&) = delete;
  HeldOnAnotherThread& operator=(const HeldOnAnotherThread&) = delete;

 private:
  Mutex m_;
  CondVar cv_;
  bool held_ ABSL_GUARDED_BY(m_) = false;
  bool release_ ABSL_GUARDED_BY(m_) = false;
  std::thread thread_;  // last: starts once the members above exist
};

// The scheduler state of task `pid` (R, S, D, Z, T, ...) from /proc/<pid>/stat; '?' when it
// is gone.
inline char TaskState(pid_t pid) { return ReadTaskStat(pid).state; }

// Waits (up to `seconds`) until task `pid` sleeps in the kernel (state S): the signal that a
// child reached the blocking call under test, in place of a sleep that guesses how long it
// takes to get there. Callers first make sure that call is the only place the child can
// sleep. Returns false when it did not happen in time (or the task is gone).
inline bool WaitUntilAsleep(pid_t pid, int seconds = 30) {
  for (int i = 0; i < seconds * 2000; ++i) {
    char s = TaskState(pid);
    if (s == 'S') return true;
    if (s == '?' || s == 'Z') return false;
    ::usleep(500);
  }
  return false;
}

// Waits up to `seconds` for `fd` to be readable.
inline bool WaitReadable(int fd, int seconds) {
  pollfd p = {fd, POLLIN, 0};
  return ::poll(&p, 1, seconds * 1000) == 1;
}


// Collects the ids of threads as they start, for a test to wait until every one is asleep.
class ThreadIds {
 public:
  void Add() {
    MutexLock l(&mu_);
    ids_.push_back(static_cast<pid_t>(CurrentTid()));
  }
  // Waits until `n` threads registered and each sleeps in the kernel (up to `seconds`).
  bool WaitAllAsleep(size_t n, int seconds = 30) {
    for (int i = 0; i < seconds * 2000; ++i) {
      {
        MutexLock l(&mu_);
        if (ids_.size() >= n) break;
      }
      ::usleep(500);
    }
    std::vector<pid_t> ids;
    {
      MutexLock l(&mu_);
      ids = ids_;
    }
    if (ids.size() < n) return false;
    for (pid_t id : ids) {
      if (!WaitUntilAsleep(id, seconds)) return false;
    }
    return true;
  }

 private:
  Mutex mu_;
  std::vector<pid_t> ids_ ABSL_GUARDED_BY(mu_);
};

inline double NowSeconds() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace mproc::testing

#endif  // MPROC_BASE_TEST_UTIL_H_
