// base/leak_checker.h — finds file descriptors and child processes a test left behind.
//
// Every mproc test binary links //base:test_main, which snapshots the process before each test
// and, after it, fails the test if a descriptor is open that was not open before, or if a child
// process (running or a zombie) exists. A descriptor open on the test executable itself is
// not counted: symbolizers keep one open as a per-process cache. The check then cleans up — leaked children are killed
// with SIGKILL and reaped, the descriptor baseline is refreshed — so one leak fails one test.
//
//   LeakChecker checker;
//   checker.Snapshot();
//   RunTest();
//   for (const std::string& problem : checker.CheckAndCleanUp()) ADD_FAILURE() << problem;
//
// Thread-safety: not thread-safe; call from the test's main thread.

#ifndef MPROC_BASE_LEAK_CHECKER_H_
#define MPROC_BASE_LEAK_CHECKER_H_

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace mproc {

// Open descriptors of this process: fd -> what /proc/self/fd/<fd> links to.
std::map<int, std::string> ListOpenFds();

// Direct children of this process (running, stopped or zombie), from /proc.
std::vector<pid_t> ListChildProcesses();

class LeakChecker {
 public:
  // Records the descriptors open now.
  void Snapshot();

  // Returns one message per problem: "leaked fd 7 -> /dev/null", "leaked child process 123
  // (sleep, state S)". Kills and reaps leaked children, and takes the current descriptors
  // as the new baseline.
  std::vector<std::string> CheckAndCleanUp();

 private:
  std::map<int, std::string> fds_;
};

}  // namespace mproc

#endif  // MPROC_BASE_LEAK_CHECKER_H_
