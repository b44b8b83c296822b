// pool/internal/pool_core.h — the type-independent Pool: workers, per-worker channels, the
// ledger of which worker holds which task, and the pool thread.
//
// Each worker is a Process (any start method) running WorkerMain (pool/internal/worker.h;
// started by pool/internal/worker_start.h) with its own channel to the parent: a stream
// socketpair plus a RingLink (ipc/internal/ring_link.h), two shared-memory rings whose
// segment the parent sends as the socket's first frame. The pool thread assigns a task to
// exactly one worker (at most 4 queued per worker) by recording (worker -> task) and then
// writing it into that worker's ring; when a worker's pidfd says it died, exactly the tasks it
// held fail with ABORTED naming its pid and signal, and a new worker takes its place. Results
// and failures are delivered by calling the task's callback on the pool thread.
//
// Waiting: a worker with no task spins on its ring for the spin budget, then sleeps in poll()
// on its socket; the pool thread spins on the result rings and an atomic news counter (Submit,
// Close, ...), then sleeps in one wait over the sockets, the pidfds and its eventfd. A sender
// rings a bell byte on the socket only for a side that sleeps, and Wake() writes the eventfd
// only for a sleeping pool thread: a busy pool makes no system call per task.
//
// Wire: each message is a kind byte and its bytes. kTask: u64 id, then the task bytes (an entry
// function, the user function, its arguments); kResult: u64 id, then the entry's output;
// kInitFailed: a RemoteError (the initializer threw); kStop. A message without descriptors
// goes through the ring (pieces for a long one); one with descriptors is an mproc frame on
// the socket, announced in the ring.
#ifndef MPROC_POOL_INTERNAL_POOL_CORE_H_
#define MPROC_POOL_INTERNAL_POOL_CORE_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "pool/internal/task_sink.h"
#include "serialize/buffer.h"
#include "serialize/codec.h"
#include "spawn/process.h"

namespace mproc::pool_internal {

struct CoreOptions {
  int processes = 0;
  std::optional<StartMethod> start_method;
  int maxtasksperchild = 0;
  // ProcessPoolExecutor's rule: a worker that dies abruptly breaks the pool (every unfinished
  // task fails, no replacement) instead of being replaced.
  bool break_on_worker_death = false;
  // The opt-in interrupt mode: a SIGINT to this process fails every unfinished task with
  // CANCELLED (so a blocked Map returns) instead of killing the process; workers ignore SIGINT.
  bool cancel_on_sigint = false;
  InitEntry init_entry = nullptr;
  std::string init_bytes;                       // the initializer and its arguments
  std::shared_ptr<std::vector<UniqueFd>> init_fds;  // descriptors its arguments carry (owned)
  std::function<void()> fork_initializer;       // fork only: any callable
};

class PoolCore;

// Deletes a PoolCore, wherever its owner drops it. From the pool's own thread (a done
// callback that destroys its Pool or executor) the core cannot join that thread: it is
// orphaned instead. A core not yet closed is terminated (a Pool's drop); a closed one (an
// executor's Shutdown) finishes its work; then its thread frees it. Futures of its tasks stay
// valid meanwhile, and the exit hook waits for orphans before children are joined.
struct CoreDeleter {
  void operator()(PoolCore* core) const;
};
using CorePtr = std::unique_ptr<PoolCore, CoreDeleter>;

class PoolCore final : public TaskSink {
 public:
  static absl::StatusOr<CorePtr> Create(CoreOptions options);
  ~PoolCore();

  // Queues a task (bytes: TaskEntry, then what it reads); returns its id. FAILED_PRECONDITION
  // after Close or Terminate (the callback is not called then); the broken status once the
  // pool is broken.
  // `keepalive` owns whatever the task's descriptors belong to (the encoded arguments): the
  // buffer only borrows descriptor numbers, which must stay open until the task is sent.
  absl::StatusOr<uint64_t> Submit(EncodeBuffer task, TaskDone done,
                                  std::shared_ptr<void> keepalive = nullptr) override;
  // Queues several tasks at once (one lock, one wake-up for the pool thread): all of them, or
  // none with Submit's error. The submissions are moved from.
  struct Submission {
    EncodeBuffer task;
    TaskDone done;
    std::shared_ptr<void> keepalive;
  };
  absl::Status SubmitMany(std::vector<Submission>& batch);
  // Removes a task that no worker has received yet; true when it did (its callback is dropped
  // uncalled).
  bool Cancel(uint64_t id, CancelledTask* removed) override;
  // Cancels every task no worker has received yet (their callbacks get CANCELLED); returns
  // their ids.
  std::vector<uint64_t> CancelPending();
  absl::Status Close();
  // Ends the workers at once: SIGTERM (Terminate; one that ignores it is killed 2 s later) or
  // SIGKILL (Kill). Unfinished tasks fail.
  absl::Status Terminate();
  absl::Status Kill();
  absl::Status Join();
  int processes() const { return processes_; }
  // At exit, before the children are joined: a Pool's core terminates its workers, an
  // executor's finishes its work; both then join.
  void EndAtExit();
  // Pids of the live workers (tests).
  std::vector<pid_t> WorkerPids();

  struct State;  // pool_core.cc

 private:
  friend struct CoreDeleter;
  PoolCore() = default;
  void Run();
  // The owner dropped the core from a callback on the pool thread (see CoreDeleter).
  void Orphan();
  int processes_ = 0;
  std::unique_ptr<State> st_;
};

}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_POOL_CORE_H_
