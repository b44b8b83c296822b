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

}  // namespace mproc

#endif  // MPROC_BASE_FUTEX_H_
