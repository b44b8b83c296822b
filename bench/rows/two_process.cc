#include "bench/rows/two_process.h"

#include <unistd.h>

#include <cstdio>

#include "bench/report/report.h"

namespace mproc::bench {

void ForkExitWait(benchmark::State& state) {
  std::fflush(nullptr);
  for (auto _ : state) {
    pid_t pid = ::fork();
    if (pid == 0) _exit(0);
    int status;
    ::waitpid(pid, &status, 0);
  }
}

pid_t ForkPinnedChild(int cpu, const std::function<int()>& body) {
  return ForkChild([&] {
    PinSelf(cpu);
    return body();
  });
}

namespace {
int64_t ClockNs(clockid_t c) {
  timespec ts;
  if (::clock_gettime(c, &ts) != 0) return -1;
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
}  // namespace

CpuMeter::CpuMeter(std::vector<pid_t> children) {
  clocks_.push_back(CLOCK_PROCESS_CPUTIME_ID);
  for (pid_t pid : children) {
    clockid_t c;
    if (pid > 0 && ::clock_getcpuclockid(pid, &c) == 0) clocks_.push_back(c);
  }
  for (clockid_t c : clocks_) start_ns_.push_back(ClockNs(c));
}

void CpuMeter::Stop(benchmark::State& state) {
  int64_t total = 0;
  for (size_t i = 0; i < clocks_.size(); ++i) {
    const int64_t now = ClockNs(clocks_[i]);
    if (now < 0 || start_ns_[i] < 0) return;  // a clock we cannot read: no figure at all
    total += now - start_ns_[i];
  }
  state.counters["cpu_ns"] = benchmark::Counter(static_cast<double>(total));
}

}  // namespace mproc::bench
