// base/owner.h — who holds a shared-memory object, and whether they are still alive.
//
// One mechanism for every object in shared memory that a thread or process holds: sync's Lock
// and RLock, a duplex Pipe's turn locks (ipc/internal/ring_link.h), a Queue's producer rings
// (ipc/queue.h). Dead-owner policy (DESIGN.md, Robust locks): mproc never calls
// set_robust_list (glibc owns it); owners are recorded beside (or in) the futex word and a
// waiter checks their liveness while it waits.
//
// Two kinds of owner:
//   * A thread, for a lock held across a short critical section: its tid in the low 30 bits
//     of a 32-bit futex word (the "owner word"), bit 30 meaning "waiters may be sleeping", 0
//     when free. The CAS that takes the lock records the holder, so there is no window where a
//     lock is held by nobody known. A waiter that has slept a slice (kOwnerCheckNs) checks the
//     holder and takes the lock over by CAS when it is dead.
//   * A process, for ownership that lasts (a Queue's producer ring): its pid and its start
//     time (clock ticks after boot, /proc/<pid>/stat field 22) in one 64-bit word, so a pid
//     reused by an unrelated process never passes for the owner.
//
// Dead means: no /proc entry, or a zombie (state Z or X). A zombie is dead even though
// kill(pid, 0) still succeeds on it: a child SIGKILLed while holding a lock stays a zombie
// until its parent reaps it, and the parent may be the very process waiting for the lock.
//
// Limits: thread ids are per PID namespace (every process sharing an object must be in one);
// a thread owner is a bare tid, so a tid reused by an unrelated thread while the dead holder's
// lock is contended would hide the death (Linux allocates pids cyclically up to pid_max: reuse
// needs a full wrap during one critical section).
//
// Thread-safety: every function is thread-safe. CurrentTid is cached per thread and correct in
// fork children.
#ifndef MPROC_BASE_OWNER_H_
#define MPROC_BASE_OWNER_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>

#include "base/deadline.h"
#include "base/futex.h"
#include "base/spin.h"

namespace mproc {

// This thread's kernel thread id (cached; correct after fork).
uint32_t CurrentTid();

// False when the task (thread or process) `tid` is known to be gone: no /proc entry, or a
// zombie. True when it lives, and when liveness cannot be told (no /proc: assume alive).
bool TaskAlive(uint32_t tid);

// ---- Thread owners: the owner word --------------------------------------------------------

inline constexpr uint32_t kOwnerWaitersBit = 1u << 30;
inline constexpr uint32_t kOwnerTidMask = kOwnerWaitersBit - 1;

// How long a waiter sleeps before it checks that the holder is alive.
inline constexpr int64_t kOwnerCheckNs = 20'000'000;  // 20 ms

enum class OwnerAcquire {
  kAcquired,   // the word now holds `tid`
  kOwnerDied,  // ... taken over from a holder that died holding it
  kTimedOut,   // `deadline` passed first
};

// The uncontended path, inline: takes the word if it is free. When it is not, `*seen` (if
// given) gets the value found.
inline bool TakeFreeOwnerWord(std::atomic<uint32_t>* word, uint32_t tid,
                              uint32_t* seen = nullptr) {
  uint32_t expected = 0;
  if (word->compare_exchange_strong(expected, tid, std::memory_order_acquire,
                                    std::memory_order_relaxed)) [[likely]] {
    return true;
  }
  if (seen != nullptr) *seen = expected;
  return false;
}

// One attempt that also takes the word over from a dead holder. Never blocks (it may read
// /proc once). kTimedOut means "not acquired".
OwnerAcquire TryAcquireOwnerWord(std::atomic<uint32_t>* word, uint32_t tid);

// What a word holding the caller's own tid means.
enum class OwnerSelf {
  // This thread holds it: wait like for any holder (a non-recursive lock taken twice by one
  // thread blocks, as CPython's does).
  kWait,
  // A dead holder whose tid this thread has since been given (a thread of a killed process
  // whose pid a new process reuses): take it over at once. For locks never held across a
  // call that could take them again (a Pipe's turn locks).
  kStale,
};

// The contended path: sleeps on `word` (setting the waiters bit) in slices of kOwnerCheckNs,
// checking the holder after each, until it takes the word or `deadline` passes. Callers try
// TakeFreeOwnerWord, and spin if they want to (base/syscall.h), before this.
OwnerAcquire AcquireOwnerWord(std::atomic<uint32_t>* word, uint32_t tid, const Deadline& deadline,
                              OwnerSelf self = OwnerSelf::kWait);

// The contended path with a spin first: checks the word (a read before each CAS, so spinners
// do not bounce its line) for up to the spin budget as `mode` says (base/spin.h), then
// AcquireOwnerWord. Callers try TakeFreeOwnerWord inline first. The one way mproc takes an
// owner word it may wait for: Lock and RLock, a Pipe's turn locks, a Queue's shared rings.
OwnerAcquire LockOwnerWord(std::atomic<uint32_t>* word, uint32_t tid, const Deadline& deadline,
                           SpinMode mode, OwnerSelf self = OwnerSelf::kWait);

// Frees the word and wakes one waiter when the waiters bit was set (each waiter that takes
// the word takes the bit with it, so every release with sleepers left wakes the next).
// Returns the word's previous value (0: it was not held).
inline uint32_t ReleaseOwnerWord(std::atomic<uint32_t>* word) {
  const uint32_t old = word->exchange(0, std::memory_order_release);
  if (old & kOwnerWaitersBit) [[unlikely]] FutexWake(word, 1);
  return old;
}

// A scoped owner-word lock for a short critical section over shared memory (a Barrier's
// state): takes the word, taking it over from a dead holder (owner_died() then says so: what
// the word guards may be half-updated), and releases it at scope end or at Unlock(). Not
// recursive: a thread taking a word it holds waits for ever. Unlike a bare futex mutex, a
// process killed inside the critical section does not wedge every later caller.
class OwnerWordGuard {
 public:
  // `self`: what a word holding this thread's own tid means (OwnerSelf above); kStale for a
  // lock never taken again while held, so a dead holder's tid given to this thread since
  // cannot wedge it.
  explicit OwnerWordGuard(std::atomic<uint32_t>* word, OwnerSelf self = OwnerSelf::kWait)
      : w_(word) {
    const uint32_t tid = CurrentTid();
    if (TakeFreeOwnerWord(w_, tid)) return;
    died_ =
        AcquireOwnerWord(w_, tid, Deadline::Infinite(), self) == OwnerAcquire::kOwnerDied;
  }
  ~OwnerWordGuard() { Unlock(); }
  OwnerWordGuard(const OwnerWordGuard&) = delete;
  OwnerWordGuard& operator=(const OwnerWordGuard&) = delete;

  bool owner_died() const { return died_; }
  // Releases early; the destructor then does nothing.
  void Unlock() {
    if (w_ == nullptr) return;
    ReleaseOwnerWord(w_);
    w_ = nullptr;
  }

 private:
  std::atomic<uint32_t>* w_;
  bool died_ = false;
};

// ---- Process owners -------------------------------------------------------------------------

// This process: pid in the low 32 bits, its start time's low 32 bits above (cached; correct
// after fork). Never 0.
uint64_t CurrentProcessOwner();
inline pid_t OwnerPid(uint64_t owner) { return static_cast<pid_t>(owner & 0xffffffffu); }

// False when the process `owner` names is gone: no such pid, a zombie, or a pid that now
// belongs to a process started at another time. 0 (no owner) is not alive.
bool ProcessOwnerAlive(uint64_t owner);

// False when process `pid` is gone: no such pid, or a zombie (its leader a zombie with no
// other thread left; a process whose main thread exited while others run is alive). Without
// a start time to compare, a reused pid passes for the process: use a pidfd where one is had.
inline bool ProcessAlive(pid_t pid) {
  return pid > 0 && ProcessOwnerAlive(static_cast<uint32_t>(pid));
}

}  // namespace mproc

#endif  // MPROC_BASE_OWNER_H_
