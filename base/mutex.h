// base/mutex.h — the in-process mutex of the library, annotated for Clang's thread-safety
// analysis (absl/base/thread_annotations.h), with its scoped lock and condition variable.
//
// A Mutex is a std::mutex the analysis can see: members guarded by one are declared
// `ABSL_GUARDED_BY(mu_)`, functions that expect it held `ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_)`,
// and `tools/check_thread_safety.sh` (a CI stage) compiles every library with clang's
// -Wthread-safety as an error, so an access without the lock fails the build instead of
// racing. Nothing else changes: same size, same cost, same behaviour across fork (a fork
// child gets the mutex in the state the forking thread saw; mproc forks only from threads
// that hold none of its mutexes, or re-creates them in the child).
//
//   Mutex mu_;
//   int count_ ABSL_GUARDED_BY(mu_) = 0;
//   CondVar cv_;
//   ...
//   MutexLock lock(&mu_);
//   cv_.Wait(lock, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ > 0; });
//
// Thread-safety: Mutex and CondVar are thread-safe; a MutexLock belongs to one thread.
// Shared-memory locks (between processes) are sync/'s and base/owner.h's, not this.
#ifndef MPROC_BASE_MUTEX_H_
#define MPROC_BASE_MUTEX_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace mproc {

class ABSL_LOCKABLE Mutex {
 public:
  // Constant-initialised (as std::mutex): safe as a namespace-scope global.
  constexpr Mutex() noexcept = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  [[nodiscard]] bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // Tells the analysis the caller holds it (a callback the analysis cannot follow, such as a
  // condition variable's predicate). Checks nothing at run time.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  friend class MutexLock;
  std::mutex mu_;
};

// Holds a Mutex for its scope; Unlock() and Lock() release and retake it within the scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : lock_(mu->mu_) {}
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {}
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void Unlock() ABSL_UNLOCK_FUNCTION() { lock_.unlock(); }
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { lock_.lock(); }

 private:
  friend class CondVar;
  std::unique_lock<std::mutex> lock_;
};

// A condition variable for a Mutex held through a MutexLock. Predicates run with the mutex
// held; say so to the analysis with ABSL_EXCLUSIVE_LOCKS_REQUIRED on the lambda.
class CondVar {
 public:
  // Until woken (or spuriously).
  void Wait(MutexLock& lock) { cv_.wait(lock.lock_); }
  // Until `done()`.
  template <typename Done>
  void Wait(MutexLock& lock, Done done) {
    cv_.wait(lock.lock_, done);
  }
  // Until `done()` or `timeout` passes (an infinite one never does; a negative one already
  // has); returns done().
  template <typename Done>
  bool WaitFor(MutexLock& lock, absl::Duration timeout, Done done) {
    if (timeout == absl::InfiniteDuration()) {
      cv_.wait(lock.lock_, done);
      return true;
    }
    return cv_.wait_for(lock.lock_,
                        absl::ToChronoNanoseconds(std::max(timeout, absl::ZeroDuration())), done);
  }
  // Until woken or `until` (steady clock) passes.
  void WaitUntil(MutexLock& lock, std::chrono::steady_clock::time_point until) {
    cv_.wait_until(lock.lock_, until);
  }

  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace mproc

#endif  // MPROC_BASE_MUTEX_H_
