// base/fork_child.h — children for tests and the report: fork a child that runs a function, or
// start a program with chosen descriptors, and reap it. The one helper behind the tests'
// Child/Join and RunProgram (base/test_util.h), the rows' two-process children
// (bench/rows/two_process.h), the report's CPython peer (bench/report/python_peer.cc) and the
// Python interop tests (serialize/auth_test.cc).

#ifndef MPROC_BASE_FORK_CHILD_H_
#define MPROC_BASE_FORK_CHILD_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace mproc {

// Forks a child that runs `body` and _exits with its return value (no exit handlers, no
// static destructors: it is a copy of this process). stdio is flushed first, so the child
// duplicates no buffered output. -1 (errno set) when fork fails.
pid_t ForkChild(const std::function<int()>& body);

// The descriptors a program starts with for its stdin, stdout, stderr and descriptor 3
// (-1: stdin/stdout/stderr as this process has them, no descriptor 3).
struct ProgramFds {
  int in = -1;
  int out = -1;
  int err = -1;
  int fd3 = -1;
};

// Starts `args` (args[0] a path, or a name looked up in PATH) with `fds`, in `env` ("K=V"
// each; nullptr: this process's environment). Its pid, or -1 with errno set.
pid_t SpawnProgram(const std::vector<std::string>& args, const ProgramFds& fds,
                   const std::vector<std::string>* env = nullptr);

// Reads `fd` until end of file (or an error), retrying interrupted reads.
std::string ReadToEnd(int fd);

// A waitpid status as one number: the exit code, or 128 + the signal that ended it.
int ExitCodeOf(int wait_status);

// Waits for child `pid` and returns ExitCodeOf its status; SIGKILLs it first when `kill` is
// set. -1 when `pid` is not a child of this process (or was reaped already).
int ReapChild(pid_t pid, bool kill = false);

}  // namespace mproc

#endif  // MPROC_BASE_FORK_CHILD_H_
