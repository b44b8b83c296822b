// sync/event.h — Event across processes: a flag that waiters block on until it is set.
//
//   MPROC_ASSIGN_OR_RETURN(Event ev, Event::Create());
//   // another process:  ev.Set();
//   if (!ev.Wait(absl::Seconds(5))) { /* timed out, flag still clear */ }
//
// CPython's semantics (SYNC-18): IsSet(); Set() wakes every waiter; Clear(); Wait(timeout)
// returns the flag (true once set, false after the timeout). Set is async-signal-safe.
// Waiters spin briefly before sleeping when the setter last ran on another CPU
// (sync/internal/spin.h), which turns a ~45 µs cross-CPU wake-up into a few µs hand-off.
// Thread-safety: handles are thread-safe and cheap to copy.

#ifndef MPROC_SYNC_EVENT_H_
#define MPROC_SYNC_EVENT_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sync/internal/shared_state.h"

namespace mproc {

namespace sync_internal {
struct alignas(64) EventState {
  std::atomic<uint32_t> flag{0};
  std::atomic<uint32_t> waiters{0};
  std::atomic<int32_t> setter_cpu{-1};
  // Bumped by every Set, after the flag: the futex word waiters sleep on. A waiter that saw
  // it change was present at a Set, and returns true even if a Clear came first.
  std::atomic<uint32_t> sets{0};
};
}  // namespace sync_internal

class Event {
 public:
  // An empty handle, to decode into; any other use is undefined.
  Event() = default;

  // Event::Create()
  //
  // A new Event, clear, placed in this process's shared arena as a Lock is, and failing as
  // Lock::Create (RESOURCE_EXHAUSTED, or a failed call's errno status). Thread-safe.
  [[nodiscard]] static absl::StatusOr<Event> Create();

  // The flag: a snapshot, possibly stale at once. Never blocks.
  bool IsSet() const { return s_->flag.load(std::memory_order_acquire) != 0; }
  // Event::Set()
  //
  // Sets the flag and wakes all sleeping waiters (a futex wake only when some wait). Never
  // blocks; no error; async-signal-safe. Thread-safe and process-safe.
  void Set();
  // Event::Clear(): clears the flag. Never blocks; thread-safe and process-safe.
  void Clear() { s_->flag.store(0, std::memory_order_release); }
  // Event::Wait(timeout)
  //
  // Blocks until the flag is set or `timeout` passes (zero or negative: just look); true when
  // it was set (false: the timeout passed with it clear). As CPython's, every waiter present
  // at a Set returns true, even when a Clear followed before it woke. Spins
  // briefly when the setter last ran on another CPU, then sleeps on the futex; signals do not
  // end the wait. No error. Thread-safe and process-safe (a waiter killed here leaves only a
  // waiter count, which costs Set a futex wake).
  bool Wait(absl::Duration timeout = absl::InfiniteDuration());

 private:
  template <typename H, typename S>
  friend struct sync_internal::SimpleHandleCodec;
  Event(std::shared_ptr<sync_internal::Region> r, sync_internal::EventState* s)
      : region_(std::move(r)), s_(s) {}
  std::shared_ptr<sync_internal::Region> region_;
  sync_internal::EventState* s_ = nullptr;
};

template <>
struct Codec<Event> : sync_internal::SimpleHandleCodec<Event, sync_internal::EventState> {};

}  // namespace mproc

#endif  // MPROC_SYNC_EVENT_H_
