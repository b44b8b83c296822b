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
  uint32_t bound = 0;                          // 0: unbounded
};
}  // namespace sync_internal

class Semaphore {
 public:
  // An empty handle, to decode into; any other use is undefined.
  Semaphore() = default;

  static absl::StatusOr<Semaphore> Create(uint32_t value = 1);

  bool Acquire(absl::Duration timeout = absl::InfiniteDuration());
  bool TryAcquire() { return Acquire(absl::ZeroDuration()); }
  // Adds `n` units and wakes waiters. Async-signal-safe. Always OK for a Semaphore;
  // FAILED_PRECONDITION for a BoundedSemaphore past its bound (nothing is added then).
  absl::Status Release(uint32_t n = 1);
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

  static absl::StatusOr<BoundedSemaphore> Create(uint32_t value = 1);

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
