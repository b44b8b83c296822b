#include "sync/condition.h"

#include <algorithm>
#include <climits>

#include "base/deadline.h"
#include "base/futex.h"
#include "base/owner.h"

namespace mproc {

using sync_internal::ConditionState;

absl::StatusOr<Condition> Condition::Create() {
  absl::StatusOr<RLock> l = RLock::Create();
  if (!l.ok()) return l.status();
  return Create(*std::move(l));
}

absl::StatusOr<Condition> Condition::Create(Lock lock) {
  auto r = sync_internal::CreateShared<ConditionState>("mproc-condition");
  if (!r.ok()) return r.status();
  Condition c(r->first, r->second);
  c.lock_ = std::move(lock);
  return c;
}

absl::StatusOr<Condition> Condition::Create(RLock lock) {
  auto r = sync_internal::CreateShared<ConditionState>("mproc-condition");
  if (!r.ok()) return r.status();
  Condition c(r->first, r->second);
  c.rlock_ = std::move(lock);
  return c;
}

bool Condition::HeldByCaller() const {
  if (rlock_) return rlock_->HeldByMe();
  // A Lock has no thread owner in CPython; mproc's word records the acquirer.
  return lock_->HolderTid() == CurrentTid();
}

absl::StatusOr<bool> Condition::Wait(absl::Duration timeout) {
  if (!HeldByCaller()) {
    return absl::FailedPreconditionError("must acquire() condition before using wait()");
  }
  const Deadline deadline = Deadline::After(timeout);
  // Under the lock: take a free slot.
  sync_internal::ConditionSlot* slot = nullptr;
  for (auto& sl : s_->slots) {
    if (sl.state.load(std::memory_order_relaxed) == 0) {
      slot = &sl;
      break;
    }
  }
  if (slot == nullptr) {
    // Every slot taken: reclaim one whose waiter died in Wait (killed, it never freed it).
    // Under the lock, so no live waiter frees or takes a slot meanwhile.
    for (auto& sl : s_->slots) {
      if (sl.state.load(std::memory_order_relaxed) != 0 && !TaskAlive(sl.tid)) {
        slot = &sl;
        break;
      }
    }
  }
  if (slot == nullptr) {
    return absl::ResourceExhaustedError("too many waiters on one Condition (at most 250)");
  }
  slot->order = s_->next_order++;
  slot->tid = CurrentTid();
  slot->state.store(1, std::memory_order_relaxed);
  uint32_t depth = 0;
  if (rlock_) {
    depth = rlock_->ReleaseAll();
  } else {
    lock_->Release().IgnoreError();
  }
  while (slot->state.load(std::memory_order_acquire) == 1) {
    if (FutexWait(&slot->state, 1, deadline) == FutexResult::kTimedOut) break;
  }
  // Without a deadline the lock is always taken again (from a holder that died, perhaps:
  // the waiter holds it all the same, as CPython's Condition.wait returns holding it).
  if (rlock_) {
    (void)rlock_->AcquireRestore(depth, Deadline::Infinite());
  } else {
    (void)lock_->Acquire();
  }
  // Under the lock again: notified or not, the slot is ours to free.
  bool notified = slot->state.load(std::memory_order_acquire) == 2;
  slot->state.store(0, std::memory_order_relaxed);
  return notified;
}

absl::StatusOr<bool> Condition::WaitFor(const std::function<bool()>& pred, absl::Duration timeout) {
  const Deadline deadline = Deadline::After(timeout);
  bool result = pred();
  while (!result) {
    if (deadline.Expired()) break;
    absl::StatusOr<bool> w = Wait(deadline.Remaining());
    if (!w.ok()) return w.status();
    result = pred();
  }
  return result;
}

absl::Status Condition::Notify(uint32_t n) {
  if (!HeldByCaller()) {
    return absl::FailedPreconditionError("cannot notify on un-acquired lock");
  }
  // Wake the n oldest waiting slots (registration order, wrapping-safe comparison).
  const uint32_t now = s_->next_order;
  for (uint32_t woken = 0; woken < n; ++woken) {
    sync_internal::ConditionSlot* oldest = nullptr;
    uint32_t best_age = 0;
    for (auto& sl : s_->slots) {
      if (sl.state.load(std::memory_order_relaxed) != 1) continue;
      uint32_t age = now - sl.order;
      if (oldest == nullptr || age > best_age) {
        oldest = &sl;
        best_age = age;
      }
    }
    if (oldest == nullptr) break;
    oldest->state.store(2, std::memory_order_release);
    FutexWake(&oldest->state, 1);
  }
  return absl::OkStatus();
}

absl::Status Condition::NotifyAll() { return Notify(UINT32_MAX); }

}  // namespace mproc
