#include "sync/semaphore.h"

#include "base/deadline.h"
#include "base/futex.h"
#include "sync/internal/spin.h"

namespace mproc {

using sync_internal::CreateShared;
using sync_internal::SemaphoreState;

absl::StatusOr<Semaphore> Semaphore::Create(uint32_t value) {
  auto r = CreateShared<SemaphoreState>("mproc-semaphore");
  if (!r.ok()) return r.status();
  r->second->value.store(value);
  return Semaphore(r->first, r->second);
}

absl::StatusOr<BoundedSemaphore> BoundedSemaphore::Create(uint32_t value) {
  auto r = CreateShared<SemaphoreState>("mproc-bounded-semaphore");
  if (!r.ok()) return r.status();
  r->second->value.store(value);
  r->second->bound = value;
  r->second->bounded = 1;
  return BoundedSemaphore(r->first, r->second);
}

namespace {
bool TryTake(SemaphoreState* s) {
  uint32_t v = s->value.load(std::memory_order_relaxed);
  while (v > 0) {
    if (s->value.compare_exchange_weak(v, v - 1, std::memory_order_acquire)) return true;
  }
  return false;
}
}  // namespace

bool Semaphore::Acquire(absl::Duration timeout) {
  if (TryTake(s_)) return true;
  if (timeout <= absl::ZeroDuration()) return false;
  return sync_internal::BlockUntil(&s_->value, 0, &s_->waiters,
                                   s_->last_release_cpu.load(std::memory_order_relaxed),
                                   Deadline::After(timeout), [&] { return TryTake(s_); });
}

absl::Status Semaphore::Release(uint32_t n) {
  // Checked without wrapping: v + n may not fit 32 bits.
  const uint32_t max = s_->bounded ? s_->bound : kSemaphoreMax;
  uint32_t v = s_->value.load(std::memory_order_relaxed);
  do {
    if (n > max || v > max - n) {
      return absl::FailedPreconditionError(s_->bounded
                                               ? "BoundedSemaphore released too many times"
                                               : "Semaphore released too many times (its count "
                                                 "would pass 2^31 - 1)");
    }
  } while (!s_->value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst));
  s_->last_release_cpu.store(sync_internal::CurrentCpu(), std::memory_order_relaxed);
  if (s_->waiters.load(std::memory_order_seq_cst) > 0) {
    FutexWake(&s_->value, static_cast<int>(n));
  }
  return absl::OkStatus();
}

}  // namespace mproc
