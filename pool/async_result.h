// pool/async_result.h — AsyncResult: the result of an asynchronous call (CPython's
// AsyncResult), set once by an engine's thread and read by any number of handles; the state
// behind Pool's ApplyAsync/MapAsync and every executor's Future.
//
// Thread-safety: every method may be called from any thread, on any copy.
#ifndef MPROC_POOL_ASYNC_RESULT_H_
#define MPROC_POOL_ASYNC_RESULT_H_

#include <atomic>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/deadline.h"
#include "base/mutex.h"
#include "base/spin.h"

namespace mproc {

namespace pool_internal {
// Runs a user callback on a thread that must go on (the pool thread, or a caller's): an
// exception it throws is reported on stderr, as CPython logs "exception calling callback",
// and goes no further.
template <typename F>
void RunCallback(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: a result callback threw: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "mproc: a result callback threw an exception of an unknown type\n");
  }
}

// Done callbacks set aside instead of run: while a thread points this at a list (an
// MpiExecutor's waiter running the engine's turns, mpi/internal/engine.cc), AsyncResult::Set
// on that thread moves its AfterReady functions and waiters there, for the engine's own
// thread to run. So callbacks never run on a thread waiting in Result (which may hold the
// locks they take), as concurrent.futures never runs them there.
using DeferredCallbacks = std::vector<std::function<void()>>;
extern thread_local DeferredCallbacks* t_defer_callbacks;
}  // namespace pool_internal

// The result of an asynchronous call (CPython's AsyncResult).
template <typename T>
class AsyncResult {
 public:
  AsyncResult() : s_(std::make_shared<Shared>()) {}

  // AsyncResult::Get(timeout)
  //
  // The value, or the task's error; DEADLINE_EXCEEDED when not ready by the timeout. May be
  // called again, by any copy of this handle: each call returns the same stored result, by
  // reference (a Map's results are not copied per call; copy it, `auto v = r.Get();`, to
  // keep it past the last handle). Blocks up to `timeout`; thread-safe.
  [[nodiscard]] const absl::StatusOr<T>& Get(
      absl::Duration timeout = absl::InfiniteDuration()) const& {
    if (!Wait(timeout)) {
      static const auto* const late =
          new absl::StatusOr<T>(absl::DeadlineExceededError("AsyncResult not ready in time"));
      return *late;
    }
    // Set once, before Ready, and never changed after (but by the && overload below, on the
    // last handle): read without the lock once Wait saw it ready.
    return *s_->value;
  }
  // The same on a handle about to go (a temporary: `pool.MapAsync(...).Get()`): when no other
  // copy of it is left, the value is moved out instead of copied (a whole Map's results).
  [[nodiscard]] absl::StatusOr<T> Get(absl::Duration timeout = absl::InfiniteDuration()) && {
    if (!Wait(timeout)) return absl::DeadlineExceededError("AsyncResult not ready in time");
    MutexLock lock(&s_->mu);
    if (s_.use_count() == 1) return std::move(*s_->value);
    return *s_->value;
  }
  // Only the outcome: OK, the task's error, or DEADLINE_EXCEEDED (the value is not copied).
  absl::Status GetStatus(absl::Duration timeout = absl::InfiniteDuration()) const {
    if (!Wait(timeout)) return absl::DeadlineExceededError("AsyncResult not ready in time");
    MutexLock lock(&s_->mu);
    return s_->value->status();
  }
  // True once ready (waits up to `timeout`).
  bool Wait(absl::Duration timeout = absl::InfiniteDuration()) const {
    // A result usually comes within microseconds of being asked for: look briefly (yielding)
    // before sleeping on the condition variable — a cross-CPU wake-up costs 45-150 us here.
    if (!s_->ready_hint.load(std::memory_order_acquire) && timeout > absl::ZeroDuration()) {
      SpinUntil([&] { return s_->ready_hint.load(std::memory_order_acquire); },
                Deadline::After(timeout));
    }
    MutexLock lock(&s_->mu);
    // Forever when the timeout is infinite; at once (one look) when it is negative.
    return s_->cv.WaitFor(lock, timeout,
                          [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) { return s_->ready; });
  }
  bool Ready() const {
    MutexLock lock(&s_->mu);
    return s_->ready;
  }
  // Ready, without the mutex (for polling loops).
  bool ReadyHint() const { return s_->ready_hint.load(std::memory_order_acquire); }
  // FAILED_PRECONDITION before Ready.
  [[nodiscard]] absl::StatusOr<bool> Successful() const {
    MutexLock lock(&s_->mu);
    if (!s_->ready) return absl::FailedPreconditionError("AsyncResult is not ready");
    return s_->value->ok();
  }

  // For the pool: sets the result once, runs the callback (on the calling thread), then
  // wakes waiters — so a callback's effects are visible once Get returns, as in CPython —
  // and then runs the AfterReady functions (or sets them aside: t_defer_callbacks). Each runs
  // once and is dropped. An exception from one is reported on stderr and goes no further (it
  // must not end the pool thread).
  void Set(absl::StatusOr<T> v) const {
    std::function<void(const absl::StatusOr<T>&)> cb;
    {
      MutexLock lock(&s_->mu);
      if (s_->value) return;
      s_->value = std::move(v);
      cb = std::move(s_->callback);
      s_->callback = nullptr;
    }
    if (cb) pool_internal::RunCallback([&] { cb(*s_->value); });
    std::vector<std::function<void()>> after;
    std::vector<std::pair<uint64_t, std::function<void()>>> waiters;
    {
      MutexLock lock(&s_->mu);
      s_->ready = true;
      after.swap(s_->after);
      waiters.swap(s_->waiters);
    }
    s_->ready_hint.store(true, std::memory_order_release);
    s_->cv.SignalAll();
    if (pool_internal::DeferredCallbacks* d = pool_internal::t_defer_callbacks; d != nullptr) {
      for (auto& f : after) d->push_back(std::move(f));
      for (auto& [ticket, f] : waiters) d->push_back(std::move(f));
      return;
    }
    for (auto& f : after) pool_internal::RunCallback(f);
    for (auto& [ticket, f] : waiters) pool_internal::RunCallback(f);
  }
  // Arranges for `f` to run once the result is Ready, on the thread that sets it, and returns
  // a ticket for RemoveWaiter; returns 0 (and never runs f) when it is Ready already. Unlike
  // AfterReady, a waiter can be taken back: concurrent.futures' wait and as_completed put one
  // on each future they watch and take them all back when they return.
  uint64_t AddWaiter(std::function<void()> f) const {
    MutexLock lock(&s_->mu);
    if (s_->ready) return 0;
    const uint64_t ticket = s_->next_waiter++;
    s_->waiters.emplace_back(ticket, std::move(f));
    return ticket;
  }
  // Drops waiter `ticket` unless it has been taken to run (it may be running on another
  // thread as this returns: what it uses must outlive that, e.g. by a shared_ptr it holds).
  void RemoveWaiter(uint64_t ticket) const {
    MutexLock lock(&s_->mu);
    std::erase_if(s_->waiters, [ticket](const auto& w) { return w.first == ticket; });
  }
  // Runs `f` once the result is set and Ready (so Get works inside it): at once, here, if it
  // is; else on the thread that sets it, after the callback and after waking waiters. Any
  // number, in the order added (concurrent.futures' add_done_callback).
  void AfterReady(std::function<void()> f) const {
    {
      MutexLock lock(&s_->mu);
      if (!s_->ready) {
        s_->after.push_back(std::move(f));
        return;
      }
    }
    pool_internal::RunCallback(f);
  }
  // Runs `cb` once the result is set (at once, here, if it already is).
  void OnReady(std::function<void(const absl::StatusOr<T>&)> cb) const {
    {
      MutexLock lock(&s_->mu);
      if (!s_->value) {
        s_->callback = std::move(cb);
        return;
      }
    }
    cb(*s_->value);
  }

 private:
  struct Shared {
    Mutex mu;
    CondVar cv;
    // Set once, under mu; not annotated: from then on it is only read, and Set (whose thread
    // set it) and OnReady (after seeing it set under mu) read it without the lock, to run a
    // callback outside it.
    std::optional<absl::StatusOr<T>> value;
    bool ready ABSL_GUARDED_BY(mu) = false;  // value set and callback run
    std::atomic<bool> ready_hint{false};  // `ready`, readable without the mutex (spinning)
    std::function<void(const absl::StatusOr<T>&)> callback ABSL_GUARDED_BY(mu);
    std::vector<std::function<void()>> after ABSL_GUARDED_BY(mu);  // AfterReady's, until they run
    std::vector<std::pair<uint64_t, std::function<void()>>> waiters ABSL_GUARDED_BY(mu);
    uint64_t next_waiter ABSL_GUARDED_BY(mu) = 1;
  };
  std::shared_ptr<Shared> s_;
};

}  // namespace mproc

#endif  // MPROC_POOL_ASYNC_RESULT_H_
