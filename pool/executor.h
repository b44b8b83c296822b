// pool/executor.h — ProcessPoolExecutor and Future: CPython's concurrent.futures, on the same
// workers and channels as Pool (pool/internal/pool_core.h).
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
#include <set>
#include <utility>
#include <vector>

#include "pool/pool.h"

namespace mproc {

template <typename T>
class Future {
 public:
  // A Future of no task: never done (Result and Exception wait out their timeout), and
  // Cancel() is false.
  Future() = default;

  // Future::Result(timeout)
  //
  // The task's value once done; blocks up to `timeout` (a short spin, then a condition
  // variable) and may be called again, from any copy. Errors: DEADLINE_EXCEEDED (not done yet;
  // the task goes on), CANCELLED, ABORTED (the task threw, or its arguments did not decode in
  // the worker: a RemoteError payload; its worker died, or the executor broke,
  // "BrokenProcessPool: ..."; the initializer failed; the workers were terminated first),
  // FAILED_PRECONDITION (submitted after Shutdown, TerminateWorkers or KillWorkers),
  // INVALID_ARGUMENT (the result did not decode here), UNAVAILABLE (the executor lost workers
  // it could not replace); a failed send's own code. Thread-safe; a Future serves only the
  // process that submitted its task.
  [[nodiscard]] absl::StatusOr<T> Result(absl::Duration timeout = absl::InfiniteDuration()) const {
    return s_->result.Get(timeout);
  }
  // Future::Exception(timeout): waits as Result; returns the task's error as Result would
  // (CANCELLED for a cancelled future, where CPython raises), OK when it succeeded,
  // DEADLINE_EXCEEDED when not done in time. Thread-safe.
  absl::Status Exception(absl::Duration timeout = absl::InfiniteDuration()) const {
    if (!s_->result.Wait(timeout)) return absl::DeadlineExceededError("future not done in time");
    return s_->result.GetStatus();
  }
  // Whether the result is set (done callbacks run after this turns true); Cancelled(): done
  // with CANCELLED. Never block (a mutex); thread-safe.
  bool Done() const { return s_->result.Ready(); }
  bool Cancelled() const { return Done() && absl::IsCancelled(s_->result.GetStatus()); }
  // Future::Cancel()
  //
  // True when the task was cancelled before any worker received it: it must still wait in
  // the executor's queue (the pool thread hands each worker up to 4 tasks ahead, so a task
  // soon leaves it). The future then completes CANCELLED, its done callback running on this
  // thread. False once a worker has the task or it is done, except that a cancelled future
  // says true again. Does not wait for the task. Thread-safe.
  bool Cancel() {
    if (Done()) return Cancelled();
    if (s_->core == nullptr || !s_->core->Cancel(s_->id)) return false;
    s_->result.Set(absl::CancelledError("future cancelled"));
    return true;
  }
  // Future::AddDoneCallback(cb)
  //
  // Runs cb(future) once done, as concurrent.futures does: at once on this thread when
  // already done, else on the thread that completes it (the pool thread; the caller of
  // Cancel, or of Shutdown with cancel_futures), after Done() turned true, so Result and
  // Exception return at once inside it. Any number of callbacks, run in the order added, each
  // once and then dropped (with the copy of the future it holds). An exception from cb is
  // reported on stderr and goes no further. Thread-safe.
  void AddDoneCallback(std::function<void(const Future<T>&)> cb) const {
    s_->result.AfterReady([self = *this, cb = std::move(cb)] { cb(self); });
  }

 private:
  friend class ProcessPoolExecutor;
  struct Shared {
    AsyncResult<T> result;
    pool_internal::PoolCore* core = nullptr;
    uint64_t id = 0;
  };
  std::shared_ptr<Shared> s_ = std::make_shared<Shared>();
};

enum class ReturnWhen { kAllCompleted, kFirstCompleted, kFirstException };

// concurrent.futures.wait: the indices of done and not-done futures when `when` is met or the
// timeout passes. Blocks until then, polling every 200 us; no error. Thread-safe.
template <typename T>
std::pair<std::vector<size_t>, std::vector<size_t>> WaitFutures(
    const std::vector<Future<T>>& fs, absl::Duration timeout = absl::InfiniteDuration(),
    ReturnWhen when = ReturnWhen::kAllCompleted) {
  Deadline deadline = Deadline::After(timeout);
  for (;;) {
    std::vector<size_t> done, not_done;
    bool exception = false;
    for (size_t i = 0; i < fs.size(); ++i) {
      if (fs[i].Done()) {
        done.push_back(i);
        exception |= !fs[i].Exception(absl::ZeroDuration()).ok() && !fs[i].Cancelled();
      } else {
        not_done.push_back(i);
      }
    }
    bool met = not_done.empty() || (when == ReturnWhen::kFirstCompleted && !done.empty()) ||
               (when == ReturnWhen::kFirstException && exception);
    if (met || deadline.Expired()) return {done, not_done};
    ::usleep(200);  // short polls: futures complete on the pool thread
  }
}

// concurrent.futures.as_completed: the indices of `fs` in the order they complete (those not
// done by the timeout are left out). Blocks until all are done or the timeout passes, polling
// every 200 us, and only then returns the list; no error. Thread-safe.
template <typename T>
std::vector<size_t> AsCompleted(const std::vector<Future<T>>& fs,
                                absl::Duration timeout = absl::InfiniteDuration()) {
  Deadline deadline = Deadline::After(timeout);
  std::vector<size_t> order;
  std::set<size_t> seen;
  while (order.size() < fs.size() && !deadline.Expired()) {
    for (size_t i = 0; i < fs.size(); ++i) {
      if (!seen.count(i) && fs[i].Done()) {
        seen.insert(i);
        order.push_back(i);
      }
    }
    if (order.size() < fs.size()) ::usleep(200);
  }
  return order;
}

struct ExecutorOptions {
  int max_workers = 0;  // 0: the CPUs this process may run on
  std::optional<StartMethod> start_method;
  int max_tasks_per_child = 0;
};

// ProcessPoolExecutor::Map's options (CPython's map keywords).
struct ExecutorMapOptions {
  // Items per task (CPython's chunksize): at least 1.
  size_t chunksize = 1;
  // From the call: results not ready by then are DEADLINE_EXCEEDED, and the tasks that no
  // worker has received yet are cancelled (CPython raises TimeoutError while iterating).
  absl::Duration timeout = absl::InfiniteDuration();
  // At most this many chunks submitted and not yet collected (CPython 3.14's buffersize):
  // memory stays bounded however many items there are. Unset: every chunk at once. 0 is an
  // error, as in CPython.
  std::optional<size_t> buffersize;
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
  // Shutdown(wait=true): waits for every submitted task.
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
    const pool_internal::TaskFn<F> f = pool_internal::AsFunctionPointer(fn);
    using Traits = pool_internal::TaskTraits<F>;
    using R = pool_internal::TaskResult<F>;
    Future<R> fut;
    fut.s_->core = core_.get();
    AsyncResult<R> result = fut.s_->result;
    absl::StatusOr<uint64_t> id =
        pool_internal::SubmitCall<Traits>(*core_, f, result, std::forward<A>(args)...);
    if (!id.ok()) {
      result.Set(id.status());
    } else {
      fut.s_->id = *id;
    }
    return fut;
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
    const pool_internal::TaskFn<F> f = pool_internal::AsFunctionPointer(fn);
    using Traits = pool_internal::TaskTraits<F>;
    using R = pool_internal::TaskResult<F>;
    using Items = std::vector<absl::StatusOr<R>>;
    if (o.chunksize < 1) return absl::InvalidArgumentError("Map: chunksize must be >= 1");
    if (o.buffersize.has_value() && *o.buffersize < 1) {
      return absl::InvalidArgumentError("Map: buffersize must be unset or >= 1");
    }
    Deadline deadline = Deadline::After(o.timeout);
    const size_t chunks = (items.size() + o.chunksize - 1) / o.chunksize;
    std::vector<AsyncResult<Items>> results(chunks);
    std::vector<uint64_t> ids(chunks, 0);
    auto bounds = [&](size_t c) {
      return std::pair<size_t, size_t>(c * o.chunksize,
                                       std::min(items.size(), (c + 1) * o.chunksize));
    };
    auto submit = [&](size_t c) {
      auto [begin, end] = bounds(c);
      auto [task, keep] = pool_internal::EncodeChunk<Traits, false>(f, items, begin, end);
      AsyncResult<Items> r = results[c];
      const size_t n = end - begin;
      absl::StatusOr<uint64_t> id = core_->Submit(
          std::move(task),
          [r, n](absl::Status st, std::span<const std::byte> out, std::vector<UniqueFd> fds) {
            r.Set(pool_internal::DecodeChunk<typename Traits::Result>(st, out, std::move(fds), n));
          },
          std::move(keep));
      if (id.ok()) {
        ids[c] = *id;
      } else {
        r.Set(Items(n, id.status()));
      }
    };
    const size_t window = o.buffersize.value_or(chunks);
    size_t submitted = 0;
    while (submitted < chunks && submitted < window) submit(submitted++);
    Items out;
    out.reserve(items.size());
    for (size_t c = 0; c < chunks; ++c) {
      const absl::Duration left =
          deadline.infinite() ? absl::InfiniteDuration()
                              : absl::Nanoseconds(std::max<int64_t>(
                                    0, deadline.monotonic_ns() - MonotonicNowNs()));
      absl::StatusOr<Items> got = results[c].Get(left);
      if (!got.ok()) {
        // Out of time: what no worker has received yet is cancelled; the rest runs on, its
        // results unread (as CPython's).
        for (size_t k = c; k < submitted; ++k) {
          if (ids[k] != 0) (void)core_->Cancel(ids[k]);
        }
        out.resize(items.size(), absl::DeadlineExceededError(
                                     "Map: the result was not ready within the timeout"));
        return out;
      }
      for (auto& item : *got) out.push_back(std::move(item));
      if (submitted < chunks) submit(submitted++);
    }
    return out;
  }

  // ProcessPoolExecutor::Shutdown(wait, cancel_futures)
  //
  // Stops accepting work: later Submits' futures fail (see Submit). cancel_futures first
  // cancels every task still queued (their futures complete CANCELLED, callbacks on this
  // thread). With wait, blocks until the other tasks have finished and the workers have
  // exited (each is told to stop and killed if alive 60 s later); without, returns at once.
  // Returns OK; with wait from a done callback running on the pool thread,
  // FAILED_PRECONDITION after it stopped accepting work (the thread cannot wait for itself;
  // it ends once the work is done). Thread-safe: concurrent waiting calls all wait.
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
    absl::StatusOr<std::unique_ptr<pool_internal::PoolCore>> c =
        pool_internal::PoolCore::Create(std::move(core));
    if (!c.ok()) return c.status();
    return std::unique_ptr<ProcessPoolExecutor>(new ProcessPoolExecutor(*std::move(c)));
  }
  explicit ProcessPoolExecutor(std::unique_ptr<pool_internal::PoolCore> core)
      : core_(std::move(core)) {}
  std::unique_ptr<pool_internal::PoolCore> core_;
};

}  // namespace mproc

#endif  // MPROC_POOL_EXECUTOR_H_
