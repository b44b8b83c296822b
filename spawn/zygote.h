// spawn/zygote.h — fork-method children made from a quiet, single-threaded copy of this process.
//
// fork() of a multi-threaded process copies only the calling thread: whatever lock another
// thread held at that instant (a malloc arena, a user mutex, a sanitizer's allocator) stays
// locked forever in the child. A Zygote is forked once, at a quiet moment — a Pool makes its
// own before its pool thread exists — and from then on forks children on request, each a copy
// of that quiet moment, never of the threaded present. A Pool under the fork start method gets
// its replacement workers (after a death, or maxtasksperchild) this way. The moment is only as
// quiet as the caller's: Start forks the calling process, so it warns (once, on stderr, as
// CPython 3.12 does at fork) when that process already runs other threads.
//
//   auto z = Zygote::Start([](UniqueFd fd) { return ServeOn(std::move(fd)); }).value();
//   std::unique_ptr<Process> child = z->Fork(std::move(channel_end), "Worker").value();
//   child->Join();  // pid, sentinel (pidfd), Kill, Terminate, exitcode: as any started Process
//
// The zygote forks the child and reports its exit status on a per-child channel (as the fork
// server does); ParentPid() in the child is this process (the zygote's owner). The zygote ends
// when its Zygote object is destroyed or its owner dies. `body` and everything it captures is
// the zygote's copy, taken at Start.
//
// Thread-safety: Fork may be called from any thread (requests are serialised).
#ifndef MPROC_SPAWN_ZYGOTE_H_
#define MPROC_SPAWN_ZYGOTE_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "base/parent_only_fd.h"
#include "base/unique_fd.h"
#include "spawn/process.h"

namespace mproc {

class Zygote {
 public:
  // Forks the zygote now (with glibc's fork, from the calling thread). Each child runs
  // body(fd) with the descriptor its Fork passed; the return value is its exit code.
  [[nodiscard]]
  static absl::StatusOr<std::unique_ptr<Zygote>> Start(std::function<int(UniqueFd)> body);
  ~Zygote();  // closes the request channel (the zygote exits) and reaps the zygote

  // A new child of the zygote running body(fd) (fd may be empty), named `name` (with
  // `numbered`, "<name>-N", N its Process identity, as CPython's "PoolWorker-3"), as a started
  // Process. UNAVAILABLE when the zygote is gone.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<Process>> Fork(UniqueFd fd, std::string name,
                                                bool numbered = false);

  pid_t pid() const { return pid_; }

 private:
  // ctl_ is set here rather than by Start, which the thread-safety analysis would check.
  Zygote(pid_t zygote_pid, pid_t owner_pid, ParentOnlyFd ctl)
      : pid_(zygote_pid), owner_pid_(owner_pid), ctl_(std::move(ctl)) {}
  pid_t pid_ = 0;        // set at construction, then only read
  pid_t owner_pid_ = 0;  // set at construction, then only read
  // Kept from every fork child (base/parent_only_fd.h): otherwise a second fork Pool's zygote
  // and workers hold it, and this zygote never reads end of file.
  ParentOnlyFd ctl_ ABSL_GUARDED_BY(mu_);
  Mutex mu_;  // serialises Fork's requests on ctl_
};

}  // namespace mproc

#endif  // MPROC_SPAWN_ZYGOTE_H_
