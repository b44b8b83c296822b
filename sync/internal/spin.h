// sync/internal/spin.h — the blocking path of Semaphore and Event: spin (when it pays), then
// sleep on the futex.
//
// A waiter spins (base/spin.h, pause mode) only when the side that last released/set ran on
// another CPU than the waiter: there a busy-polling hand-off costs ~0.1-0.4 µs against a
// ~45 µs cross-CPU wake-up, while on a shared CPU spinning only delays the peer that must run
// for the condition to change (BENCH-NOTES.md).
#ifndef MPROC_SYNC_INTERNAL_SPIN_H_
#define MPROC_SYNC_INTERNAL_SPIN_H_

#include <sched.h>

#include <atomic>
#include <cstdint>

#include "base/deadline.h"
#include "base/futex.h"
#include "base/spin.h"

namespace mproc::sync_internal {

inline int CurrentCpu() { return ::sched_getcpu(); }

// Spins (pause mode, for the spin budget or until `deadline`) while `ready()` is false, when
// the peer last ran on another CPU. Returns true when `ready()` became true.
template <typename Ready>
bool SpinIfPeerElsewhere(int peer_cpu, const Deadline& deadline, Ready&& ready) {
  // (A peer on another CPU implies more than one CPU; affinity is not consulted because a
  // caller may be pinned temporarily.)
  if (peer_cpu < 0 || peer_cpu == CurrentCpu()) return false;
  return SpinUntil(ready, deadline, SpinMode::kPause);
}

// The blocking path shared by Semaphore::Acquire and Event::Wait: retries `attempt()` until it
// succeeds or `deadline` passes. It spins first (SpinIfPeerElsewhere, while `word` reads
// `idle`), then registers in `waiters` — so the waker knows a FUTEX_WAKE is needed — and
// sleeps on `word` while it reads `idle`. Returns attempt()'s last result.
template <typename Attempt>
bool BlockUntil(std::atomic<uint32_t>* word, uint32_t idle, std::atomic<uint32_t>* waiters,
                int peer_cpu, const Deadline& deadline, Attempt&& attempt) {
  if (SpinIfPeerElsewhere(peer_cpu, deadline,
                          [&] { return word->load(std::memory_order_relaxed) != idle; }) &&
      attempt()) {
    return true;
  }
  waiters->fetch_add(1, std::memory_order_seq_cst);
  bool done = false;
  for (;;) {
    if (attempt()) {
      done = true;
      break;
    }
    if (FutexWait(word, idle, deadline) == FutexResult::kTimedOut) {
      done = attempt();
      break;
    }
  }
  waiters->fetch_sub(1, std::memory_order_relaxed);
  return done;
}

}  // namespace mproc::sync_internal

#endif  // MPROC_SYNC_INTERNAL_SPIN_H_
