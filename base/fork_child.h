// base/fork_child.h — fork a child that runs a function, and reap it: the one helper behind the
// tests' Child/Join (base/test_util.h) and the benchmark rows' two-process children
// (bench/rows/two_process.h).

#ifndef MPROC_BASE_FORK_CHILD_H_
#define MPROC_BASE_FORK_CHILD_H_

#include <sys/types.h>

#include <functional>

namespace mproc {

// Forks a child that runs `body` and _exits with its return value (no exit handlers, no
// static destructors: it is a copy of this process). stdio is flushed first, so the child
// duplicates no buffered output. -1 (errno set) when fork fails.
pid_t ForkChild(const std::function<int()>& body);

// A waitpid status as one number: the exit code, or 128 + the signal that ended it.
int ExitCodeOf(int wait_status);

// Waits for child `pid` and returns ExitCodeOf its status; SIGKILLs it first when `kill` is
// set. -1 when `pid` is not a child of this process (or was reaped already).
int ReapChild(pid_t pid, bool kill = false);

}  // namespace mproc

#endif  // MPROC_BASE_FORK_CHILD_H_
