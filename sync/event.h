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
};
}  // namespace sync_internal

class Event {
 public:
  // An empty handle, to decode into; any other use is undefined.
  Event() = default;

  static absl::StatusOr<Event> Create();

  bool IsSet() const { return s_->flag.load(std::memory_order_acquire) != 0; }
  // Sets the flag and wakes all waiters. Async-signal-safe.
  void Set();
  void Clear() { s_->flag.store(0, std::memory_order_release); }
  // Blocks until the flag is set or `timeout` passes; returns the flag.
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
