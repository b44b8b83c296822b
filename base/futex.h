// base/futex.h — the futex syscall, for words that may live in memory shared between
// processes.
//
// The default scope is kShared: a futex word in a MAP_SHARED/memfd mapping must be waited on
// and woken *without* FUTEX_PRIVATE_FLAG, or a waiter in one process never sees a wake from
// another (STYLE.md §7: Abseil and folly pass the private flag, right only for threads).
// kPrivate is for words that never leave one process; it is cheaper in the kernel.
//
// Timed waits use FUTEX_WAIT_BITSET with an absolute CLOCK_MONOTONIC deadline, so retries
// after spurious wake-ups never stretch the timeout.
//
//   std::atomic<uint32_t>& w = ...;   // in shared memory
//   while (w.load(std::memory_order_acquire) == 0) {
//     if (FutexWait(&w, 0, deadline) == FutexResult::kTimedOut) return false;
//   }
//   ...
//   w.store(1, std::memory_order_release);
//   FutexWake(&w, 1);
//
// Async-signal-safety: FutexWake is a single syscall and is async-signal-safe.

#ifndef MPROC_BASE_FUTEX_H_
#define MPROC_BASE_FUTEX_H_

#include <atomic>
#include <cstdint>

#include "base/deadline.h"

namespace mproc {

enum class FutexScope { kShared, kPrivate };

enum class FutexResult {
  kAwoken,        // woken by FutexWake (or spuriously: callers re-check their condition)
  kValueChanged,  // *word != expected on entry (EAGAIN)
  kTimedOut,      // the deadline passed
  kInterrupted,   // a signal handler ran (EINTR)
};

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t),
              "a futex word must be exactly 32 bits");

// Blocks while *word == expected, until woken, `deadline` passes, or a signal arrives.
FutexResult FutexWait(const std::atomic<uint32_t>* word, uint32_t expected,
                      const Deadline& deadline = Deadline::Infinite(),
                      FutexScope scope = FutexScope::kShared);

// Wakes up to `count` waiters (INT32_MAX: all). Returns how many were woken, or -errno.
int FutexWake(const std::atomic<uint32_t>* word, int count,
              FutexScope scope = FutexScope::kShared) noexcept;

// A scoped lock on a three-state futex word (0 free, 1 held, 2 held with waiters: Drepper's
// "Futexes Are Tricky" mutex 2), for short internal critical sections over state in shared
// memory (an arena's free list, a barrier's counters). Shared scope; no owner bookkeeping —
// a process killed inside the section leaves the word held. User-facing locks are sync/'s.
class FutexMutexGuard {
 public:
  explicit FutexMutexGuard(std::atomic<uint32_t>* word) : w_(word) {
    uint32_t z = 0;
    if (w_->compare_exchange_strong(z, 1, std::memory_order_acquire)) return;
    while (w_->exchange(2, std::memory_order_acquire) != 0) FutexWait(w_, 2);
  }
  ~FutexMutexGuard() { Unlock(); }
  FutexMutexGuard(const FutexMutexGuard&) = delete;
  FutexMutexGuard& operator=(const FutexMutexGuard&) = delete;

  // Releases early; the destructor then does nothing.
  void Unlock() {
    if (w_ == nullptr) return;
    if (w_->exchange(0, std::memory_order_release) == 2) FutexWake(w_, 1);
    w_ = nullptr;
  }

 private:
  std::atomic<uint32_t>* w_;
};

}  // namespace mproc

#endif  // MPROC_BASE_FUTEX_H_
