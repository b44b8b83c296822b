// base/spin.h — the one spin policy of the library: how long a waiter busy-waits before it
// sleeps, and how.
//
// Sleeping costs a wake-up: 45-150 µs when it crosses CPUs on these machines, a few µs on one
// CPU (BENCH-NOTES.md). Busy-waiting costs the CPU it burns, and on a CPU shared with the peer
// it delays the very peer that must run for the awaited change to happen. So every waiter in
// mproc that expects an answer soon spins for at most one budget and then sleeps:
//
//   * The budget is SpinBudgetNs(): MPROC_SPIN_US microseconds (read once; 0 turns every spin
//     off), by default 50 µs on a machine with more than one CPU online, else 0 — about one
//     cross-CPU wake-up, so a waiter whose answer never comes spends at most about twice what
//     sleeping at once would have (the classic competitive bound), and one whose answer comes
//     saves the whole wake-up.
//   * The deadline bounds it too: a 1 µs timeout spins 1 µs.
//   * How it waits between checks is the caller's mode:
//       kYield  sched_yield(): the peer may share this CPU (a ring's or socket's other end),
//               and a yield lets it run. About 0.3-1 µs per check (a system call).
//       kPause  CpuRelax() (x86 pause, ~25 ns here): the peer is known to run on another CPU
//               (a lock holder's release, a Semaphore/Event setter seen on another CPU). The
//               clock is read every kPausesPerLook pauses, not at each.
//     kHandoff  kPause, for at most kHandoffNs past the first look: a lock's holder on
//               another CPU usually releases within a microsecond; past that it is in a long
//               critical section, and sleeping at once is cheaper than spinning the whole
//               budget.
//
// Cost, stated: a spin that succeeds costs the time until the answer (and the CPU meanwhile),
// and reads no clock if that is within kPausesPerLook pauses; one that fails costs
// min(budget, deadline) of CPU (plus, in the pause modes, the kPausesPerLook pauses before the
// first look, ~0.8 µs here) on top of the sleep. The report's rows that spin show their CPU
// time beside a baseline that spins too.

#ifndef MPROC_BASE_SPIN_H_
#define MPROC_BASE_SPIN_H_

#include <algorithm>
#include <cstdint>

#include "base/cpu_relax.h"
#include "base/deadline.h"

namespace mproc {

// The spin budget in nanoseconds (see above).
int64_t SpinBudgetNs();

// sched_yield(): lets another runnable thread (a peer on this CPU) run.
void YieldCpu();

enum class SpinMode { kYield, kPause, kHandoff };

inline constexpr int64_t kHandoffNs = 1'000;
inline constexpr uint32_t kPausesPerLook = 32;

// Checks `done()` until it holds (true), or the budget or `deadline` is spent (false),
// waiting between checks as `mode` says.
template <typename Done>
bool SpinUntil(Done done, const Deadline& deadline = Deadline::Infinite(),
               SpinMode mode = SpinMode::kYield) {
  int64_t budget = SpinBudgetNs();
  if (mode == SpinMode::kHandoff) budget = std::min(budget, kHandoffNs);
  if (budget <= 0) return false;
  const uint32_t per_look = mode == SpinMode::kYield ? 1 : kPausesPerLook;
  // The clock is first read at the first look, not before the first check: a spin that
  // succeeds within kPausesPerLook pauses (a ping-pong's whole wait) reads no clock at all.
  // So the budget runs from the first look; the pauses before it are on top (~0.8 µs here).
  int64_t start = -1;
  for (uint32_t i = 1;; ++i) {
    if (done()) return true;
    if (i % per_look == 0) {
      const int64_t now = MonotonicNowNs();
      if (start < 0) start = now;
      if (now - start >= budget || (!deadline.infinite() && now >= deadline.monotonic_ns())) {
        return false;
      }
    }
    if (mode == SpinMode::kYield) {
      YieldCpu();
    } else {
      CpuRelax();
    }
  }
}

// A consumer streaming items that caught up with its producers lets a few gather before it
// looks again: 64 pauses (~1.6 µs here), a delay, not a spin wait (it does not look
// meanwhile: looking pulls the producer's line across CPUs for every item it publishes). The
// Queue's Get and GetMany use it once per catch-up.
inline constexpr int kGatherPauses = 64;
inline void PauseToGather() {
  for (int i = 0; i < kGatherPauses; ++i) CpuRelax();
}

}  // namespace mproc

#endif  // MPROC_BASE_SPIN_H_
