// sync/semaphore.h — Semaphore and BoundedSemaphore across processes, on a shared futex.
//
//   MPROC_ASSIGN_OR_RETURN(Semaphore sem, Semaphore::Create(2));
//   if (sem.Acquire(absl::Seconds(1))) { ...; sem.Release(); }
//
// CPython's semantics (SYNC-7..9): Acquire returns whether it got a unit (false after the
// timeout; a zero timeout is one attempt); a Semaphore may be released beyond its initial
// value; a BoundedSemaphore refuses that with FAILED_PRECONDITION ("released too many times").
// GetValue() is the current count.
//
// Release is async-signal-safe (atomics and one futex syscall): it may be called from a signal
// handler. A process killed while holding units does not give them back (as with CPython).
// Thread-safety: handles are thread-safe and cheap to copy.

#ifndef MPROC_SYNC_SEMAPHORE_H_
#define MPROC_SYNC_SEMAPHORE_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sync/internal/shared_state.h"

namespace mproc {

namespace sync_internal {
struct alignas(64) SemaphoreState {
  std::atomic<uint32_t> value{0};
  std::atomic<uint32_t> waiters{0};
  std::atomic<int32_t> last_release_cpu{-1};  // where the releasing side last ran (spin hint)
  uint32_t bound = 0;    // a BoundedSemaphore's (0 is a bound too: no Release fits)
  uint32_t bounded = 0;  // 1: a BoundedSemaphore
};
}  // namespace sync_internal

// The largest count a Semaphore holds (CPython's SEM_VALUE_MAX on Linux).
inline constexpr uint32_t kSemaphoreMax = 0x7fffffff;

class Semaphore {
 public:
  // An empty handle, to decode into; any other use is undefined.
  Semaphore() = default;

  // Semaphore::Create(value)
  //
  // A new semaphore holding `value` units, placed in this process's shared arena as a Lock
  // is, and failing as Lock::Create (RESOURCE_EXHAUSTED, or a failed call's errno status).
  // Thread-safe.
  [[nodiscard]] static absl::StatusOr<Semaphore> Create(uint32_t value = 1);

  // Semaphore::Acquire(timeout)
  //
  // Takes one unit; returns false when `timeout` passes first (a zero or negative timeout is
  // one attempt, and never blocks). Blocks while the count is 0: spins briefly when the last
  // releaser ran on another CPU, then sleeps on the futex; signals do not end the wait. No
  // error and no fairness order. A process killed while waiting leaves nothing held (only a
  // waiter count that costs releasers a futex wake). Thread-safe and process-safe.
  bool Acquire(absl::Duration timeout = absl::InfiniteDuration());
  // Semaphore::TryAcquire(): Acquire(zero): one attempt, never blocks.
  bool TryAcquire() { return Acquire(absl::ZeroDuration()); }
  // Semaphore::Release(n)
  //
  // Adds `n` units and wakes up to `n` sleeping waiters. Never blocks; async-signal-safe.
  // FAILED_PRECONDITION, nothing added, for a BoundedSemaphore past its bound (a bound of 0
  // included), and for any Semaphore whose count would pass kSemaphoreMax (CPython's
  // SEM_VALUE_MAX, "released too many times"). Thread-safe and process-safe.
  absl::Status Release(uint32_t n = 1);
  // The current count: a snapshot, possibly stale at once. Never blocks.
  uint32_t GetValue() const { return s_->value.load(std::memory_order_relaxed); }

 protected:
  template <typename H, typename S>
  friend struct sync_internal::SimpleHandleCodec;
  Semaphore(std::shared_ptr<sync_internal::Region> r, sync_internal::SemaphoreState* s)
      : region_(std::move(r)), s_(s) {}
  std::shared_ptr<sync_internal::Region> region_;
  sync_internal::SemaphoreState* s_ = nullptr;
};

class BoundedSemaphore : public Semaphore {
 public:
  // An empty handle, to decode into; any other use is undefined.
  BoundedSemaphore() = default;

  // BoundedSemaphore::Create(value)
  //
  // A new semaphore holding `value` units, which Release may not exceed. Places and fails as
  // Semaphore::Create. Caution: value 0 records no bound at all (0 means unbounded inside),
  // so that BoundedSemaphore's Release never fails.
  [[nodiscard]] static absl::StatusOr<BoundedSemaphore> Create(uint32_t value = 1);

 private:
  template <typename H, typename S>
  friend struct sync_internal::SimpleHandleCodec;
  using Semaphore::Semaphore;
};

template <>
struct Codec<Semaphore>
    : sync_internal::SimpleHandleCodec<Semaphore, sync_internal::SemaphoreState> {};
template <>
struct Codec<BoundedSemaphore>
    : sync_internal::SimpleHandleCodec<BoundedSemaphore, sync_internal::SemaphoreState> {};

}  // namespace mproc

#endif  // MPROC_SYNC_SEMAPHORE_H_
