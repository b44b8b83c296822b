// ipc/: Connection round trips and Queue throughput between two processes, against the raw
// socketpair ping-pong and CPython's Pipe and Queue.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "bench/report/report.h"
#include "bench/rows/two_process.h"
#include "ipc/connection.h"
#include "ipc/queue.h"

namespace mproc::bench {
namespace {

// 16-byte message there and back, as CPython's row sends b"x" * 16.
void PipeRoundTrip(benchmark::State& state, PinCpus cpus) {
  absl::StatusOr<std::pair<Connection, Connection>> pair = Pipe();
  if (!pair.ok()) return state.SkipWithError("Pipe failed");
  ScopedPin pin(cpus.parent);
  pid_t pid = ForkPinnedChild(cpus.child, [&] {
    pair->first.Close();
    for (;;) {
      absl::StatusOr<std::string> m = pair->second.Recv<std::string>();
      if (!m.ok()) return 0;  // the parent closed its end
      if (!pair->second.Send(*m).ok()) return 1;
    }
  });
  pair->second.Close();
  const std::string payload(16, 'x');
  for (auto _ : state) {
    if (!pair->first.Send(payload).ok()) return state.SkipWithError("Send failed");
    absl::StatusOr<std::string> back = pair->first.Recv<std::string>();
    if (!back.ok()) return state.SkipWithError("Recv failed");
    benchmark::DoNotOptimize(back);
  }
  pair->first.Close();
  ReapChild(pid);
}

// One producer process puts small ints as fast as it can; this process gets them.
void QueueOneToOne(benchmark::State& state) {
  absl::StatusOr<Queue<int64_t>> q = Queue<int64_t>::Create();
  if (!q.ok()) return state.SkipWithError("Queue::Create failed");
  SharedObject<std::atomic<int>> stop;
  pid_t pid = ForkPinnedChild(-1, [&] {
    for (int64_t i = 0; stop->load(std::memory_order_relaxed) == 0; ++i) {
      absl::Status s = q->Put(i, absl::Milliseconds(100));
      if (!s.ok() && !absl::IsDeadlineExceeded(s)) return 1;
    }
    return 0;
  });
  for (auto _ : state) {
    absl::StatusOr<int64_t> v = q->Get(absl::Seconds(10));
    if (!v.ok()) return state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(v);
  }
  stop->store(1);
  // Drain until the producer (maybe blocked on a full queue) has exited.
  for (;;) {
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) break;
    (void)q->Get(absl::Milliseconds(10));
  }
}

}  // namespace

MPROC_REPORT_ROWS(IpcRows) {
  AddPairRows("mproc.pipe.roundtrip", Section::kMproc, PipeRoundTrip)
      .Title("Pipe Send+Recv round trip, 16 B string, two processes")
      .PairBaselines({"kernel.socketpair_pingpong", "cpython.pipe.roundtrip"});
  AddRow("mproc.queue.1p1c", Section::kMproc, QueueOneToOne)
      .Title("Queue<int64_t>, 1 producer process -> 1 consumer, per item")
      .Baselines({"kernel.pipe_64B_per_write", "cpython.queue.1p1c", "cpython.simplequeue.1p1c"});
}

}  // namespace mproc::bench
