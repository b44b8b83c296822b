#include "base/spin.h"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>

namespace mproc {

int64_t SpinBudgetNs() {
  static const int64_t budget = [] {
    if (const char* env = ::getenv("MPROC_SPIN_US"); env != nullptr && *env != '\0') {
      char* end = nullptr;
      long long us = ::strtoll(env, &end, 10);
      if (end != env && us >= 0) return static_cast<int64_t>(us) * 1000;
    }
    // The peer may run on another CPU even when this process is pinned to one: count the
    // machine's CPUs, not this process's affinity.
    return ::sysconf(_SC_NPROCESSORS_ONLN) >= 2 ? int64_t{50'000} : int64_t{0};
  }();
  return budget;
}

void YieldCpu() { ::sched_yield(); }

}  // namespace mproc
