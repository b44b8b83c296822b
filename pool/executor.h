// pool/executor.h — ProcessPoolExecutor: CPython's concurrent.futures, on the same workers and
// channels as Pool (pool/internal/pool_core.h). Its Future is pool/future.h's, shared with
// MpiExecutor (mpi/executor.h).
//
//   MPROC_ASSIGN_OR_RETURN(auto ex, ProcessPoolExecutor::Create({.max_workers = 4}));
//   Future<int> f = ex->Submit(Square, 7);
//   MPROC_ASSIGN_OR_RETURN(int v, f.Result(absl::Seconds(5)));
//   MPROC_ASSIGN_OR_RETURN(auto rs, ex->Map(Square, inputs, {.chunksize = 64}));
//   for (auto& r : rs) ...                                          // StatusOr per item, in order
//   MPROC_RETURN_IF_ERROR(ex->Shutdown(/*wait=*/true, /*cancel_futures=*/false));
//
// Semantics (CPython's, C++ casing): Submit returns a Future; Result(timeout) is the value or
// the task's error (ABORTED with a RemoteError for an exception), DEADLINE_EXCEEDED when not
// done in time, CANCELLED for a cancelled future; Exception(timeout) is that error (OK when
// the task succeeded); Cancel succeeds only while no worker has received the task;
// AddDoneCallback (any number) runs at once when already done, else on the thread that
// completes the future (the pool thread, or the one calling Cancel or Shutdown with
// cancel_futures), once Done() is true.
// Worker death follows CPython's BrokenProcessPool rule, unlike Pool's replace-and-continue:
// the executor breaks, every unfinished future fails with ABORTED "BrokenProcessPool: ..."
// naming the dead worker's pid and signal, and later Submits fail with the same status.
// Shutdown(wait, cancel_futures) stops accepting work (FAILED_PRECONDITION afterwards);
// cancel_futures cancels what no worker has received. TerminateWorkers (SIGTERM) and
// KillWorkers (SIGKILL) (3.14) end the workers at once; unfinished futures fail. The
// destructor is Shutdown(wait=true). Map takes CPython's chunksize, timeout and buffersize
// (ExecutorMapOptions); an initializer (with its arguments) is Create's.
//
// Thread-safety: every method may be called from any thread.

#ifndef MPROC_POOL_EXECUTOR_H_
#define MPROC_POOL_EXECUTOR_H_

#include <signal.h>

#include <memory>
#include <utility>
#include <vector>

#include "pool/future.h"
#include "pool/pool.h"

namespace mproc {

struct ExecutorOptions {
  int max_workers = 0;  // 0: the CPUs this process may run on
  std::optional<StartMethod> start_method;
  int max_tasks_per_child = 0;
};

class ProcessPoolExecutor {
 public:
  using Options = ExecutorOptions;

  // ProcessPoolExecutor::Create(options)
  //
  // Starts options.max_workers workers (0: the CPUs this process may run on) under the start
  // method, and the pool thread; returns once they are started. Errors: INVALID_ARGUMENT
  // (max_workers or max_tasks_per_child negative), the first worker that could not start (its
  // status), RESOURCE_EXHAUSTED for descriptors or memory. As with Pool, create fork
  // executors before starting threads; spawn and forkserver need mproc::Init in main.
  [[nodiscard]]
  static absl::StatusOr<std::unique_ptr<ProcessPoolExecutor>> Create(Options options = {}) {
    return CreateWith(options, pool_internal::CoreOptions());
  }
  // With an initializer (CPython's initializer and initargs): a function pointer (or
  // captureless lambda) and its arguments, run in each worker before its first task; under
  // the fork start method, any callable (FAILED_PRECONDITION under another one). An
  // initializer that fails (throws) breaks the executor: pending and later futures fail with
  // ABORTED "pool initializer failed: ...". Other errors as Create(options).
  template <typename F, typename... A>
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ProcessPoolExecutor>> Create(Options options,
                                                                     F initializer, A&&... args) {
    pool_internal::CoreOptions core;
    MPROC_RETURN_IF_ERROR(
        pool_internal::SetInitializer(core, std::move(initializer), std::forward<A>(args)...));
    return CreateWith(options, std::move(core));
  }
  // Shutdown(wait=true): waits for every submitted task. From one of its own done callbacks
  // (which run on the pool thread) it cannot wait: the executor stops accepting work, finishes
  // what was submitted once the callback returns, and its thread then frees it; the futures
  // stay valid and complete as usual (pool_internal::CoreDeleter).
  ~ProcessPoolExecutor() { (void)Shutdown(true); }

  // ProcessPoolExecutor::Submit(fn, args...)
  //
  // Queues fn(args...) and returns its Future at once (the arguments are encoded on this
  // thread; no waiting for a worker). `fn` is a function pointer or a captureless lambda, its
  // argument and result types with a Codec. No error of its own: the Future fails
  // FAILED_PRECONDITION when submitted after Shutdown, TerminateWorkers or KillWorkers, or
  // with the broken status once the executor is broken (ABORTED "BrokenProcessPool: ...",
  // the initializer's failure); the task's own outcome as Future::Result. Thread-safe.
  template <typename F, typename... A>
  Future<pool_internal::TaskResult<F>> Submit(F fn, A&&... args) {
    return pool_internal::SubmitFuture(*core_, fn, std::forward<A>(args)...);
  }

  // ProcessPoolExecutor::Map(fn, items, chunksize | options)
  //
  // Results in input order, one StatusOr per item (an error does not stop the others: a
  // chunk's items are run and reported one by one). The outer status is the call's own:
  // INVALID_ARGUMENT for a chunksize of 0 or a buffersize of 0 (CPython's ValueError),
  // before anything is submitted. Blocks until every result is in or o.timeout passes; then
  // the items not yet in are DEADLINE_EXCEEDED (the outer status stays OK) and the chunks
  // still queued are cancelled. Per item, errors as Future::Result (a refused submission
  // included). Thread-safe.
  template <typename F, typename T>
  [[nodiscard]] absl::StatusOr<std::vector<absl::StatusOr<pool_internal::TaskResult<F>>>> Map(
      F fn, const std::vector<T>& items, size_t chunksize = 1) {
    ExecutorMapOptions o;
    o.chunksize = chunksize;
    return Map(fn, items, o);
  }
  template <typename F, typename T>
  [[nodiscard]] absl::StatusOr<std::vector<absl::StatusOr<pool_internal::TaskResult<F>>>> Map(
      F fn, const std::vector<T>& items, const ExecutorMapOptions& o) {
    return pool_internal::MapFutures(*core_, fn, items, o);
  }

  // ProcessPoolExecutor::Shutdown(wait, cancel_futures)
  //
  // Stops accepting work: later Submits' futures fail (see Submit). cancel_futures first
  // cancels every task still queued (their futures complete CANCELLED, callbacks on this
  // thread). With wait, blocks until the other tasks have finished and the workers have
  // exited (each is told to stop and killed if alive 60 s later); without, returns at once.
  // Returns OK; with wait from a done callback running on the pool thread,
  // FAILED_PRECONDITION after it stopped accepting work (the thread cannot wait for itself;
  // it ends once the work is done). Thread-safe: concurrent waiting calls all wait. The
  // executor must outlive the call: a callback of a future it cancels (run on this thread,
  // inside Shutdown) must not destroy it.
  absl::Status Shutdown(bool wait = true, bool cancel_futures = false) {
    if (cancel_futures) core_->CancelPending();  // their futures complete as CANCELLED
    MPROC_RETURN_IF_ERROR(core_->Close());
    if (wait) return core_->Join();
    return absl::OkStatus();
  }
  // ProcessPoolExecutor::TerminateWorkers()
  //
  // Stops accepting work and sends every worker SIGTERM at once (SIGKILL to one still alive
  // after a 2 s grace); blocks until they have exited. Unfinished futures fail ABORTED ("pool
  // terminated before the task finished", or the broken status); later Submits as after
  // Shutdown. Returns OK. Thread-safety as Shutdown with wait.
  absl::Status TerminateWorkers() {
    MPROC_RETURN_IF_ERROR(core_->Terminate());
    return core_->Join();
  }
  // ProcessPoolExecutor::KillWorkers(): SIGKILL, at once (TerminateWorkers sends SIGTERM);
  // otherwise as TerminateWorkers.
  absl::Status KillWorkers() {
    MPROC_RETURN_IF_ERROR(core_->Kill());
    return core_->Join();
  }
  // The worker count fixed at Create (not the live count).
  int max_workers() const { return core_->processes(); }
  // Pids of the live workers as the pool thread last recorded them (empty once shut down).
  // Never blocks beyond a mutex; thread-safe.
  std::vector<pid_t> WorkerPids() { return core_->WorkerPids(); }

 private:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ProcessPoolExecutor>> CreateWith(
      const Options& options, pool_internal::CoreOptions core) {
    core.processes = options.max_workers;
    core.start_method = options.start_method;
    core.maxtasksperchild = options.max_tasks_per_child;
    core.break_on_worker_death = true;
    absl::StatusOr<pool_internal::CorePtr> c =
        pool_internal::PoolCore::Create(std::move(core));
    if (!c.ok()) return c.status();
    return std::unique_ptr<ProcessPoolExecutor>(new ProcessPoolExecutor(*std::move(c)));
  }
  explicit ProcessPoolExecutor(pool_internal::CorePtr core)
      : core_(std::move(core)) {}
  pool_internal::CorePtr core_;
};

}  // namespace mproc

#endif  // MPROC_POOL_EXECUTOR_H_
