// sync/lock.h — Lock and RLock: process-shared mutexes on futexes, with dead-owner recovery.
//
//   MPROC_ASSIGN_OR_RETURN(Lock lock, Lock::Create());
//   {
//     LockGuard g(lock);              // Acquire() ... Release()
//     if (g.previous_owner_died()) RepairSharedState();
//     ...
//   }
//   if (lock.Acquire(absl::Milliseconds(10))) { ...; lock.Release().IgnoreError(); }
//
// Semantics are CPython's (multiprocessing.Lock / RLock), in C++ casing:
//   * Lock is not owned by a thread: any thread of any process may Release it (CPython
//     SYNC-6). Releasing an unlocked Lock is FAILED_PRECONDITION ("released too many times").
//   * RLock may be re-acquired by the thread holding it and needs as many Releases; a Release
//     by any other thread is FAILED_PRECONDITION.
//   * Acquire blocks (optionally until a timeout) and returns an AcquireResult that converts to
//     true when acquired; TryAcquire never blocks. Locked() reports whether anyone holds it.
//
// Dead owners: the futex word holds the holder's thread id (base/owner.h, the owner word shared
// with ipc). A waiter that has slept for 20 ms, or reached its deadline, checks that the holder
// still exists; if the holder thread or process died while holding the lock, the waiter takes
// the lock over and its AcquireResult says previous_owner_died() — the EOWNERDEAD analogue —
// so it can repair the state the lock protected. mproc never calls set_robust_list. For a
// Lock, "holder" means the thread that acquired it (if it hands the lock to another process to
// release and then dies, a waiter will take the lock over).
//
// Speed: an uncontended Acquire is one CAS and Release one exchange — no syscall, no owner
// bookkeeping beyond the CAS itself. Contended waits sleep in FUTEX_WAIT (shared) on the word.
//
// Thread-safety: handles are thread-safe and cheap to copy; copies share the lock. Placement:
// the lock's state (64 bytes) lives in a sealed memfd chunk of this process's shared arena,
// beside other sync objects (sync/internal/shared_state.h); a fork child's copy is the same lock.
// Process-safety: a process killed while holding the lock is detected as above; killed while
// waiting, it leaves nothing behind.

#ifndef MPROC_SYNC_LOCK_H_
#define MPROC_SYNC_LOCK_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/deadline.h"
#include "base/owner.h"
#include "sync/internal/shared_state.h"

namespace mproc {

// What Acquire and TryAcquire return, a plain value: converts to true when the lock was taken;
// previous_owner_died() when it was taken over from a holder that died holding it.
class [[nodiscard]] AcquireResult {
 public:
  static AcquireResult Acquired() { return AcquireResult(true, false); }
  static AcquireResult OwnerDied() { return AcquireResult(true, true); }
  static AcquireResult NotAcquired() { return AcquireResult(false, false); }

  explicit operator bool() const { return acquired_; }
  bool acquired() const { return acquired_; }
  // Acquired by taking over from a holder that died while holding the lock.
  bool previous_owner_died() const { return owner_died_; }

 private:
  AcquireResult(bool a, bool d) : acquired_(a), owner_died_(d) {}
  bool acquired_;
  bool owner_died_;
};

namespace sync_internal {

struct alignas(64) LockState {
  std::atomic<uint32_t> word{0};   // the owner word (base/owner.h): holder tid | waiters bit
  std::atomic<uint32_t> count{0};  // RLock recursion depth (touched by the holder only)
};
static_assert(sizeof(LockState) == 64);

// The contended path shared by Lock and RLock.
AcquireResult AcquireSlow(LockState* s, uint32_t tid, const Deadline& deadline);
// One non-blocking attempt that also takes over from a dead holder.
AcquireResult TryAcquireSlow(LockState* s, uint32_t tid);

}  // namespace sync_internal

class Lock {
 public:
  // An empty handle, to decode into; any other use is undefined.
  Lock() = default;

  // Lock::Create()
  //
  // A new unlocked lock, placed in this process's shared arena (see Placement above). Errors:
  // RESOURCE_EXHAUSTED when the arena needs a new chunk and its memfd or mapping cannot be had
  // (descriptors, memory); other failed system calls by errno (base/status.h). Thread-safe.
  [[nodiscard]] static absl::StatusOr<Lock> Create();

  // Lock::Acquire(timeout)
  //
  // Blocks until acquired, or until `timeout` passes (a zero timeout is one attempt): one CAS
  // when free, else a short hand-off spin (base/spin.h), then a futex sleep. Returns no error:
  // false when the timeout passed first. A holder that died holding the lock is taken over
  // after a 20 ms slice of sleep, or at the deadline if that comes first
  // (previous_owner_died()). Not recursive: a thread acquiring a Lock it holds
  // waits out the timeout (forever by default), as CPython's. Thread-safe and process-safe.
  AcquireResult Acquire(absl::Duration timeout = absl::InfiniteDuration()) {
    const uint32_t tid = CurrentTid();
    if (TakeFreeOwnerWord(&s_->word, tid)) [[likely]] return AcquireResult::Acquired();
    return sync_internal::AcquireSlow(s_, tid, Deadline::After(timeout));
  }

  // Lock::TryAcquire()
  //
  // Never blocks. Returns true when acquired (including a takeover from a dead holder, which
  // it checks at once in /proc: previous_owner_died()); false while any live thread holds it,
  // the calling thread included. Thread-safe and process-safe.
  AcquireResult TryAcquire() {
    const uint32_t tid = CurrentTid();
    if (TakeFreeOwnerWord(&s_->word, tid)) return AcquireResult::Acquired();
    return sync_internal::TryAcquireSlow(s_, tid);
  }

  // Lock::Release()
  //
  // Releases the lock (any thread, any process) and wakes one sleeping waiter, if any. Never
  // blocks. Errors: FAILED_PRECONDITION when it is not locked (nothing changes). Thread-safe
  // and process-safe.
  absl::Status Release() {
    if (ReleaseOwnerWord(&s_->word) == 0) [[unlikely]] {
      return absl::FailedPreconditionError("Lock released too many times (it is not locked)");
    }
    return absl::OkStatus();
  }

  // Whether any thread of any process holds it: a snapshot, which may be stale at once. A dead
  // holder's lock reads as locked until an Acquire or TryAcquire takes it over. Never blocks;
  // thread-safe.
  bool Locked() const { return s_->word.load(std::memory_order_relaxed) != 0; }
  // The holder's thread id, or 0 (a snapshot, as Locked).
  uint32_t HolderTid() const { return s_->word.load(std::memory_order_relaxed) & kOwnerTidMask; }

 private:
  template <typename H, typename S>
  friend struct sync_internal::SimpleHandleCodec;
  friend class Condition;
  Lock(std::shared_ptr<sync_internal::Region> r, sync_internal::LockState* s) : region_(std::move(r)), s_(s) {}
  std::shared_ptr<sync_internal::Region> region_;
  sync_internal::LockState* s_ = nullptr;
};

class RLock {
 public:
  // An empty handle, to decode into; any other use is undefined.
  RLock() = default;

  // RLock::Create(): a new unlocked RLock, placed and failing as Lock::Create.
  [[nodiscard]] static absl::StatusOr<RLock> Create();

  // RLock::Acquire(timeout)
  //
  // When the calling thread holds it: one more level, at once (the timeout plays no part).
  // Otherwise as Lock::Acquire: blocks up to `timeout`, false when it passes first, and takes
  // over from a dead holder after a 20 ms slice of sleep or at the deadline
  // (previous_owner_died(); the depth starts again at 1). A fork child's thread is another
  // thread: it does not hold what its parent's thread held. Thread-safe and process-safe.
  AcquireResult Acquire(absl::Duration timeout = absl::InfiniteDuration());
  // RLock::TryAcquire()
  //
  // Never blocks: one more level when the calling thread holds it, else as Lock::TryAcquire
  // (depth 1 when acquired). Thread-safe and process-safe.
  AcquireResult TryAcquire();
  // RLock::Release()
  //
  // Removes one level; the last one frees the lock and wakes one sleeping waiter, if any.
  // Never blocks. Errors: FAILED_PRECONDITION unless the calling thread holds it.
  absl::Status Release();

  // As Lock::Locked.
  bool Locked() const { return s_->word.load(std::memory_order_relaxed) != 0; }
  // Recursion depth when the calling thread holds it, else 0.
  uint32_t Depth() const;
  // Whether the calling thread holds it (exact for the caller). Never blocks.
  bool HeldByMe() const {
    return (s_->word.load(std::memory_order_relaxed) & kOwnerTidMask) ==
           CurrentTid();
  }

 private:
  template <typename H, typename S>
  friend struct sync_internal::SimpleHandleCodec;
  friend class Condition;
  template <typename H>
  friend struct sync_internal::ValueCodec;
  template <typename T>
  friend class Value;
  template <typename T>
  friend class Array;
  RLock(std::shared_ptr<sync_internal::Region> r, sync_internal::LockState* s) : region_(std::move(r)), s_(s) {}
  // For Condition: releases every level and returns the depth; restores it.
  uint32_t ReleaseAll();
  AcquireResult AcquireRestore(uint32_t depth, const Deadline& d);

  std::shared_ptr<sync_internal::Region> region_;
  sync_internal::LockState* s_ = nullptr;
};

// RAII: acquires in the constructor (blocking), releases in the destructor.
// LockGuard::LockGuard(lock): lock.Acquire() with no timeout, so it returns only once acquired
// (a Lock this thread already holds never is). The destructor releases, ignoring any error.
// previous_owner_died() as AcquireResult's. Destroy it in the thread that made it: an RLock
// released from another thread fails, the error is ignored, and the RLock stays held.
template <typename L>
class LockGuard {
 public:
  explicit LockGuard(L& lock) : lock_(lock), result_(lock.Acquire()) {}
  ~LockGuard() {
    if (result_) lock_.Release().IgnoreError();
  }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
  bool previous_owner_died() const { return result_.previous_owner_died(); }

 private:
  L& lock_;
  AcquireResult result_;
};
// One guard for every lock type: LockGuard g(lock) and LockGuard g(value.GetLock()) (an
// RLock) both deduce theirs.
template <typename L>
LockGuard(L&) -> LockGuard<L>;
using RLockGuard = LockGuard<RLock>;

// Handles cross process boundaries as their segment's descriptor (DESIGN.md, Handles).
template <>
struct Codec<Lock> : sync_internal::SimpleHandleCodec<Lock, sync_internal::LockState> {};
template <>
struct Codec<RLock> : sync_internal::SimpleHandleCodec<RLock, sync_internal::LockState> {};

}  // namespace mproc

#endif  // MPROC_SYNC_LOCK_H_
