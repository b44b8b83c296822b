// sync/condition.h — Condition across processes, over a Lock or an RLock.
//
//   MPROC_ASSIGN_OR_RETURN(Condition cv, Condition::Create());   // its own RLock
//   { RLockGuard g(cv.rlock()); while (!Ready()) cv.Wait().IgnoreError(); }
//   { RLockGuard g(cv.rlock()); MakeReady(); cv.NotifyAll().IgnoreError(); }
//
// CPython's semantics (SYNC-10..17): Wait/WaitFor/Notify/NotifyAll need the lock held by the
// caller (else FAILED_PRECONDITION: "must acquire() condition before using wait()"); Wait
// releases the lock — every recursion level of an RLock — sleeps, and reacquires it (restoring
// the depth) before returning whether it was notified (false after the timeout). Notify(n)
// wakes exactly min(n, sleepers) waiters; NotifyAll wakes them all; with no waiters it does
// nothing. WaitFor(pred, timeout) returns the predicate's last value.
//
// How: each waiter takes a slot (under the lock) in the condition's shared page and sleeps on
// its own futex word; Notify(n) marks the n oldest waiting slots notified and wakes each. A
// waiter decides, after reacquiring the lock, whether it was notified — so exactly n waiters
// see true, no later waiter can steal a notification meant for an earlier one, and a waiter
// that times out just frees its slot. At most kMaxWaiters (250) may wait on one Condition at a
// time (more: RESOURCE_EXHAUSTED). Process-safety: a waiter killed while waiting leaves its
// slot marked waiting, which absorbs one future Notify, until a Wait that finds every slot
// taken reclaims it (the slot records its waiter's thread).

#ifndef MPROC_SYNC_CONDITION_H_
#define MPROC_SYNC_CONDITION_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sync/lock.h"

namespace mproc {

namespace sync_internal {
struct ConditionSlot {
  std::atomic<uint32_t> state{0};  // 0 free, 1 waiting, 2 notified
  uint32_t order = 0;              // registration order, for FIFO notification
  uint32_t tid = 0;                // the waiting thread: a slot whose waiter died is reclaimed
};
struct alignas(64) ConditionState {
  static constexpr int kMaxWaiters = 250;
  uint32_t next_order = 0;  // guarded by the condition's lock
  uint32_t pad = 0;
  ConditionSlot slots[kMaxWaiters];
};
}  // namespace sync_internal

class Condition {
 public:
  // An empty handle, to decode into; any other use is undefined.
  Condition() = default;

  // Condition::Create(), Condition::Create(lock)
  //
  // A new Condition over a new RLock (CPython's default), or over the given lock (the
  // Condition holds a copy of the handle: the same lock). Its state (about 2 KiB) is placed
  // in this process's shared arena as a Lock is. Errors as Lock::Create (RESOURCE_EXHAUSTED,
  // or a failed call's errno status). Thread-safe.
  [[nodiscard]] static absl::StatusOr<Condition> Create();
  [[nodiscard]] static absl::StatusOr<Condition> Create(Lock lock);
  [[nodiscard]] static absl::StatusOr<Condition> Create(RLock lock);

  // The lock (exactly one of these is set: calling the other is undefined).
  RLock& rlock() { return *rlock_; }
  Lock& lock() { return *lock_; }
  bool uses_rlock() const { return rlock_.has_value(); }

  // Condition::Acquire(timeout), Condition::Release(): the lock's own Acquire and Release
  // (Lock:: or RLock::), with their blocking, dead-holder takeover and errors.
  AcquireResult Acquire(absl::Duration timeout = absl::InfiniteDuration()) {
    return rlock_ ? rlock_->Acquire(timeout) : lock_->Acquire(timeout);
  }
  absl::Status Release() { return rlock_ ? rlock_->Release() : lock_->Release(); }

  // Condition::Wait(timeout)
  //
  // Releases the lock (every RLock level), sleeps until notified or `timeout` passes (zero:
  // no sleep), then takes the lock again with no timeout (restoring the depth) — so it can
  // return after the timeout, and a dead holder is taken over without telling the caller.
  // Returns whether it was notified (false: timed out); signals do not end the wait. Errors:
  // FAILED_PRECONDITION unless the calling thread holds the lock (for a Lock: the thread that
  // acquired it; stricter than CPython), RESOURCE_EXHAUSTED when 250 live waiters hold every
  // slot (a slot of a waiter killed in Wait is reclaimed then); on an error nothing is
  // released.
  // Thread-safe and process-safe.
  [[nodiscard]] absl::StatusOr<bool> Wait(absl::Duration timeout = absl::InfiniteDuration());
  // Condition::WaitFor(pred, timeout)
  //
  // Waits until pred() is true or the timeout (for the whole call) passes; returns pred()'s
  // last value. pred() runs on the calling thread (under the lock, if held). When it is true
  // at once, returns true without waiting or checking the lock; otherwise a Wait's error
  // (FAILED_PRECONDITION, RESOURCE_EXHAUSTED) is returned. Blocking and safety as Wait.
  [[nodiscard]] absl::StatusOr<bool> WaitFor(const std::function<bool()>& pred,
                               absl::Duration timeout = absl::InfiniteDuration());
  // Condition::Notify(n)
  //
  // Marks the n oldest waiters notified and wakes each (fewer when fewer wait; n = 0 does
  // nothing). A waiter whose timeout passed but that has not yet retaken the lock can still be
  // counted, and so can a dead waiter's slot. Never blocks. Errors: FAILED_PRECONDITION unless
  // the calling thread holds the lock (as Wait). Thread-safe and process-safe.
  absl::Status Notify(uint32_t n = 1);
  // Condition::NotifyAll(): Notify for every waiter; errors as Notify.
  absl::Status NotifyAll();

 private:
  friend struct Codec<Condition>;
  Condition(std::shared_ptr<sync_internal::Region> r, sync_internal::ConditionState* s)
      : region_(std::move(r)), s_(s) {}
  bool HeldByCaller() const;

  std::shared_ptr<sync_internal::Region> region_;
  sync_internal::ConditionState* s_ = nullptr;
  std::optional<Lock> lock_;
  std::optional<RLock> rlock_;
};

// The condition's own state, then its lock (tag 0: Lock, 1: RLock).
template <>
struct Codec<Condition> {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 2;
  static void Encode(EncodeBuffer& b, const Condition& c) {
    sync_internal::EncodeRegionRef(b, c.region_, c.s_);
    uint8_t tag = c.rlock_.has_value() ? 1 : 0;
    b.Append(&tag, 1);
    if (c.rlock_) {
      Codec<RLock>::Encode(b, *c.rlock_);
    } else if (c.lock_) {
      Codec<Lock>::Encode(b, *c.lock_);
    } else {
      Codec<Lock>::Encode(b, Lock());
    }
  }
  static bool Decode(DecodeReader& r, Condition& out) {
    std::shared_ptr<sync_internal::Region> region;
    char* state = nullptr;
    if (!sync_internal::DecodeRegionRef(r, sizeof(sync_internal::ConditionState),
                                        alignof(sync_internal::ConditionState), &region, &state)) {
      return false;
    }
    uint8_t tag;
    if (!r.Read(&tag, 1)) return false;
    if (tag > 1) return r.Fail("bad Condition lock tag");
    Condition c = region ? Condition(std::move(region),
                                     reinterpret_cast<sync_internal::ConditionState*>(state))
                         : Condition();
    if (tag == 1) {
      RLock l;
      if (!Codec<RLock>::Decode(r, l)) return false;
      c.rlock_.emplace(std::move(l));
    } else {
      Lock l;
      if (!Codec<Lock>::Decode(r, l)) return false;
      c.lock_.emplace(std::move(l));
    }
    out = std::move(c);
    return true;
  }
};

}  // namespace mproc

#endif  // MPROC_SYNC_CONDITION_H_
