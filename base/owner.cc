#include "base/owner.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/futex.h"
#include "base/proc_stat.h"
#include "base/process_id.h"

namespace mproc {
namespace {

thread_local uint32_t t_tid = 0;

void ResetTidAfterFork() { t_tid = 0; }

[[maybe_unused]] const int kAtfork = [] {
  pthread_atfork(nullptr, nullptr, ResetTidAfterFork);
  return 0;
}();


// 0 when it cannot be read (no /proc, out of descriptors).
uint64_t StartTimeOf(uint32_t pid) {
  TaskStat s = ReadTaskStat(pid);
  return s.found == TaskStat::kFound ? s.start_time : 0;
}

}  // namespace

uint32_t CurrentTid() {
  if (t_tid == 0) t_tid = static_cast<uint32_t>(::syscall(SYS_gettid));
  return t_tid;
}

bool TaskAlive(uint32_t tid) {
  TaskStat s = ReadTaskStat(tid);
  if (s.found == TaskStat::kGone) return false;
  if (s.found == TaskStat::kUnknown) return true;
  return !ZombieState(s.state);
}

namespace {

// The word holds `v` (not 0): takes it over, with `waiters` as its waiters bit, if the holder
// is another thread and dead. kOwnerDied, or kTimedOut (meaning "not taken").
OwnerAcquire TakeOverIfDead(std::atomic<uint32_t>* word, uint32_t tid, uint32_t v,
                            uint32_t waiters) {
  const uint32_t holder = v & kOwnerTidMask;
  if (holder != 0 && holder != tid && !TaskAlive(holder) &&
      word->compare_exchange_strong(v, tid | waiters, std::memory_order_acquire)) {
    return OwnerAcquire::kOwnerDied;
  }
  return OwnerAcquire::kTimedOut;
}

}  // namespace

OwnerAcquire TryAcquireOwnerWord(std::atomic<uint32_t>* word, uint32_t tid) {
  uint32_t v = word->load(std::memory_order_relaxed);
  if (v == 0) {
    return word->compare_exchange_strong(v, tid, std::memory_order_acquire)
               ? OwnerAcquire::kAcquired
               : OwnerAcquire::kTimedOut;
  }
  // Keep the waiters bit: others may be sleeping.
  return TakeOverIfDead(word, tid, v, v & kOwnerWaitersBit);
}

OwnerAcquire AcquireOwnerWord(std::atomic<uint32_t>* word, uint32_t tid,
                              const Deadline& deadline, OwnerSelf self) {
  for (;;) {
    uint32_t v = word->load(std::memory_order_relaxed);
    if (self == OwnerSelf::kStale && v != 0 && (v & kOwnerTidMask) == tid) {
      if (word->compare_exchange_strong(v, tid | (v & kOwnerWaitersBit),
                                        std::memory_order_acquire)) {
        return OwnerAcquire::kOwnerDied;
      }
      continue;
    }
    if (v == 0) {
      // Others may still sleep: take it with the waiters bit so the release wakes one.
      if (word->compare_exchange_strong(v, tid | kOwnerWaitersBit, std::memory_order_acquire)) {
        return OwnerAcquire::kAcquired;
      }
      continue;
    }
    // Before raising the waiters bit: a call that will not sleep must not make the next
    // release pay a wake. At the deadline a dead holder is taken over, as TryAcquireOwnerWord
    // does, so a short timeout is no reason to leave a dead holder's lock held.
    if (deadline.Expired()) return TakeOverIfDead(word, tid, v, v & kOwnerWaitersBit);
    if (!(v & kOwnerWaitersBit)) {
      if (!word->compare_exchange_strong(v, v | kOwnerWaitersBit, std::memory_order_relaxed)) {
        continue;
      }
      v |= kOwnerWaitersBit;
    }
    if (FutexWait(word, v, deadline.Slice(absl::Nanoseconds(kOwnerCheckNs))) !=
        FutexResult::kTimedOut) {
      continue;
    }
    // At the deadline, the loop's top takes a word freed meanwhile, or makes the last attempt.
    if (deadline.Expired()) continue;
    const uint32_t now = word->load(std::memory_order_relaxed);
    if (now != 0 && TakeOverIfDead(word, tid, now, kOwnerWaitersBit) == OwnerAcquire::kOwnerDied) {
      return OwnerAcquire::kOwnerDied;
    }
  }
}

OwnerAcquire LockOwnerWord(std::atomic<uint32_t>* word, uint32_t tid, const Deadline& deadline,
                           SpinMode mode, OwnerSelf self) {
  if (SpinUntil([&] {
        return word->load(std::memory_order_relaxed) == 0 && TakeFreeOwnerWord(word, tid);
      }, deadline, mode)) {
    return OwnerAcquire::kAcquired;
  }
  return AcquireOwnerWord(word, tid, deadline, self);
}

uint64_t CurrentProcessOwner() {
  static std::atomic<uint64_t> cached{0};
  const pid_t pid = CurrentPid();
  uint64_t v = cached.load(std::memory_order_relaxed);
  if (v != 0 && OwnerPid(v) == pid) return v;
  const uint64_t start = StartTimeOf(static_cast<uint32_t>(pid)) & 0xffffffffu;
  v = static_cast<uint32_t>(pid) | (start << 32);
  // Cached only when the start time was read: a failed read (start 0, which ProcessOwnerAlive
  // treats as "unknown") is tried again next time.
  if (start != 0) cached.store(v, std::memory_order_relaxed);
  return v;
}

bool ProcessOwnerAlive(uint64_t owner) {
  const pid_t pid = OwnerPid(owner);
  if (pid <= 0) return false;
  TaskStat s = ReadTaskStat(pid);
  if (s.found == TaskStat::kGone) return false;
  if (s.found == TaskStat::kUnknown) return true;
  // A process whose main thread exited shows its leader as a zombie while other threads run.
  if (ZombieState(s.state) && s.threads <= 1) return false;
  // An owner word written without a start time (it could not be read then) is taken as this
  // pid's: alive, the safe answer, since a wrong "dead" lets a second writer into a live ring.
  if ((owner >> 32) == 0) return true;
  return (s.start_time & 0xffffffffu) == (owner >> 32);
}

}  // namespace mproc
