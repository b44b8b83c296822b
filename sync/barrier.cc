#include "sync/barrier.h"

#include <climits>
#include <exception>

#include "base/deadline.h"
#include "base/futex.h"
#include "base/owner.h"

namespace mproc {

using sync_internal::BarrierState;

namespace {


absl::Status BrokenStatus() { return absl::FailedPreconditionError("barrier is broken"); }

// Ends the current generation as broken; call with the state lock held.
void BreakLocked(BarrierState* s) {
  s->broken = 1;
  s->reset_generation = s->seq.load(std::memory_order_relaxed);
  s->arrived = 0;
  s->seq.fetch_add(1, std::memory_order_release);
  FutexWake(&s->seq, INT_MAX);
}

// A party killed holding the state's lock (in the action, or inside Wait's short critical
// section) may have left the round half-updated: the barrier breaks, for every party, as a
// timeout does, instead of every later call waiting for ever on the dead holder.
void BreakIfHolderDied(const OwnerWordGuard& lock, BarrierState* s) {
  if (lock.owner_died()) BreakLocked(s);
}

}  // namespace

absl::StatusOr<Barrier> Barrier::Create(uint32_t parties, void (*action)(), absl::Duration timeout) {
  if (parties == 0) return absl::InvalidArgumentError("a barrier needs at least one party");
  auto r = sync_internal::CreateShared<BarrierState>("mproc-barrier");
  if (!r.ok()) return r.status();
  r->second->parties = parties;
  r->second->default_timeout_ns =
      timeout == absl::InfiniteDuration() ? -1 : absl::ToInt64Nanoseconds(timeout);
  return Barrier(r->first, r->second, action);
}

absl::StatusOr<uint32_t> Barrier::Wait(std::optional<absl::Duration> timeout) {
  absl::Duration t = timeout ? *timeout
                     : s_->default_timeout_ns < 0 ? absl::InfiniteDuration()
                                                  : absl::Nanoseconds(s_->default_timeout_ns);
  const Deadline deadline = Deadline::After(t);
  OwnerWordGuard lock(&s_->mutex);
  BreakIfHolderDied(lock, s_);
  if (s_->broken) return BrokenStatus();
  const uint32_t gen = s_->seq.load(std::memory_order_relaxed);
  const uint32_t index = s_->arrived++;
  if (index + 1 == s_->parties) {
    // The last party: run the action, then release the round.
    if (action_ != nullptr) {
      try {
        action_();
      } catch (...) {
        BreakLocked(s_);
        return absl::FailedPreconditionError("barrier is broken: its action threw");
      }
    }
    s_->arrived = 0;
    s_->seq.fetch_add(1, std::memory_order_release);
    FutexWake(&s_->seq, INT_MAX);
    return index;
  }
  lock.Unlock();
  for (;;) {
    uint32_t now = s_->seq.load(std::memory_order_acquire);
    if (now != gen) {
      OwnerWordGuard relock(&s_->mutex);
      BreakIfHolderDied(relock, s_);
      if (s_->reset_generation == gen) return BrokenStatus();
      return index;
    }
    if (FutexWait(&s_->seq, gen, deadline) == FutexResult::kTimedOut &&
        s_->seq.load(std::memory_order_acquire) == gen) {
      OwnerWordGuard relock(&s_->mutex);
      BreakIfHolderDied(relock, s_);
      if (s_->seq.load(std::memory_order_relaxed) != gen) continue;  // released just now
      BreakLocked(s_);
      return absl::FailedPreconditionError("barrier is broken: timed out waiting for parties");
    }
  }
}

void Barrier::Abort() {
  OwnerWordGuard lock(&s_->mutex);
  BreakLocked(s_);
}

void Barrier::Reset() {
  OwnerWordGuard lock(&s_->mutex);  // a dead holder's half-done round is reset below
  if (s_->arrived > 0) {
    // Parties are waiting: their round ends broken.
    s_->reset_generation = s_->seq.load(std::memory_order_relaxed);
    s_->seq.fetch_add(1, std::memory_order_release);
    FutexWake(&s_->seq, INT_MAX);
  }
  s_->arrived = 0;
  s_->broken = 0;
}

uint32_t Barrier::NWaiting() const {
  OwnerWordGuard lock(&s_->mutex);
  BreakIfHolderDied(lock, s_);
  return s_->arrived;
}

bool Barrier::Broken() const {
  OwnerWordGuard lock(&s_->mutex);
  BreakIfHolderDied(lock, s_);
  return s_->broken != 0;
}

}  // namespace mproc
