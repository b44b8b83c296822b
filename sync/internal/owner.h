// sync/internal/owner.h — who holds a lock, and whether they are still alive.
//
// Dead-owner policy (DESIGN.md, Robust locks): mproc never calls set_robust_list (glibc owns
// it). A held Lock/RLock stores its holder's thread id in the futex word itself, so ownership
// is recorded by the same CAS that takes the lock (no window where a lock is held by nobody
// known). A waiter that has slept for a slice checks the holder: /proc/<tid>/stat missing
// (thread or process gone) or in state Z/X (killed, not yet reaped) means the holder died,
// and the waiter takes the lock over with a CAS and is told so.
//
// Limits: thread ids are per PID namespace (all processes sharing a lock must be in one);
// a tid reused by an unrelated thread while the dead holder's lock is contended would hide
// the death (Linux allocates pids cyclically up to pid_max, so reuse needs a full wrap).
#ifndef MPROC_SYNC_INTERNAL_OWNER_H_
#define MPROC_SYNC_INTERNAL_OWNER_H_

#include <sys/types.h>

#include <cstdint>

namespace mproc::sync_internal {

// This thread's kernel thread id (cached; correct after fork).
uint32_t CurrentTid();

// False when `tid` is known to be gone: no /proc entry, or a zombie/dead task.
bool TidAlive(uint32_t tid);

// Futex word layout for Lock and RLock: low 30 bits the holder's tid, bit 30 "waiters may be
// sleeping". 0 = free.
inline constexpr uint32_t kWaitersBit = 1u << 30;
inline constexpr uint32_t kTidMask = kWaitersBit - 1;

// How long a waiter sleeps before checking that the holder is alive.
inline constexpr int64_t kOwnerCheckNs = 20'000'000;  // 20 ms

}  // namespace mproc::sync_internal

#endif  // MPROC_SYNC_INTERNAL_OWNER_H_
