// pool/future.h — Future: the handle of one task submitted to an executor (CPython's
// concurrent.futures.Future), the same type for every executor: ProcessPoolExecutor
// (pool/executor.h) and MpiExecutor (mpi/executor.h). Also concurrent.futures' wait and
// as_completed (WaitFutures, AsCompleted), and Submit and Map written once over any engine
// (pool_internal::TaskSink).
//
//   Future<int> f = ex->Submit(Square, 7);
//   MPROC_ASSIGN_OR_RETURN(int v, f.Result(absl::Seconds(5)));
//
// A Future refers to its executor only to cancel its task, through a link the executor cuts
// before it is freed (pool_internal::EngineLink): an executor's destructor waits for every
// task, so a Future that outlives it is done, and Cancel() then only reports, even when it
// raced with the executor's end (an executor dropped from its own done callback ends on its
// own thread, at a moment the Future's holder does not choose).
//
// Thread-safety: every method may be called from any thread, on any copy.
#ifndef MPROC_POOL_FUTURE_H_
#define MPROC_POOL_FUTURE_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/deadline.h"
#include "base/mutex.h"
#include "base/syscall.h"
#include "pool/async_result.h"
#include "pool/internal/task_protocol.h"
#include "pool/internal/task_sink.h"
#include "serialize/codec.h"

namespace mproc {

namespace pool_internal {
struct FutureAccess;
}  // namespace pool_internal

template <typename T>
class Future {
 public:
  // A Future of no task: never done (Result and Exception wait out their timeout), and
  // Cancel() is false.
  Future() = default;

  // Future::Result(timeout)
  //
  // The task's value once done; blocks up to `timeout` (a short spin, then a condition
  // variable; an MpiExecutor's waiter runs the executor's turns meanwhile, TaskSink::Drive)
  // and may be called again, from any copy. Errors: DEADLINE_EXCEEDED (not done yet;
  // the task goes on), CANCELLED, ABORTED (the task threw, or its arguments did not decode in
  // the worker: a RemoteError payload; its worker died, or the executor broke,
  // "BrokenProcessPool: ..."; the initializer failed; the workers were terminated first),
  // FAILED_PRECONDITION (submitted after Shutdown, TerminateWorkers or KillWorkers),
  // INVALID_ARGUMENT (the result did not decode here), UNAVAILABLE (the executor lost workers
  // it could not replace); a failed send's own code. Thread-safe; a Future serves only the
  // process that submitted its task.
  [[nodiscard]] absl::StatusOr<T> Result(absl::Duration timeout = absl::InfiniteDuration()) const {
    return s_->result.Get(Drive(timeout));
  }
  // Future::Exception(timeout): waits as Result; returns the task's error as Result would
  // (CANCELLED for a cancelled future, where CPython raises), OK when it succeeded,
  // DEADLINE_EXCEEDED when not done in time. Thread-safe.
  absl::Status Exception(absl::Duration timeout = absl::InfiniteDuration()) const {
    if (!s_->result.Wait(Drive(timeout))) {
      return absl::DeadlineExceededError("future not done in time");
    }
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
    if (s_->link == nullptr || !s_->link->Cancel(s_->id)) return false;
    s_->result.Set(absl::CancelledError("future cancelled"));
    return true;
  }
  // Future::AddDoneCallback(cb)
  //
  // Runs cb(future) once done, as concurrent.futures does: at once on this thread when
  // already done, else on the thread that completes it (the pool thread; an MpiExecutor's
  // engine thread, also when a waiter's turn completed it; the caller of Cancel, or of
  // Shutdown with cancel_futures), after Done() turned true, so Result and
  // Exception return at once inside it. Any number of callbacks: those added before the
  // future was done run in the order added (one added once it is done runs at once, on the
  // adding thread, maybe before or while the earlier ones run on the completing thread), each
  // once and then dropped (with the copy of the future it holds). An exception from cb is
  // reported on stderr and goes no further. Thread-safe.
  void AddDoneCallback(std::function<void(const Future<T>&)> cb) const {
    s_->result.AfterReady([self = *this, cb = std::move(cb)] { cb(self); });
  }

 private:
  friend struct pool_internal::FutureAccess;
  // Lends this thread to the executor while the task is pending (TaskSink::Drive), up to
  // `timeout`; returns what is left of it.
  absl::Duration Drive(absl::Duration timeout) const {
    if (s_->link == nullptr || timeout <= absl::ZeroDuration() || s_->result.ReadyHint()) {
      return timeout;
    }
    const Deadline deadline = Deadline::After(timeout);
    s_->link->Drive([s = s_.get()] { return s->result.ReadyHint(); }, deadline);
    return deadline.Remaining();
  }
  struct Shared {
    AsyncResult<T> result;
    std::shared_ptr<pool_internal::EngineLink> link;  // see the class comment
    uint64_t id = 0;
  };
  std::shared_ptr<Shared> s_ = std::make_shared<Shared>();
};

namespace pool_internal {

struct FutureAccess {
  template <typename T>
  static void Bind(Future<T>& f, TaskSink* sink, uint64_t id) {
    f.s_->link = sink->link();
    f.s_->id = id;
  }
  template <typename T>
  static const AsyncResult<T>& Result(const Future<T>& f) {
    return f.s_->result;
  }
};

// The futures a WaitFutures or AsCompleted call watches, by index, in the order they
// complete: each future's waiter appends its index and wakes the call.
struct WaitGroup {
  Mutex mu;
  CondVar cv;
  std::vector<size_t> fired ABSL_GUARDED_BY(mu);
};

// Puts a waiter on every future of `fs` not yet done; returns (index, ticket) of each.
template <typename T>
std::vector<std::pair<size_t, uint64_t>> WatchAll(const std::vector<Future<T>>& fs,
                                                  const std::shared_ptr<WaitGroup>& g) {
  std::vector<std::pair<size_t, uint64_t>> tickets;
  for (size_t i = 0; i < fs.size(); ++i) {
    const uint64_t t = FutureAccess::Result(fs[i]).AddWaiter([g, i] {
      MutexLock lock(&g->mu);
      g->fired.push_back(i);
      g->cv.SignalAll();
    });
    if (t != 0) tickets.emplace_back(i, t);
  }
  return tickets;
}

template <typename T>
void UnwatchAll(const std::vector<Future<T>>& fs,
                const std::vector<std::pair<size_t, uint64_t>>& tickets) {
  for (const auto& [i, t] : tickets) FutureAccess::Result(fs[i]).RemoveWaiter(t);
}

// Sleeps until a future beyond the first `seen` completes, or the deadline passes.
inline void WaitForMore(WaitGroup& g, size_t seen, const Deadline& deadline) {
  MutexLock lock(&g.mu);
  const absl::Duration left =
      deadline.infinite()
          ? absl::InfiniteDuration()
          : absl::Nanoseconds(std::max<int64_t>(0, deadline.monotonic_ns() - MonotonicNowNs()));
  g.cv.WaitFor(lock, left, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(g.mu) {
    return g.fired.size() > seen;
  });
}

}  // namespace pool_internal

enum class ReturnWhen { kAllCompleted, kFirstCompleted, kFirstException };

// concurrent.futures.wait: the indices of done and not-done futures when `when` is met or the
// timeout passes. Blocks until then, sleeping between completions (each future it watches
// wakes it as it completes); no error. Thread-safe.
template <typename T>
std::pair<std::vector<size_t>, std::vector<size_t>> WaitFutures(
    const std::vector<Future<T>>& fs, absl::Duration timeout = absl::InfiniteDuration(),
    ReturnWhen when = ReturnWhen::kAllCompleted) {
  Deadline deadline = Deadline::After(timeout);
  auto g = std::make_shared<pool_internal::WaitGroup>();
  const auto tickets = pool_internal::WatchAll(fs, g);
  for (;;) {
    size_t seen = 0;
    {
      MutexLock lock(&g->mu);
      seen = g->fired.size();  // read before looking: a completion after it wakes the wait
    }
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
    if (met || deadline.Expired()) {
      pool_internal::UnwatchAll(fs, tickets);
      return {done, not_done};
    }
    pool_internal::WaitForMore(*g, seen, deadline);
  }
}

// concurrent.futures.as_completed: the indices of `fs` in the order they complete (those done
// at the call first, by index; those not done by the timeout are left out). Blocks until all
// are done or the timeout passes, sleeping between completions, and only then returns the
// list; no error. Thread-safe.
template <typename T>
std::vector<size_t> AsCompleted(const std::vector<Future<T>>& fs,
                                absl::Duration timeout = absl::InfiniteDuration()) {
  Deadline deadline = Deadline::After(timeout);
  auto g = std::make_shared<pool_internal::WaitGroup>();
  const auto tickets = pool_internal::WatchAll(fs, g);
  std::vector<size_t> order;
  std::vector<bool> watched(fs.size(), false);
  for (const auto& [i, t] : tickets) watched[i] = true;
  for (size_t i = 0; i < fs.size(); ++i) {
    if (!watched[i]) order.push_back(i);  // done before the call
  }
  size_t taken = 0;  // of g->fired
  while (order.size() < fs.size()) {
    {
      MutexLock lock(&g->mu);
      for (; taken < g->fired.size(); ++taken) order.push_back(g->fired[taken]);
    }
    if (order.size() == fs.size() || deadline.Expired()) break;
    pool_internal::WaitForMore(*g, taken, deadline);
  }
  pool_internal::UnwatchAll(fs, tickets);
  return order;
}

// An executor's Map options (CPython's map keywords).
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


namespace pool_internal {


// Submits one call f(args...) (Traits: FnTraits of f) to `sink`; its result, or its failure,
// is set on `result`. The converted arguments stay alive until the task is sent: the task's
// bytes borrow their descriptors.
template <typename Traits, typename Fn, typename R, typename... A>
[[nodiscard]]
absl::StatusOr<uint64_t> SubmitCall(TaskSink& sink, Fn f, const AsyncResult<R>& result,
                                    A&&... args) {
  auto params = std::make_shared<typename Traits::Params>(std::forward<A>(args)...);
  return sink.Submit(
      EncodeCall<Traits>(f, *params),
      [result](absl::Status st, std::span<const std::byte> out, std::vector<UniqueFd> fds) {
        auto items = DecodeChunk<typename Traits::Result>(st, out, std::move(fds), 1);
        result.Set(std::move(items[0]));
      },
      params);
}

// Submit(fn, args...) on any engine: encodes the call on this thread and returns its Future;
// a refused submission is the Future's result.
template <typename F, typename... A>
Future<TaskResult<F>> SubmitFuture(TaskSink& sink, F fn, A&&... args) {
  Future<TaskResult<F>> fut;
  const AsyncResult<TaskResult<F>>& result = FutureAccess::Result(fut);
  absl::StatusOr<uint64_t> id = SubmitCall<TaskTraits<F>>(sink, AsFunctionPointer(fn), result,
                                                          std::forward<A>(args)...);
  if (id.ok()) {
    FutureAccess::Bind(fut, &sink, *id);
  } else {
    result.Set(id.status());
  }
  return fut;
}

// Map(fn, items, options) on any engine: results in input order, one StatusOr per item; the
// outer status is INVALID_ARGUMENT for a chunksize or buffersize of 0. See
// ProcessPoolExecutor::Map for the whole contract.
template <typename F, typename T>
absl::StatusOr<std::vector<absl::StatusOr<TaskResult<F>>>> MapFutures(
    TaskSink& sink, F fn, const std::vector<T>& items, const ExecutorMapOptions& o) {
  const TaskFn<F> f = AsFunctionPointer(fn);
  using Traits = TaskTraits<F>;
  using R = TaskResult<F>;
  using Items = std::vector<absl::StatusOr<R>>;
  if (o.chunksize < 1) return absl::InvalidArgumentError("Map: chunksize must be >= 1");
  if (o.buffersize.has_value() && *o.buffersize < 1) {
    return absl::InvalidArgumentError("Map: buffersize must be unset or >= 1");
  }
  Deadline deadline = Deadline::After(o.timeout);
  const size_t chunks = (items.size() + o.chunksize - 1) / o.chunksize;
  std::vector<AsyncResult<Items>> results(chunks);
  std::vector<uint64_t> ids(chunks, 0);
  auto submit = [&](size_t c) {
    const size_t begin = c * o.chunksize;
    const size_t end = std::min(items.size(), (c + 1) * o.chunksize);
    auto [task, keep] = EncodeChunk<Traits, false>(f, items, begin, end);
    AsyncResult<Items> r = results[c];
    const size_t n = end - begin;
    absl::StatusOr<uint64_t> id = sink.Submit(
        std::move(task),
        [r, n](absl::Status st, std::span<const std::byte> out, std::vector<UniqueFd> fds) {
          r.Set(DecodeChunk<typename Traits::Result>(st, out, std::move(fds), n));
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
        deadline.infinite()
            ? absl::InfiniteDuration()
            : absl::Nanoseconds(std::max<int64_t>(0, deadline.monotonic_ns() - MonotonicNowNs()));
    absl::StatusOr<Items> got = results[c].Get(left);
    if (!got.ok()) {
      // Out of time: what no worker has received yet is cancelled; the rest runs on, its
      // results unread (as CPython's).
      for (size_t k = c; k < submitted; ++k) {
        CancelledTask removed;
        if (ids[k] != 0) (void)sink.Cancel(ids[k], &removed);
      }
      out.resize(items.size(),
                 absl::DeadlineExceededError("Map: the result was not ready within the timeout"));
      return out;
    }
    for (auto& item : *got) out.push_back(std::move(item));
    if (submitted < chunks) submit(submitted++);
  }
  return out;
}

}  // namespace pool_internal

}  // namespace mproc

#endif  // MPROC_POOL_FUTURE_H_
