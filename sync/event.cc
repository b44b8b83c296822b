#include "sync/event.h"

#include <climits>

#include "base/deadline.h"
#include "base/futex.h"
#include "sync/internal/spin.h"

namespace mproc {

absl::StatusOr<Event> Event::Create() {
  auto r = sync_internal::CreateShared<sync_internal::EventState>("mproc-event");
  if (!r.ok()) return r.status();
  return Event(r->first, r->second);
}

void Event::Set() {
  s_->setter_cpu.store(sync_internal::CurrentCpu(), std::memory_order_relaxed);
  s_->flag.store(1, std::memory_order_seq_cst);
  s_->sets.fetch_add(1, std::memory_order_seq_cst);
  if (s_->waiters.load(std::memory_order_seq_cst) > 0) FutexWake(&s_->sets, INT_MAX);
}

bool Event::Wait(absl::Duration timeout) {
  // The Sets seen before looking at the flag: a later one (even one a Clear undid before this
  // waiter woke) ends the wait with true.
  const uint32_t sets = s_->sets.load(std::memory_order_seq_cst);
  if (IsSet()) return true;
  if (timeout <= absl::ZeroDuration()) return false;
  return sync_internal::BlockUntil(
      &s_->sets, sets, &s_->waiters, s_->setter_cpu.load(std::memory_order_relaxed),
      Deadline::After(timeout), [&] {
        return s_->flag.load(std::memory_order_seq_cst) != 0 ||
               s_->sets.load(std::memory_order_seq_cst) != sets;
      });
}

}  // namespace mproc
