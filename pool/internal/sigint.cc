#include "pool/internal/sigint.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/cpu_relax.h"
#include "base/mutex.h"

namespace mproc::pool_internal {
namespace {

// The SIGINT handler of pools in interrupt mode: it writes to each registered pool's eventfd
// (write is async-signal-safe), and the pool threads do the rest. Installed when the first
// such pool starts; the handler that was there before comes back when the last one ends.
constexpr int kMaxSigintPools = 64;
// Changed under g_sigint_mu, but read by the handler without it (atomics, not guarded).
std::atomic<int> g_sigint_fds[kMaxSigintPools];
Mutex g_sigint_mu;
int g_sigint_users ABSL_GUARDED_BY(g_sigint_mu) = 0;
struct sigaction g_sigint_previous ABSL_GUARDED_BY(g_sigint_mu);

// Handlers running now (on any thread): UnregisterSigintFd waits for them, so a handler that
// read a slot before it was cleared is done writing before its descriptor can be closed and
// its number given to something else.
std::atomic<int> g_sigint_running{0};

// A fork child copies the count as it was: a handler that ran on another thread at the fork
// runs nowhere in the child.
[[maybe_unused]] const int kSigintAtfork = [] {
  pthread_atfork(nullptr, nullptr, [] { g_sigint_running.store(0, std::memory_order_relaxed); });
  return 0;
}();

void OnSigint(int) {
  const int saved = errno;
  g_sigint_running.fetch_add(1, std::memory_order_seq_cst);
  uint64_t one = 1;
  for (auto& slot : g_sigint_fds) {
    int fd = slot.load(std::memory_order_seq_cst);
    if (fd >= 0) (void)!::write(fd, &one, sizeof(one));
  }
  g_sigint_running.fetch_sub(1, std::memory_order_seq_cst);
  errno = saved;
}

}  // namespace

absl::Status RegisterSigintFd(int fd) {
  MutexLock lock(&g_sigint_mu);
  if (g_sigint_users == 0) {
    for (auto& slot : g_sigint_fds) slot.store(-1);
  }
  int free_slot = -1;
  for (int i = 0; i < kMaxSigintPools && free_slot < 0; ++i) {
    if (g_sigint_fds[i].load() < 0) free_slot = i;
  }
  if (free_slot < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("at most ", kMaxSigintPools, " pools may be in interrupt mode at once"));
  }
  g_sigint_fds[free_slot].store(fd, std::memory_order_release);
  if (g_sigint_users++ == 0) {
    struct sigaction sa = {};
    sa.sa_handler = OnSigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &sa, &g_sigint_previous);
  }
  return absl::OkStatus();
}

void ReleaseSigintFd(UniqueFd fd) {
  {
    MutexLock lock(&g_sigint_mu);
    for (auto& slot : g_sigint_fds) {
      int expected = fd.get();
      if (slot.compare_exchange_strong(expected, -1, std::memory_order_seq_cst)) {
        if (--g_sigint_users == 0) ::sigaction(SIGINT, &g_sigint_previous, nullptr);
        break;
      }
    }
  }
  // A handler that loaded the slot before the exchange may still be about to write to `fd`,
  // which closes next. (Dekker with OnSigint: slot cleared, then count read; count raised,
  // then slot read.) A handler is a few writes long, and one interrupting this thread has
  // finished before this loop runs; a thread preempted in one gets the CPU back through the
  // yields.
  const absl::Time limit = absl::Now() + kSigintDrainLimit;
  for (int spins = 0; g_sigint_running.load(std::memory_order_seq_cst) != 0; ++spins) {
    if (spins < 64) {
      CpuRelax();
      continue;
    }
    if (absl::Now() >= limit) {
      // A handler stopped mid-write: its descriptor stays open (and its number taken) for the
      // life of the process rather than risk a write into whatever would reuse the number.
      (void)fd.Release();
      return;
    }
    ::sched_yield();
  }
}

void SigintHandlerRunningForTest(int delta) {
  g_sigint_running.fetch_add(delta, std::memory_order_seq_cst);
}

}  // namespace mproc::pool_internal
