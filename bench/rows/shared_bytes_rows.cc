// shm/shared_bytes.h: large payloads handed between two processes through a Queue without a
// copy, against memcpy, the copying Queue, CPython's Queue of bytes and CPython's
// SharedMemory used by hand; and reading what was received, against reading local memory.
//
// A hand-off row times what moving a buffer costs, not writing it: the producer child
// allocates (a recycled buffer from its pool in the steady state), stamps a sequence number,
// freezes and puts it; the parent gets it, checks the stamp and drops it. The copying rows it
// is compared with also start from bytes the producer already has.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <set>

#include "bench/report/report.h"
#include "bench/rows/two_process.h"
#include "ipc/queue.h"
#include "shm/shared_bytes.h"

namespace mproc::bench {
namespace {

enum class Read {
  kStamp,       // the hand-off alone
  kAll,         // then read every byte (the mapping is cached: recycled buffers)
  kFirstTouch,  // read every byte of a buffer this process maps afresh each time
};

void Handoff(benchmark::State& state, size_t size, Read read) {
  // maxsize 4 as the copying mproc.queue.1MiB row; 2 where every buffer is read, so that the
  // buffers in flight (queued, held, being written) fit the default pool and cache limits.
  absl::StatusOr<Queue<SharedBytes>> q = Queue<SharedBytes>::Create(read == Read::kStamp ? 4 : 2);
  if (!q.ok()) return state.SkipWithError("Queue::Create failed");
  SharedObject<std::atomic<int>> stop;
  pid_t pid = ForkPinnedChild(-1, [&] {
    std::set<const std::byte*> filled;
    for (uint64_t seq = 1; stop->load(std::memory_order_relaxed) == 0; ++seq) {
      absl::StatusOr<SharedBytesWriter> w = SharedBytesWriter::Allocate(size);
      if (!w.ok()) return 1;
      // A buffer is filled once when it is new (so reading rows read real pages); recycled
      // ones already hold bytes.
      if (read != Read::kStamp && filled.insert(w->data()).second) std::memset(w->data(), 1, size);
      std::memcpy(w->data(), &seq, sizeof seq);
      absl::StatusOr<SharedBytes> b = std::move(*w).Freeze();
      if (!b.ok()) return 2;
      for (;;) {
        absl::Status s = q->Put(*b, absl::Milliseconds(100));
        if (s.ok()) break;
        if (stop->load() != 0) return 0;
        if (!absl::IsDeadlineExceeded(s)) return 3;
      }
    }
    return 0;
  });
  if (read == Read::kFirstTouch) SharedBytes::SetCacheLimit(0);
  uint64_t last = 0;
  bool bad = false;
  auto take = [&] {
    absl::StatusOr<SharedBytes> b = q->Get(absl::Seconds(30));
    if (!b.ok() || b->size() != size) return false;
    uint64_t seq;
    std::memcpy(&seq, b->data(), sizeof seq);
    if (seq <= last) bad = true;
    last = seq;
    if (read != Read::kStamp) benchmark::DoNotOptimize(SumWords(b->data(), size));
    return true;
  };
  for (int i = 0; i < 8; ++i) {  // warm-up: the producer's pool fills, mappings are cached
    if (!take()) {
      stop->store(1);
      ReapChild(pid, /*kill=*/true);
      return state.SkipWithError("warm-up Get failed");
    }
  }
  CpuMeter cpu({pid});
  for (auto _ : state) {
    if (!take()) {
      bad = true;
      break;
    }
  }
  cpu.Stop(state);
  stop->store(1);
  DrainUntilExited(*q, pid);
  SharedBytes::SetCacheLimit(SharedBytes::kDefaultLimit);
  SharedBytes::ReleaseIdle();
  if (bad) state.SkipWithError("a buffer came back short or out of order");
}

}  // namespace

MPROC_REPORT_ROWS(SharedBytesRows) {
  AddRow("mproc.shared_bytes.handoff_1MiB", Section::kMproc,
         [](benchmark::State& s) { Handoff(s, 1 << 20, Read::kStamp); })
      .Title("SharedBytes of 1 MiB through a Queue, producer process -> consumer, per buffer")
      .PerItem()
      .Baselines({"mproc.queue.1MiB", "kernel.memcpy_1MiB"});
  AddRow("mproc.shared_bytes.handoff_64MiB", Section::kMproc,
         [](benchmark::State& s) { Handoff(s, 64 << 20, Read::kStamp); })
      .Title("SharedBytes of 64 MiB through a Queue, producer process -> consumer, per buffer")
      .PerItem()
      .Baselines({"kernel.memcpy_64MiB", "cpython.queue.bytes_64MiB",
                  "cpython.shared_memory.handoff_64MiB"});
  AddRow("mproc.shared_bytes.handoff_1GiB", Section::kMproc,
         [](benchmark::State& s) { Handoff(s, size_t{1} << 30, Read::kStamp); })
      .Title("SharedBytes of 1 GiB through a Queue, producer process -> consumer, per buffer")
      .PerItem()
      .Baselines({"mproc.shared_bytes.handoff_1MiB", "mproc.shared_bytes.handoff_64MiB"});
  AddRow("mproc.shared_bytes.read_64MiB", Section::kMproc,
         [](benchmark::State& s) { Handoff(s, 64 << 20, Read::kAll); })
      .Title("SharedBytes of 64 MiB handed over, then every byte read by the consumer")
      .BytesPerOp(64 << 20)
      .Baselines({"kernel.read_64MiB"});
  AddRow("mproc.shared_bytes.first_read_64MiB", Section::kMproc,
         [](benchmark::State& s) { Handoff(s, 64 << 20, Read::kFirstTouch); })
      .Title("As read_64MiB, with the consumer's mapping cache off: every read is a first touch")
      .BytesPerOp(64 << 20)
      .Baselines({"mproc.shared_bytes.read_64MiB", "kernel.read_64MiB"});
}

}  // namespace mproc::bench
