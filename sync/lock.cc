#include "sync/lock.h"

#include "base/futex.h"
#include "base/owner.h"
#include "base/spin.h"

namespace mproc {
namespace sync_internal {

namespace {
AcquireResult FromOwner(OwnerAcquire r) {
  switch (r) {
    case OwnerAcquire::kAcquired: return AcquireResult::Acquired();
    case OwnerAcquire::kOwnerDied: return AcquireResult::OwnerDied();
    case OwnerAcquire::kTimedOut: break;
  }
  return AcquireResult::NotAcquired();
}
}  // namespace

AcquireResult TryAcquireSlow(LockState* s, uint32_t tid) {
  return FromOwner(TryAcquireOwnerWord(&s->word, tid));
}

AcquireResult AcquireSlow(LockState* s, uint32_t tid, const Deadline& deadline) {
  // A short spin (hand-off): a holder on another CPU often releases within a microsecond or
  // two.
  return FromOwner(LockOwnerWord(&s->word, tid, deadline, SpinMode::kHandoff));
}

}  // namespace sync_internal

using sync_internal::CreateShared;
using sync_internal::LockState;

absl::StatusOr<Lock> Lock::Create() {
  auto r = CreateShared<LockState>("mproc-lock");
  if (!r.ok()) return r.status();
  return Lock(r->first, r->second);
}

absl::StatusOr<RLock> RLock::Create() {
  auto r = CreateShared<LockState>("mproc-rlock");
  if (!r.ok()) return r.status();
  return RLock(r->first, r->second);
}

AcquireResult RLock::Acquire(absl::Duration timeout) {
  const uint32_t tid = CurrentTid();
  uint32_t seen = 0;
  // The count is touched only by the holder: plain relaxed loads and stores, no RMW.
  if (TakeFreeOwnerWord(&s_->word, tid, &seen)) [[likely]] {
    s_->count.store(1, std::memory_order_relaxed);
    return AcquireResult::Acquired();
  }
  if ((seen & kOwnerTidMask) == tid) {
    s_->count.store(s_->count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return AcquireResult::Acquired();
  }
  AcquireResult r = sync_internal::AcquireSlow(s_, tid, Deadline::After(timeout));
  if (r) s_->count.store(1, std::memory_order_relaxed);
  return r;
}

AcquireResult RLock::TryAcquire() {
  uint32_t tid = CurrentTid();
  if ((s_->word.load(std::memory_order_relaxed) & kOwnerTidMask) == tid) {
    s_->count.store(s_->count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return AcquireResult::Acquired();
  }
  AcquireResult r = sync_internal::TryAcquireSlow(s_, tid);
  if (r) s_->count.store(1, std::memory_order_relaxed);
  return r;
}

absl::Status RLock::Release() {
  uint32_t tid = CurrentTid();
  uint32_t v = s_->word.load(std::memory_order_relaxed);
  if ((v & kOwnerTidMask) != tid) [[unlikely]] {
    return absl::FailedPreconditionError("cannot release an RLock this thread does not hold");
  }
  uint32_t depth = s_->count.load(std::memory_order_relaxed);
  if (depth > 1) {
    s_->count.store(depth - 1, std::memory_order_relaxed);
    return absl::OkStatus();
  }
  s_->count.store(0, std::memory_order_relaxed);
  ReleaseOwnerWord(&s_->word);
  return absl::OkStatus();
}

uint32_t RLock::Depth() const {
  return HeldByMe() ? s_->count.load(std::memory_order_relaxed) : 0;
}

uint32_t RLock::ReleaseAll() {
  uint32_t depth = s_->count.exchange(0, std::memory_order_relaxed);
  ReleaseOwnerWord(&s_->word);
  return depth;
}

AcquireResult RLock::AcquireRestore(uint32_t depth, const Deadline& d) {
  const uint32_t tid = CurrentTid();
  AcquireResult r = AcquireResult::Acquired();
  if (!TakeFreeOwnerWord(&s_->word, tid)) r = sync_internal::AcquireSlow(s_, tid, d);
  if (r) s_->count.store(depth, std::memory_order_relaxed);
  return r;
}

}  // namespace mproc
