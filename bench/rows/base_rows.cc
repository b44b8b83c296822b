// mproc's base/ layer: the full read/write loops every channel is built on, against the raw
// pipe ping-pong. Shows what the deadline handling costs (a finite deadline polls first).

#include <fcntl.h>
#include <unistd.h>

#include "base/deadline.h"
#include "base/syscall.h"
#include "bench/report/report.h"
#include "bench/rows/two_process.h"

namespace mproc::bench {
namespace {

void BasePingPong(benchmark::State& state, PinCpus cpus, bool finite_deadline) {
  int to_child[2], to_parent[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(to_parent, O_CLOEXEC) != 0) {
    state.SkipWithError("pipe2 failed");
    return;
  }
  ScopedPin pin(cpus.parent);
  pid_t pid = ForkPinnedChild(cpus.child, [&] {
    ::close(to_child[1]);
    ::close(to_parent[0]);
    char buf[8];
    for (;;) {
      if (!ReadExact(to_child[0], buf, 8, Deadline::Infinite(), "read").ok()) return 0;
      if (!WriteAll(to_parent[1], buf, 8, Deadline::Infinite(), "write").ok()) return 1;
    }
  });
  ::close(to_child[0]);
  ::close(to_parent[1]);
  char buf[8] = "mproc";
  CpuMeter cpu({pid});
  for (auto _ : state) {
    Deadline d = finite_deadline ? Deadline::After(absl::Seconds(10)) : Deadline::Infinite();
    if (!WriteAll(to_child[1], buf, 8, d, "write").ok() ||
        !ReadExact(to_parent[0], buf, 8, d, "read").ok()) {
      state.SkipWithError("ping-pong broke");
      break;
    }
  }
  cpu.Stop(state);
  ::close(to_child[1]);
  ::close(to_parent[0]);
  ReapChild(pid);
}

}  // namespace

MPROC_REPORT_ROWS(BaseRows) {
  AddPairRows("mproc.base.pipe_pingpong",
              Section::kMproc,
              [](benchmark::State& s, PinCpus c) { BasePingPong(s, c, false); })
      .Title("base WriteAll/ReadExact 8 B pipe round trip, no deadline")
      .PairBaselines({"kernel.pipe_pingpong", "cpython.pipe.roundtrip"});
  AddPairRows("mproc.base.pipe_pingpong_deadline",
              Section::kMproc,
              [](benchmark::State& s, PinCpus c) { BasePingPong(s, c, true); })
      .Title("base WriteAll/ReadExact 8 B pipe round trip, 10 s deadline (poll first)")
      .PairBaselines({"kernel.pipe_pingpong", "cpython.pipe.roundtrip"});
}

}  // namespace mproc::bench
