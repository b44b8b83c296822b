// sync/internal/spin.h — when a waiter should spin before sleeping.
//
// A blocking wake-up that crosses CPUs costs ~20-25 µs one way on these machines, while a
// busy-polling hand-off across CPUs costs ~0.35 µs; on a shared CPU, spinning only delays the
// peer that must run for the condition to change (BENCH-NOTES.md). So waiters spin only when
// the side that last released/set ran on another CPU than the waiter; the spin is bounded
// (20000 pauses, tens of µs) and then the waiter sleeps in FUTEX_WAIT.
#ifndef MPROC_SYNC_INTERNAL_SPIN_H_
#define MPROC_SYNC_INTERNAL_SPIN_H_

#include <sched.h>

#include <atomic>
#include <cstdint>

#include "base/cpu_relax.h"
#include "base/deadline.h"
#include "base/futex.h"

namespace mproc::sync_internal {

inline int CurrentCpu() { return ::sched_getcpu(); }

// Spins while `ready()` is false, for at most ~20 µs, when the peer last ran on another CPU.
// Returns true when `ready()` became true.
template <typename Ready>
bool SpinUntil(int peer_cpu, Ready&& ready) {
  // (A peer on another CPU implies more than one CPU; affinity is not consulted because a
  // caller may be pinned temporarily.)
  if (peer_cpu < 0 || peer_cpu == CurrentCpu()) return false;
  for (int i = 0; i < 20000; ++i) {
    if (ready()) return true;
    CpuRelax();
  }
  return ready();
}

// The blocking path shared by Semaphore::Acquire and Event::Wait: retries `attempt()` until it
// succeeds or `deadline` passes. It spins first (SpinUntil, while `word` reads 0), then
// registers in `waiters` — so the waker knows a FUTEX_WAKE is needed — and sleeps on `word`
// while it reads 0. Returns attempt()'s last result.
template <typename Attempt>
bool BlockUntil(std::atomic<uint32_t>* word, std::atomic<uint32_t>* waiters, int peer_cpu,
                const Deadline& deadline, Attempt&& attempt) {
  if (SpinUntil(peer_cpu, [&] { return word->load(std::memory_order_relaxed) != 0; }) &&
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
    if (FutexWait(word, 0, deadline) == FutexResult::kTimedOut) {
      done = attempt();
      break;
    }
  }
  waiters->fetch_sub(1, std::memory_order_relaxed);
  return done;
}

}  // namespace mproc::sync_internal

#endif  // MPROC_SYNC_INTERNAL_SPIN_H_
