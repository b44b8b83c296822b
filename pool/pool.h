// pool/pool.h — Pool: CPython's multiprocessing.Pool, where a dead worker never hangs anything.
//
//   int Square(int x) { return x * x; }
//   MPROC_ASSIGN_OR_RETURN(std::unique_ptr<Pool> pool, Pool::Create({.processes = 4}));
//   MPROC_ASSIGN_OR_RETURN(std::vector<int> squares, pool->Map(Square, inputs));
//   AsyncResult<int> r = pool->ApplyAsync(Square, 7);
//   MPROC_ASSIGN_OR_RETURN(int v, r.Get(absl::Seconds(5)));
//
// Tasks are transferable functions under every start method: a function pointer or
// captureless lambda, sent as a code reference (base/code_ref.h) with its arguments encoded by
// their codecs; workers exist before the tasks, as in CPython. The initializer is a function
// pointer with arguments (any start method), or — under fork only — any callable.
//
// Semantics (CPython's, CONTRACT §1.9): Map/StarMap keep input order and report the first
// error (in input order) after the whole job completed; MapAsync/ApplyAsync return an
// AsyncResult; IMap yields results in order and IMapUnordered in completion order, each item
// a StatusOr (an error at one item does not stop later ones). The automatic chunksize is
// CPython's (len / (4 * processes), rounded up). An exception thrown by a task reaches the
// caller as ABORTED carrying a RemoteError (type, message, throw-site trace, worker pid).
//
// Worker death: the pool thread assigns each task to exactly one worker and records it before
// the worker can run it (up to 4 tasks queued per worker, run in order, so workers never idle
// on a round trip); when a worker dies (SIGKILL, segfault, OOM), exactly the tasks it held —
// the one running and those queued behind it — fail with ABORTED naming its pid and signal, a
// new worker replaces it, and the pool goes on.
// A failing initializer is reported once: every task (pending and later) fails with ABORTED
// "pool initializer failed: ..." and no worker is respawned in a loop. maxtasksperchild
// retires a worker after that many tasks.
//
// Lifecycle: Close() (no new tasks; queued ones finish), Terminate() (workers get SIGTERM,
// unfinished tasks fail with ABORTED), Join() (after Close or Terminate, else
// FAILED_PRECONDITION). The destructor terminates and joins, as leaving CPython's `with Pool()`.
// A worker flushes its stdout after each task, before sending the result: whatever a task
// printed is written by the time its result arrives, so terminating the pool loses none of it
// (CPython's terminated workers drop what their stdout buffers hold).
//
// Callbacks (ApplyAsync/MapAsync with Callbacks) run on the pool thread, one at a time: keep
// them short and never block on the pool from inside one.
//
// IMap/IMapUnordered also take a generator (std::function<std::optional<T>()>) with a
// buffersize: input is pulled only as results are taken, so memory stays bounded.
//
// Progress: Map/StarMap/IMap/IMapUnordered take an optional Progress callback (done, total),
// called after each chunk; pool/progress.h has a one-line terminal progress bar.
//
// SIGINT: see PoolOptions::cancel_on_sigint.
//
// Thread-safety: every method may be called from any thread; a ResultIterator is for one
// consumer thread.

#ifndef MPROC_POOL_POOL_H_
#define MPROC_POOL_POOL_H_

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/deadline.h"
#include "base/mutex.h"
#include "base/spin.h"
#include "base/syscall.h"
#include "pool/async_result.h"
#include "pool/future.h"
#include "pool/internal/pool_core.h"
#include "pool/internal/task_protocol.h"
#include "serialize/codec.h"
#include "serialize/remote_error.h"
#include "spawn/process.h"

namespace mproc {

namespace pool_internal {
// Sets the workers' initializer: a function pointer (or captureless lambda) and its arguments,
// run in each worker before its first task; under the fork start method, any callable.
// Handles among the arguments (a Queue, a Lock, an Array...) travel with owned copies of their
// descriptors.
template <typename F, typename... A>
absl::Status SetInitializer(CoreOptions& core, F initializer, A&&... args) {
  if constexpr (spawn_internal::FunctionPointerLike<F>) {
    auto fn = +initializer;
    using Traits = InitTraits<decltype(fn)>;
    typename Traits::Params params(std::forward<A>(args)...);
    EncodeBuffer b;
    Encode(fn, b);
    Encode(params, b);
    core.init_entry = Traits::kEntry;
    core.init_bytes.assign(b.view());
    core.init_fds = std::make_shared<std::vector<UniqueFd>>();
    for (int fd : b.fds()) {
      absl::StatusOr<UniqueFd> dup = DupCloexec(fd, "a Pool initializer argument");
      if (!dup.ok()) return dup.status();
      core.init_fds->push_back(*std::move(dup));
    }
  } else {
    core.fork_initializer = [f = std::move(initializer),
                             t = std::make_tuple(std::decay_t<A>(std::forward<A>(args))...)]() mutable {
      std::apply(f, t);
    };
  }
  return absl::OkStatus();
}

}  // namespace pool_internal

// Success and error callbacks (CPython's callback / error_callback), run on the pool thread.
template <typename T>
struct Callbacks {
  std::function<void(const T&)> on_success;
  std::function<void(const absl::Status&)> on_error;
};

// Results of IMap / IMapUnordered, taken one at a time. With a buffersize, input is pulled
// lazily: at most buffersize * chunksize items are submitted and not yet taken, so memory stays
// bounded however long the input is.
template <typename T>
class ResultIterator {
 public:
  // The next result; std::nullopt once every result was taken; DEADLINE_EXCEEDED inside the
  // StatusOr when none arrived by the timeout (call again).
  std::optional<absl::StatusOr<T>> Next(absl::Duration timeout = absl::InfiniteDuration()) {
    Feed();
    MutexLock lock(&s_->mu);
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) {
      if (s_->exhausted && s_->taken == s_->issued) return true;
      return s_->ordered ? (!s_->window.empty() && s_->window.front().has_value())
                         : !s_->arrived.empty();
    };
    if (timeout == absl::InfiniteDuration()) {
      s_->cv.Wait(lock, ready);
    } else if (!s_->cv.WaitFor(lock, timeout, ready)) {
      return absl::StatusOr<T>(absl::DeadlineExceededError("no result yet"));
    }
    if (s_->exhausted && s_->taken == s_->issued) return std::nullopt;
    ++s_->taken;
    absl::StatusOr<T> v(absl::UnknownError(""));
    if (s_->ordered) {
      v = std::move(*s_->window.front());
      s_->window.pop_front();
      ++s_->base;
    } else {
      v = std::move(s_->arrived.front());
      s_->arrived.pop_front();
    }
    return v;
  }

  // Range-for over the results, each an absl::StatusOr<T>, waiting as long as each takes:
  //   for (absl::StatusOr<int> r : pool->IMap(Square, inputs)) ...
  // Begins with the first Next(); a loop may stop early and the iterator go on with Next().
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = absl::StatusOr<T>;
    using difference_type = std::ptrdiff_t;
    using pointer = value_type*;
    using reference = value_type&;

    reference operator*() { return *cur_; }
    pointer operator->() { return &*cur_; }
    iterator& operator++() {
      cur_ = it_->Next();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return !cur_.has_value(); }

   private:
    friend class ResultIterator;
    explicit iterator(ResultIterator* it) : it_(it), cur_(it->Next()) {}
    ResultIterator* it_;
    std::optional<absl::StatusOr<T>> cur_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  friend class Pool;
  struct Shared {
    Mutex mu;
    CondVar cv;
    // `ordered`, `limit` and `submit_chunk` are set by IMapLazy before the iterator is shared
    // and never change (read without a lock; submit_chunk is called under feed_mu).
    bool ordered = true;
    // The input has no more items (or submitting failed). Written only by submit_chunk (under
    // feed_mu too).
    bool exhausted ABSL_GUARDED_BY(mu) = false;
    size_t issued ABSL_GUARDED_BY(mu) = 0;  // items submitted (or failed at submission)
    size_t taken ABSL_GUARDED_BY(mu) = 0;
    size_t done ABSL_GUARDED_BY(mu) = 0;  // items whose results arrived (for progress)
    size_t base ABSL_GUARDED_BY(mu) = 0;  // ordered: index of window[0]
    // Ordered: results from `base` on.
    std::deque<std::optional<absl::StatusOr<T>>> window ABSL_GUARDED_BY(mu);
    std::deque<absl::StatusOr<T>> arrived ABSL_GUARDED_BY(mu);  // unordered
    size_t limit = SIZE_MAX;  // most items submitted and not taken
    std::function<bool()> submit_chunk;  // submits the next chunk; false when none is left
    Mutex feed_mu;                       // one feeder at a time
  };
  // Submits chunks while under the limit (never holding `mu`: submitting may call back).
  void Feed() {
    MutexLock feed(&s_->feed_mu);
    for (;;) {
      {
        MutexLock lock(&s_->mu);
        if (s_->exhausted || s_->issued - s_->taken >= s_->limit) return;
      }
      if (!s_->submit_chunk()) return;
    }
  }
  std::shared_ptr<Shared> s_ = std::make_shared<Shared>();
};

// Progress of a Map/StarMap/IMap/IMapUnordered: called after each chunk with the items done so
// far and the total (0 when it is not known: IMap over a generator), on the pool thread (where
// a chunk could not be submitted at all, on the submitting thread), one call at a time, with
// `done` increasing. ProgressBar (pool/progress.h) draws one on a terminal.
using Progress = std::function<void(size_t done, size_t total)>;

struct PoolOptions {
  int processes = 0;  // 0: CpuCount() (the CPUs this process may use, within its cgroup quota)
  std::optional<StartMethod> start_method;
  int maxtasksperchild = 0;  // 0: workers live as long as the pool
  // SIGINT. By default (false) mproc leaves SIGINT alone: Ctrl-C kills the program, and its
  // workers die with it (each watches its owner's pidfd), leaving no orphans. With true (the
  // opt-in interrupt mode) the pool installs a SIGINT handler while it exists (restoring the
  // previous one after the last such pool): a SIGINT fails every unfinished task with
  // CANCELLED, so a blocked Map returns CANCELLED, and the pool stays usable (tasks already
  // running finish, their results dropped). Workers then ignore SIGINT.
  bool cancel_on_sigint = false;
};

class Pool {
 public:
  using Options = PoolOptions;

  // Pool::Create(options)
  //
  // Starts options.processes workers (CpuCount() by default) under the start method, and the
  // pool's own thread. Errors: the first worker that could not start (its status, naming the
  // start method), RESOURCE_EXHAUSTED for descriptors or memory. Create fork Pools before
  // starting threads (see README); spawn and forkserver need mproc::Init in main.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Pool>> Create(Options options = {}) {
    return CreateWith(options, pool_internal::CoreOptions());
  }
  // With an initializer: a function pointer (or captureless lambda) and its arguments, run in
  // each worker before its first task; under the fork start method, any callable.
  template <typename F, typename... A>
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Pool>> Create(Options options,
                                                                    F initializer, A&&... args) {
    pool_internal::CoreOptions core;
    MPROC_RETURN_IF_ERROR(
        pool_internal::SetInitializer(core, std::move(initializer), std::forward<A>(args)...));
    return CreateWith(options, std::move(core));
  }

  // Terminates the workers (as Terminate) and joins them. From a callback running on the pool
  // thread, it cannot wait for that thread: the pool terminates once the callback returns, and
  // the thread frees it (pool_internal::CoreDeleter); AsyncResults still held then fail
  // ABORTED.
  ~Pool() = default;

  int processes() const { return core_->processes(); }

  // Pool::ApplyAsync(fn, args...)
  //
  // Runs fn(args...) in a worker; returns at once. `fn` is a function pointer or a captureless
  // lambda (found in the worker by code reference), its arguments and result types with a
  // Codec. The AsyncResult holds the value, or: ABORTED with a RemoteError when fn threw,
  // ABORTED naming the pid and signal when its worker died holding it, FAILED_PRECONDITION
  // when the pool was closed or terminated before. Thread-safe: any
  // thread may submit; tasks run in submission order per worker, and a worker holds up to
  // four queued.
  template <typename F, typename... A>
  AsyncResult<pool_internal::TaskResult<F>> ApplyAsync(F fn, A&&... args) {
    const pool_internal::TaskFn<F> f = pool_internal::AsFunctionPointer(fn);
    using Traits = pool_internal::TaskTraits<F>;
    using R = pool_internal::TaskResult<F>;
    AsyncResult<R> result;
    absl::StatusOr<uint64_t> id =
        pool_internal::SubmitCall<Traits>(*core_, f, result, std::forward<A>(args)...);
    if (!id.ok()) result.Set(id.status());
    return result;
  }
  // ApplyAsync with CPython's callback / error_callback (run on the pool thread).
  template <typename R, typename F, typename... A>
  AsyncResult<R> ApplyAsyncWithCallbacks(Callbacks<R> cbs, F fn, A&&... args) {
    AsyncResult<R> result = ApplyAsync(fn, std::forward<A>(args)...);
    InstallCallbacks<R>(result, cbs);
    return result;
  }
  template <typename R, typename F, typename T>
  AsyncResult<std::vector<R>> MapAsyncWithCallbacks(Callbacks<std::vector<R>> cbs, F fn,
                                                    const std::vector<T>& items,
                                                    size_t chunksize = 0) {
    AsyncResult<std::vector<R>> result = MapAsync(fn, items, chunksize);
    InstallCallbacks<std::vector<R>>(result, cbs);
    return result;
  }
  // Pool::Apply(fn, args...): ApplyAsync and wait for the outcome.
  template <typename F, typename... A>
  [[nodiscard]] absl::StatusOr<pool_internal::TaskResult<F>> Apply(F fn, A&&... args) {
    return ApplyAsync(fn, std::forward<A>(args)...).Get();
  }

  template <typename F, typename T>
  AsyncResult<std::vector<pool_internal::TaskResult<F>>> MapAsync(F fn, const std::vector<T>& items,
                                                                  size_t chunksize = 0,
                                                                  Progress progress = nullptr) {
    return StarMapAsyncImpl<false>(fn, items, chunksize, std::move(progress));
  }
  // Pool::Map(fn, items, chunksize, progress)
  //
  // fn over `items` in chunks of `chunksize` (0: CPython's default, items / (4 * processes)
  // rounded up), results in input order. The whole job runs even when an item fails; the
  // error returned is the first failed item's in input order (as ApplyAsync's). Blocks until
  // every chunk is back. MapAsync returns at once.
  template <typename F, typename T>
  [[nodiscard]] absl::StatusOr<std::vector<pool_internal::TaskResult<F>>> Map(
      F fn, const std::vector<T>& items, size_t chunksize = 0, Progress progress = nullptr) {
    return MapAsync(fn, items, chunksize, std::move(progress)).Get();
  }
  // pool->Map(Square, {1, 2, 3}): a braced list of items.
  template <typename F, typename T>
  AsyncResult<std::vector<pool_internal::TaskResult<F>>> MapAsync(F fn,
                                                                  std::initializer_list<T> items,
                                                                  size_t chunksize = 0,
                                                                  Progress progress = nullptr) {
    return MapAsync(fn, std::vector<T>(items), chunksize, std::move(progress));
  }
  template <typename F, typename T>
  [[nodiscard]] absl::StatusOr<std::vector<pool_internal::TaskResult<F>>> Map(F fn,
                                                                std::initializer_list<T> items,
                                                                size_t chunksize = 0,
                                                                Progress progress = nullptr) {
    return Map(fn, std::vector<T>(items), chunksize, std::move(progress));
  }
  template <typename F, typename Tuple>
  AsyncResult<std::vector<pool_internal::TaskResult<F>>> StarMapAsync(
      F fn, const std::vector<Tuple>& items, size_t chunksize = 0, Progress progress = nullptr) {
    return StarMapAsyncImpl<true>(fn, items, chunksize, std::move(progress));
  }
  template <typename F, typename Tuple>
  [[nodiscard]] absl::StatusOr<std::vector<pool_internal::TaskResult<F>>> StarMap(
      F fn, const std::vector<Tuple>& items, size_t chunksize = 0, Progress progress = nullptr) {
    return StarMapAsync(fn, items, chunksize, std::move(progress)).Get();
  }

  // Pool::IMap(fn, items, chunksize, progress)
  //
  // fn over `items`, results one by one in input order as they come (ResultIterator: Next or a
  // range-for), each its own StatusOr: a failed item does not stop the others. IMapUnordered
  // yields them in completion order. Returns at once.
  template <typename F, typename T>
  ResultIterator<pool_internal::TaskResult<F>> IMap(F fn, const std::vector<T>& items,
                                                    size_t chunksize = 1,
                                                    Progress progress = nullptr) {
    return IMapImpl(fn, items, chunksize, /*ordered=*/true, std::move(progress));
  }
  template <typename F, typename T>
  ResultIterator<pool_internal::TaskResult<F>> IMapUnordered(F fn, const std::vector<T>& items,
                                                             size_t chunksize = 1,
                                                             Progress progress = nullptr) {
    return IMapImpl(fn, items, chunksize, /*ordered=*/false, std::move(progress));
  }
  // Lazy input: `next` yields items until std::nullopt. At most buffersize chunks are submitted
  // and not yet taken (CPython 3.14's Executor.map buffersize), so memory is bounded. Progress
  // reports a total of 0 (unknown).
  template <typename F, typename T>
  ResultIterator<pool_internal::TaskResult<F>> IMap(F fn, std::function<std::optional<T>()> next,
                                                    size_t chunksize, size_t buffersize,
                                                    Progress progress = nullptr) {
    return IMapLazy(fn, std::move(next), chunksize, buffersize, /*ordered=*/true,
                    std::move(progress), 0);
  }
  template <typename F, typename T>
  ResultIterator<pool_internal::TaskResult<F>> IMapUnordered(
      F fn, std::function<std::optional<T>()> next, size_t chunksize, size_t buffersize,
      Progress progress = nullptr) {
    return IMapLazy(fn, std::move(next), chunksize, buffersize, /*ordered=*/false,
                    std::move(progress), 0);
  }

  // Pool::Close(): no new tasks (FAILED_PRECONDITION from then on); the workers finish what
  // was submitted and exit. Pool::Terminate(): the workers are ended at once (SIGTERM, SIGKILL
  // 2 s later for one that ignores it) and unfinished tasks fail ABORTED. Pool::Join(): waits
  // for the workers to exit, after Close or Terminate (FAILED_PRECONDITION before either).
  // The destructor terminates and joins.
  absl::Status Close() { return core_->Close(); }
  absl::Status Terminate() { return core_->Terminate(); }
  [[nodiscard]] absl::Status Join() { return core_->Join(); }
  std::vector<pid_t> WorkerPids() { return core_->WorkerPids(); }

  // CPython's automatic chunksize for `n` items.
  size_t AutoChunksize(size_t n) const { return pool_internal::AutoChunksize(n, processes()); }

 private:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Pool>> CreateWith(const Options& options,
                                                          pool_internal::CoreOptions core) {
    core.processes = options.processes;
    core.start_method = options.start_method;
    core.maxtasksperchild = options.maxtasksperchild;
    core.cancel_on_sigint = options.cancel_on_sigint;
    absl::StatusOr<pool_internal::CorePtr> c =
        pool_internal::PoolCore::Create(std::move(core));
    if (!c.ok()) return c.status();
    return std::unique_ptr<Pool>(new Pool(*std::move(c)));
  }
  explicit Pool(pool_internal::CorePtr core) : core_(std::move(core)) {}

  template <typename T>
  static void InstallCallbacks(const AsyncResult<T>& r, const Callbacks<T>& cbs) {
    r.OnReady([cbs](const absl::StatusOr<T>& v) {
      if (v.ok()) {
        if (cbs.on_success) cbs.on_success(*v);
      } else if (cbs.on_error) {
        cbs.on_error(v.status());
      }
    });
  }

  template <bool kStar, typename F, typename T>
  AsyncResult<std::vector<pool_internal::TaskResult<F>>> StarMapAsyncImpl(
      F fn, const std::vector<T>& items, size_t chunksize, Progress progress) {
    const pool_internal::TaskFn<F> f = pool_internal::AsFunctionPointer(fn);
    using Traits = pool_internal::TaskTraits<F>;
    using R = pool_internal::TaskResult<F>;
    AsyncResult<std::vector<R>> result;
    if (chunksize == 0) chunksize = AutoChunksize(items.size());
    // Results land in place, chunk by chunk (disjoint ranges of a pre-sized vector); the
    // first failure in input order is kept.
    struct Job {
      explicit Job(size_t chunks) : remaining_chunks(chunks) {}
      Mutex mu;
      // Not annotated: each chunk's callback fills its own range without the lock, and the
      // last one reads the whole.
      std::vector<pool_internal::Slot<R>> values;
      // Written under mu; not annotated: the last chunk's callback reads them without it,
      // after every other chunk's callback has written them (ordered by mu).
      size_t first_error = SIZE_MAX;
      absl::Status error;
      size_t remaining_chunks ABSL_GUARDED_BY(mu);
      size_t done ABSL_GUARDED_BY(mu) = 0;
      Progress progress;
    };
    const size_t chunks = (items.size() + chunksize - 1) / chunksize;
    auto job = std::make_shared<Job>(chunks);
    job->progress = std::move(progress);
    job->values.resize(items.size());
    if (chunks == 0) {
      result.Set(std::vector<R>());
      return result;
    }
    // Small chunks go to the pool in batches: one lock and one wake-up per batch, not per
    // chunk (the pool thread takes the same lock to hand tasks out). A batch leaves once it
    // holds 64 chunks or 16 KiB, so big chunks leave one by one and workers start at once.
    constexpr size_t kBatch = 64;
    constexpr size_t kBatchBytes = 16 << 10;
    size_t batch_bytes = 0;
    std::vector<pool_internal::PoolCore::Submission> batch;
    batch.reserve(std::min(chunks, kBatch));
    for (size_t c = 0; c < chunks; ++c) {
      size_t begin = c * chunksize;
      size_t end = std::min(items.size(), begin + chunksize);
      auto [chunk_task, keep] = pool_internal::EncodeChunk<Traits, kStar>(f, items, begin, end);
      batch.push_back({std::move(chunk_task),
          [job, result, begin, end](absl::Status st, std::span<const std::byte> out, std::vector<UniqueFd> fds) {
            size_t first_bad;
            absl::Status bad;
            pool_internal::DecodeChunkInto<typename Traits::Result>(
                st, out, std::move(fds), end - begin, job->values.data() + begin, &first_bad,
                &bad);
            bool last;
            size_t done;
            {
              MutexLock lock(&job->mu);
              if (first_bad != SIZE_MAX && begin + first_bad < job->first_error) {
                job->first_error = begin + first_bad;
                job->error = std::move(bad);
              }
              last = --job->remaining_chunks == 0;
              done = job->done += end - begin;
            }
            if (job->progress) job->progress(done, job->values.size());
            if (!last) return;
            // Whole job done: the first error in input order, else every value.
            if (job->first_error != SIZE_MAX) {
              result.Set(job->error);
            } else {
              result.Set(pool_internal::FromSlots<R>(std::move(job->values)));
            }
          },
          keep});
      batch_bytes += batch.back().task.size();
      if (batch.size() < kBatch && batch_bytes < kBatchBytes && c + 1 < chunks) continue;
      absl::Status s = core_->SubmitMany(batch);
      batch.clear();
      batch_bytes = 0;
      if (!s.ok()) {
        result.Set(s);  // tasks already queued still run; their results are dropped
        return result;
      }
    }
    return result;
  }

  template <typename F, typename T>
  ResultIterator<pool_internal::TaskResult<F>> IMapImpl(F fn, const std::vector<T>& items,
                                                        size_t chunksize, bool ordered,
                Progress progress) {
    auto next = [&items, i = size_t{0}]() mutable -> std::optional<T> {
      if (i == items.size()) return std::nullopt;
      return items[i++];
    };
    // The whole vector is submitted at once (it is in memory already); `items` is only read
    // during this call.
    return IMapLazy(fn, std::function<std::optional<T>()>(next), chunksize, SIZE_MAX, ordered,
                    std::move(progress), items.size());
  }

  template <typename F, typename T>
  ResultIterator<pool_internal::TaskResult<F>> IMapLazy(F fn, std::function<std::optional<T>()> next,
                                                        size_t chunksize, size_t buffersize,
                                                        bool ordered, Progress progress,
                                                        size_t total) {
    const pool_internal::TaskFn<F> f = pool_internal::AsFunctionPointer(fn);
    using Traits = pool_internal::TaskTraits<F>;
    using R = pool_internal::TaskResult<F>;
    ResultIterator<R> it;
    auto sh = it.s_;
    sh->ordered = ordered;
    if (chunksize == 0) chunksize = 1;
    sh->limit = buffersize == SIZE_MAX ? SIZE_MAX : std::max<size_t>(1, buffersize) * chunksize;
    // Through the link, not the core: the iterator may outlive the Pool (dropped meanwhile, or
    // from one of its own callbacks), and then a chunk's submit fails instead of reaching it.
    std::shared_ptr<pool_internal::EngineLink> link = core_->link();
    std::weak_ptr<typename ResultIterator<R>::Shared> weak = sh;
    sh->submit_chunk = [link, f, next, chunksize, weak, progress, total]() mutable -> bool {
      auto sh = weak.lock();
      if (!sh) return false;
      std::vector<T> chunk;
      while (chunk.size() < chunksize) {
        std::optional<T> item = next();
        if (!item) break;
        chunk.push_back(std::move(*item));
      }
      size_t begin;
      bool exhausted;
      {
        MutexLock lock(&sh->mu);
        begin = sh->issued;
        sh->issued += chunk.size();
        if (chunk.size() < chunksize) sh->exhausted = true;
        if (sh->ordered) sh->window.resize(sh->issued - sh->base);
        // Only this function changes it, one feeder at a time (under feed_mu): still so at
        // the end of the call.
        exhausted = sh->exhausted;
      }
      if (chunk.empty()) {
        sh->cv.SignalAll();
        return false;
      }
      const size_t n = chunk.size();
      auto deliver = [weak, begin, n, progress, total](std::vector<absl::StatusOr<R>> got) {
        auto sh = weak.lock();
        if (!sh) return;
        size_t done;
        {
          MutexLock lock(&sh->mu);
          done = sh->done += n;
          for (size_t i = 0; i < n; ++i) {
            if (sh->ordered) {
              sh->window[begin + i - sh->base] = std::move(got[i]);
            } else {
              sh->arrived.push_back(std::move(got[i]));
            }
          }
        }
        if (progress) progress(done, total);
        sh->cv.SignalAll();
      };
      auto [chunk_task, keep] = pool_internal::EncodeChunk<Traits, false>(f, chunk, 0, n);
      absl::Status s =
          link->Submit(std::move(chunk_task),
                       [deliver, n](absl::Status st, std::span<const std::byte> out,
                                    std::vector<UniqueFd> fds) {
                         deliver(pool_internal::DecodeChunk<typename Traits::Result>(
                             st, out, std::move(fds), n));
                       },
                       keep)
              .status();
      if (!s.ok()) {
        deliver(std::vector<absl::StatusOr<R>>(n, s));
        MutexLock lock(&sh->mu);
        sh->exhausted = true;  // no more submissions
        return false;
      }
      return !exhausted;
    };
    it.Feed();
    return it;
  }

  pool_internal::CorePtr core_;
};

}  // namespace mproc

#endif  // MPROC_POOL_POOL_H_
