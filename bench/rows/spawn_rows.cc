// spawn/: Process start+join with a no-op target under each start method, against the raw
// fork/vfork+exec rows and CPython's Process, and again from a parent with 1 GiB of touched
// memory (spawn and forkserver should not care; fork copies page tables and does).

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include <cstring>

#include "bench/report/report.h"
#include "bench/rows/two_process.h"
#include "spawn/process.h"

namespace mproc::bench {
namespace {

void NoopTarget() {}

void StartJoin(benchmark::State& state, StartMethod method) {
  for (auto _ : state) {
    Process p(NoopTarget);
    p.SetStartMethod(method);
    if (!p.Start().ok() || !p.Join().ok() || p.exitcode() != 0) {
      state.SkipWithError("Process start/join failed");
      break;
    }
  }
}

void StartJoinFromBigParent(benchmark::State& state, StartMethod method) {
  constexpr size_t kSize = size_t{1} << 30;
  void* big = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (big == MAP_FAILED) {
    SkipRow(state, "cannot map 1 GiB here");
    return;
  }
  std::memset(big, 1, kSize);  // touched: every page is resident and must be mapped by fork
  StartJoin(state, method);
  ::munmap(big, kSize);
}

}  // namespace

MPROC_REPORT_ROWS(SpawnRows) {
  // Raw fork (ForkExitWait) again, just before the Process rows rather than only at the
  // start of the report: fork's cost grows with the parent's mappings, which the rows run in
  // between add to, so the fair baseline is one taken in the same state.
  AddRow("kernel.fork_exit_wait.before_process_rows", Section::kKernel, ForkExitWait)
      .Title("fork+_exit+waitpid, measured right before the Process rows");
  AddRow("mproc.process.fork", Section::kMproc,
         [](benchmark::State& s) { StartJoin(s, StartMethod::kFork); })
      .Title("Process start+join, no-op target, fork")
      .Baselines({"kernel.fork_exit_wait.before_process_rows", "kernel.fork_exit_wait",
                  "cpython.process.fork"});
  AddRow("mproc.process.spawn", Section::kMproc,
         [](benchmark::State& s) { StartJoin(s, StartMethod::kSpawn); })
      .Title("Process start+join, no-op target, spawn")
      .Baselines({"kernel.vfork_exec_self", "cpython.process.spawn"});
  AddRow("mproc.process.forkserver", Section::kMproc,
         [](benchmark::State& s) { StartJoin(s, StartMethod::kForkServer); })
      .Title("Process start+join, no-op target, forkserver (warm server)")
      .Baselines({"kernel.fork_exit_wait.before_process_rows", "kernel.fork_exit_wait",
                  "cpython.process.forkserver"});
  AddRow("mproc.process.fork.big_parent", Section::kMproc,
         [](benchmark::State& s) { StartJoinFromBigParent(s, StartMethod::kFork); })
      .Title("Process start+join, fork, parent with 1 GiB touched")
      .Baselines({"mproc.process.fork"});
  AddRow("mproc.process.spawn.big_parent", Section::kMproc,
         [](benchmark::State& s) { StartJoinFromBigParent(s, StartMethod::kSpawn); })
      .Title("Process start+join, spawn, parent with 1 GiB touched")
      .Baselines({"mproc.process.spawn"});
  AddRow("mproc.process.forkserver.big_parent", Section::kMproc,
         [](benchmark::State& s) { StartJoinFromBigParent(s, StartMethod::kForkServer); })
      .Title("Process start+join, forkserver, parent with 1 GiB touched")
      .Baselines({"mproc.process.forkserver"});
}

}  // namespace mproc::bench
