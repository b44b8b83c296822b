// The Manager (manager/): a Dict call from a client process to the server, and making a Dict,
// against a raw AF_UNIX request/reply of the same size and CPython's Manager().dict().
#include <sched.h>

#include <cstdint>

#include "bench/report/report.h"
#include "bench/rows/two_process.h"
#include "manager/manager.h"

namespace mproc::bench {
namespace {

// Pins another process (the manager's server) to `cpu`.
void PinOther(pid_t pid, int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)::sched_setaffinity(pid, sizeof(set), &set);
}

// d.Set(i % 16, i) from this process, served by the manager's process: one request, one reply.
void ManagerDictSet(benchmark::State& state, PinCpus cpus) {
  ScopedPin pin(cpus.parent);
  absl::StatusOr<std::unique_ptr<Manager>> m = Manager::Start();
  if (!m.ok()) return state.SkipWithError("Manager::Start failed");
  PinOther((*m)->pid(), cpus.child);
  absl::StatusOr<DictProxy<int64_t, int64_t>> d = (*m)->Dict<int64_t, int64_t>();
  if (!d.ok() || !d->Set(0, 0).ok()) return state.SkipWithError("Dict failed");
  int64_t i = 0;
  CpuMeter cpu({(*m)->pid()});
  for (auto _ : state) {
    if (!d->Set(i % 16, i).ok()) return state.SkipWithError("Set failed");
    ++i;
  }
  cpu.Stop(state);
  (void)(*m)->Shutdown();
}

// Making a Dict proxy and dropping it (the drop is a one-way message): CPython's costs about
// a hundred ops (a new connection and handshake per create, incref and decref).
void ManagerDictCreate(benchmark::State& state) {
  absl::StatusOr<std::unique_ptr<Manager>> m = Manager::Start();
  if (!m.ok()) return state.SkipWithError("Manager::Start failed");
  if (!(*m)->Dict<int64_t, int64_t>().ok()) return state.SkipWithError("Dict failed");
  CpuMeter cpu({(*m)->pid()});
  for (auto _ : state) {
    absl::StatusOr<DictProxy<int64_t, int64_t>> d = (*m)->Dict<int64_t, int64_t>();
    if (!d.ok()) return state.SkipWithError("Dict failed");
    benchmark::DoNotOptimize(d);
  }
  cpu.Stop(state);
  (void)(*m)->Shutdown();
}

}  // namespace

MPROC_REPORT_ROWS(ManagerRows) {
  AddPairRows("mproc.manager.dict_set", Section::kMproc, ManagerDictSet)
      .Title("Manager Dict<int64, int64> Set from a client process, one round trip")
      .PairBaselines({"kernel.unix_reqrep_48B"})
      .Baselines({"cpython.manager.dict"});
  AddRow("mproc.manager.dict_create", Section::kMproc, ManagerDictCreate)
      .Title("Manager Dict proxy made and dropped")
      .Baselines({"mproc.manager.dict_set.cross_cpu", "mproc.manager.dict_set.same_cpu"});
}

}  // namespace mproc::bench
