// ipc/: Connection round trips and Queue throughput between two processes, against the raw
// socketpair ping-pong and CPython's Pipe and Queue.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/report/report.h"
#include "bench/rows/two_process.h"
#include "base/futex.h"
#include "base/io_ring.h"
#include "ipc/connection.h"
#include "ipc/listener.h"
#include "ipc/queue.h"

namespace mproc::bench {
namespace {

// A `size`-byte message (16 by default, as CPython's row sends b"x" * 16) there and back. With a finite `timeout`
// every Recv has a deadline, so it waits through the I/O mode (base/io_ring.h); without one
// it is a plain blocking read.
void PipeRoundTrip(benchmark::State& state, PinCpus cpus,
                   absl::Duration timeout = absl::InfiniteDuration(), size_t size = 16) {
  absl::StatusOr<std::pair<Connection, Connection>> pair = Pipe();
  if (!pair.ok()) return state.SkipWithError("Pipe failed");
  ScopedPin pin(cpus.parent);
  pid_t pid = ForkPinnedChild(cpus.child, [&] {
    pair->first.Close();
    for (;;) {
      absl::StatusOr<std::string> m = pair->second.Recv<std::string>(timeout);
      if (!m.ok()) return 0;  // the parent closed its end
      if (!pair->second.Send(*m).ok()) return 1;
    }
  });
  pair->second.Close();
  const std::string payload(size, 'x');
  CpuMeter cpu({pid});
  for (auto _ : state) {
    if (!pair->first.Send(payload).ok()) return state.SkipWithError("Send failed");
    absl::StatusOr<std::string> back = pair->first.Recv<std::string>(timeout);
    if (!back.ok()) return state.SkipWithError("Recv failed");
    benchmark::DoNotOptimize(back);
  }
  cpu.Stop(state);
  pair->first.Close();
  ReapChild(pid);
}

// Takes one item per call with Get (QueueFromOneProducer's default consumer).
struct GetOne {
  bool operator()(Queue<int64_t>& q) {
    absl::StatusOr<int64_t> v = q.Get(absl::Seconds(10));
    benchmark::DoNotOptimize(v);
    return v.ok();
  }
};

// One producer process puts small ints with `put(q, from)` (a Put, or a PutMany of a batch
// starting at `from`; it returns how many it put, or -1) as fast as it can; this process
// consumes them with `take(q)`, one item per call (per item; false: failed).
// `cpus` pins the consumer (this process) and the producer; unpinned by default.
template <typename PutFn, typename TakeFn = GetOne>
void QueueFromOneProducer(benchmark::State& state, PutFn put, PinCpus cpus = {},
                          TakeFn take = {}) {
  absl::StatusOr<Queue<int64_t>> q = Queue<int64_t>::Create();
  if (!q.ok()) return state.SkipWithError("Queue::Create failed");
  SharedObject<std::atomic<int>> stop;
  ScopedPin pin(cpus.parent);
  const pid_t pid = ForkPinnedChild(cpus.child, [&] {
    for (int64_t i = 0; stop->load(std::memory_order_relaxed) == 0;) {
      const int64_t n = put(*q, i);
      if (n < 0) return 1;
      i += n;
    }
    return 0;
  });
  CpuMeter cpu({pid});
  for (auto _ : state) {
    if (!take(*q)) return state.SkipWithError("Get failed");
  }
  cpu.Stop(state);
  stop->store(1);
  DrainUntilExited(*q, pid);
}

// Puts one small int per Put (QueueOneToOne's producer).
int64_t PutOne(Queue<int64_t>& q, int64_t i) {
  absl::Status s = q.Put(i, absl::Milliseconds(100));
  if (s.ok()) return 1;
  return absl::IsDeadlineExceeded(s) ? 0 : -1;
}

// One producer process puts small ints one Put at a time.
void QueueOneToOne(benchmark::State& state, PinCpus cpus = {}) {
  QueueFromOneProducer(state, PutOne, cpus);
}

// As QueueOneToOne (pinned as `cpus`), with the consumer taking items by GetMany, up to 64
// per call (per item).
void QueueOneToOneGetMany(benchmark::State& state, PinCpus cpus = {}) {
  std::vector<int64_t> got;
  got.reserve(64);
  size_t next = 0;
  QueueFromOneProducer(state, PutOne, cpus, [&](Queue<int64_t>& q) {
    if (next == got.size()) {
      got.clear();
      next = 0;
      if (!q.GetMany(got, 64, absl::Seconds(10)).ok()) return false;
    }
    benchmark::DoNotOptimize(got[next++]);
    return true;
  });
}

// `producers` producer processes each put an equal share of a round of 2^16 small ints; this
// process gets them (per item) and starts the next round once it has every item of this one.
// So every producer's items count, however the queue serves them: a producer served slowly
// (one past the queue's rings, say) stretches each round instead of going unnoticed behind
// the fast ones, as it would if each producer put as fast as it could. CPython's
// cpython.queue.producers.N rows have the same shape.
void QueueProducerRounds(benchmark::State& state, int producers) {
  constexpr int64_t kRoundItems = 1 << 16;
  const int64_t quota = kRoundItems / producers;
  const int64_t round_items = quota * producers;
  absl::StatusOr<Queue<int64_t>> q = Queue<int64_t>::Create();
  if (!q.ok()) return state.SkipWithError("Queue::Create failed");
  SharedObject<std::atomic<uint32_t>> round;  // futex word: bumped to start a round
  SharedObject<std::atomic<int>> stop;
  std::vector<pid_t> pids;
  for (int p = 0; p < producers; ++p) {
    pids.push_back(ForkPinnedChild(-1, [&] {
      uint32_t seen = 0;
      while (stop->load(std::memory_order_acquire) == 0) {
        const uint32_t r = round->load(std::memory_order_acquire);
        if (r == seen) {
          FutexWait(round.get(), seen, Deadline::After(absl::Milliseconds(100)));
          continue;
        }
        seen = r;
        for (int64_t i = 0; i < quota && stop->load(std::memory_order_relaxed) == 0;) {
          absl::Status s = q->Put(i, absl::Milliseconds(100));
          if (s.ok()) {
            ++i;
          } else if (!absl::IsDeadlineExceeded(s)) {
            return 1;
          }
        }
      }
      return 0;
    }));
  }
  auto next_round = [&] {
    round->fetch_add(1, std::memory_order_release);
    FutexWake(round.get(), INT32_MAX);
  };
  CpuMeter cpu(pids);
  next_round();
  int64_t left = round_items;
  for (auto _ : state) {
    absl::StatusOr<int64_t> v = q->Get(absl::Seconds(10));
    if (!v.ok()) return state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(v);
    if (--left == 0) {
      left = round_items;
      next_round();
    }
  }
  cpu.Stop(state);
  stop->store(1, std::memory_order_release);
  next_round();
  for (pid_t pid : pids) DrainUntilExited(*q, pid);
}

// Runs a row body in I/O mode `mode` (base/io_ring.h), inherited by the forked children; a mode
// this kernel cannot give skips the row with the reason. The mode in force before is restored.
template <typename F>
void InIoMode(benchmark::State& state, IoMode mode, F body) {
  const IoMode before = ActiveIoMode();
  if (SetIoMode(mode) != mode) {
    SetIoMode(before);
    return SkipRow(state, std::string(IoModeName(mode)) + " is not available on this kernel");
  }
  body();
  SetIoMode(before);
}

// One producer process, PutMany in batches of 32 (one sendmmsg or io_uring submission each);
// this process gets item by item.
void QueueBatchedOneToOne(benchmark::State& state) {
  std::vector<int64_t> batch(32);
  QueueFromOneProducer(state, [&batch](Queue<int64_t>& q, int64_t from) -> int64_t {
    for (int64_t j = 0; j < 32; ++j) batch[j] = from + j;
    size_t put = 0;
    absl::Status s = q.PutMany(batch, absl::Milliseconds(100), &put);
    if (s.ok() || absl::IsDeadlineExceeded(s)) return static_cast<int64_t>(put);
    return -1;
  });
}

// Two producer processes and two consumers (a child and this process): items per second over
// both consumers. Each iteration ends when the two together took 1024 more items. Each consumer
// counts privately and the child publishes its count every 64 items, so the measurement adds
// no shared cache line per item.
void QueueTwoToTwo(benchmark::State& state) {
  constexpr int kPerIteration = 1024;
  struct Counters {
    std::atomic<int> stop{0};
    alignas(64) std::atomic<int64_t> child_taken{0};
  };
  absl::StatusOr<Queue<int64_t>> q = Queue<int64_t>::Create();
  if (!q.ok()) return state.SkipWithError("Queue::Create failed");
  SharedObject<Counters> c;
  std::vector<pid_t> pids;
  for (int p = 0; p < 2; ++p) {
    pids.push_back(ForkPinnedChild(-1, [&] {
      for (int64_t i = 0; c->stop.load(std::memory_order_relaxed) == 0; ++i) {
        absl::Status s = q->Put(i, absl::Milliseconds(100));
        if (!s.ok() && !absl::IsDeadlineExceeded(s)) return 1;
      }
      return 0;
    }));
  }
  pids.push_back(ForkPinnedChild(-1, [&] {
    int64_t mine = 0;
    while (c->stop.load(std::memory_order_relaxed) == 0) {
      if (q->Get(absl::Milliseconds(10)).ok() && ++mine % 64 == 0) {
        c->child_taken.store(mine, std::memory_order_relaxed);
      }
    }
    return 0;
  }));
  int64_t mine = 0;
  int64_t target = 0;
  CpuMeter cpu(pids);
  for (auto _ : state) {
    target += kPerIteration;
    while (mine + c->child_taken.load(std::memory_order_relaxed) < target) {
      if (q->Get(absl::Milliseconds(10)).ok()) ++mine;
    }
  }
  cpu.Stop(state);
  c->stop.store(1);
  for (pid_t pid : pids) DrainUntilExited(*q, pid);
  SetOpsPerIteration(state, kPerIteration);
}

// 1 MiB items: a producer process puts the same 1 MiB string; this process gets each into the
// same std::string (GetInto: a copying Get with the buffer reused, as memcpy's row).
void QueueOneMiB(benchmark::State& state) {
  absl::StatusOr<Queue<std::string>> q = Queue<std::string>::Create(4);
  if (!q.ok()) return state.SkipWithError("Queue::Create failed");
  SharedObject<std::atomic<int>> stop;
  pid_t pid = ForkPinnedChild(-1, [&] {
    const std::string item(1 << 20, 'q');
    while (stop->load(std::memory_order_relaxed) == 0) {
      absl::Status s = q->Put(item, absl::Milliseconds(100));
      if (!s.ok() && !absl::IsDeadlineExceeded(s)) return 1;
    }
    return 0;
  });
  std::string got;
  // Steady state: the producer's ring (8 MiB, allocated as first written) goes round twice
  // before timing, so --quick's few iterations do not measure its page faults.
  for (int i = 0; i < 16; ++i) {
    if (!q->GetInto(got, absl::Seconds(10)).ok()) return state.SkipWithError("warm-up Get failed");
  }
  CpuMeter cpu({pid});
  for (auto _ : state) {
    absl::Status s = q->GetInto(got, absl::Seconds(10));
    if (!s.ok() || got.size() != (1u << 20)) return state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(got);
  }
  cpu.Stop(state);
  stop->store(1);
  DrainUntilExited(*q, pid);
}

// Client() connect + mutual authentication against a Listener in a child (Unix socket, 32-byte
// key), then close: CPython's Listener/Client row.
void ListenerConnectAuth(benchmark::State& state) {
  char dir_template[] = "/tmp/mproc-bench-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return state.SkipWithError("mkdtemp failed");
  const std::string dir = dir_template;
  const std::string key(32, 'k');
  absl::StatusOr<Listener> l = Listener::Create(Address::Unix(dir + "/listener.sock"), key);
  if (!l.ok()) return state.SkipWithError("Listener::Create failed");
  pid_t pid = ForkPinnedChild(-1, [&] {
    for (;;) {
      absl::StatusOr<Connection> c = l->Accept(absl::Seconds(30));
      if (!c.ok() && !absl::IsUnauthenticated(c.status()) && !absl::IsOutOfRange(c.status())) {
        return 0;
      }
    }
  });
  const Address address = l->address();
  CpuMeter cpu({pid});
  for (auto _ : state) {
    absl::StatusOr<Connection> c = Client(address, key);
    if (!c.ok()) return state.SkipWithError("Client failed");
  }
  cpu.Stop(state);
  ReapChild(pid, /*kill=*/true);
  l->Close();
  ::rmdir(dir.c_str());
}

}  // namespace

MPROC_REPORT_ROWS(IpcRows) {
  AddPairRows("mproc.pipe.roundtrip", Section::kMproc,
              [](benchmark::State& st, PinCpus cpus) { PipeRoundTrip(st, cpus); })
      .Title("Pipe Send+Recv round trip, 16 B string, two processes")
      .PairBaselines({"kernel.socketpair_pingpong", "kernel.yield_pingpong",
                      "cpython.pipe.roundtrip"})
      .CrossCpuBaselines({"kernel.spin_pingpong.cross_cpu"});
  AddPairRows("mproc.pipe.roundtrip_4KiB", Section::kMproc,
              [](benchmark::State& st, PinCpus cpus) {
                PipeRoundTrip(st, cpus, absl::InfiniteDuration(), 4096);
              })
      .Title("Pipe Send+Recv round trip, 4 KiB string, two processes")
      .PairBaselines({"kernel.socketpair_pingpong", "cpython.pipe.roundtrip_4KiB"});
  AddRow("mproc.queue.1p1c", Section::kMproc, [](benchmark::State& st) { QueueOneToOne(st); })
      .Title("Queue<int64_t>, 1 producer process -> 1 consumer, per item")
      .Baselines({"kernel.pipe_64B_per_write", "cpython.queue.1p1c", "cpython.simplequeue.1p1c",
                  "boost.message_queue_64B"});
  // Pinned: the unpinned row is bimodal by where the scheduler puts the two sides.
  AddPairRows("mproc.queue.1p1c", Section::kMproc,
              [](benchmark::State& st, PinCpus cpus) { QueueOneToOne(st, cpus); })
      .Title("Queue<int64_t>, 1 producer process -> 1 consumer, per item, pinned")
      .PerItem()
      .PairBaselines({"kernel.spsc_ring_64B", "cpython.queue.1p1c"});
  AddPairRows("mproc.queue.1p1c_getmany", Section::kMproc,
              [](benchmark::State& st, PinCpus cpus) { QueueOneToOneGetMany(st, cpus); })
      .Title("Queue<int64_t>, 1 producer process -> 1 consumer taking by GetMany(64), per item")
      .PerItem()
      .PairBaselines({"mproc.queue.1p1c", "kernel.spsc_ring_64B"});
  AddRow("mproc.queue.2p2c", Section::kMproc, QueueTwoToTwo)
      .Title("Queue<int64_t>, 2 producer processes -> 2 consumers, per item")
      .PerItem()
      .Baselines({"mproc.queue.1p1c", "cpython.queue.1p1c"});
  // Scaling: rounds of 2^16 items split evenly between the producers (QueueProducerRounds).
  for (int n : {1, 4, 16, 32, 64}) {
    const std::string id = "mproc.queue.producers." + std::to_string(n);
    std::vector<std::string> baselines;
    if (n != 16) baselines.push_back("mproc.queue.producers.16");
    if (n == 1 || n == 16 || n == 64) baselines.push_back("cpython.queue.producers." + std::to_string(n));
    AddRow(id, Section::kMproc, [n](benchmark::State& st) { QueueProducerRounds(st, n); })
        .Title("Queue<int64_t>, " + std::to_string(n) +
               " producer processes -> 1 consumer, rounds of 2^16 items shared evenly, per item")
        .Baselines(baselines);
  }
  AddRow("mproc.queue.1MiB", Section::kMproc, QueueOneMiB)
      .Title("Queue<std::string> of 1 MiB items, 1 producer process -> 1 consumer, per item")
      .Baselines({"kernel.memcpy_1MiB"});
  AddRow("mproc.listener.connect_auth", Section::kMproc, ListenerConnectAuth)
      .Title("Client() connect + mutual authkey handshake, Unix socket")
      .Baselines({"cpython.listener.connect_auth"});

  // Each workload in each I/O mode (base/io_ring.h). Plain is the default; the uring rows are
  // compared with it.
  for (IoMode mode : {IoMode::kPlain, IoMode::kUringBasic, IoMode::kUring}) {
    const std::string m = IoModeName(mode);
    const bool plain = mode == IoMode::kPlain;
    auto pipe = AddPairRows("mproc.pipe.roundtrip_deadline." + m, Section::kMproc,
                            [mode](benchmark::State& st, PinCpus cpus) {
                              InIoMode(st, mode, [&] { PipeRoundTrip(st, cpus, absl::Seconds(30)); });
                            });
    pipe.Title("Pipe round trip, 16 B, Recv with a deadline, I/O mode " + m);
    pipe.PairBaselines(plain ? std::vector<std::string>{"kernel.socketpair_pingpong"}
                             : std::vector<std::string>{"mproc.pipe.roundtrip_deadline.plain"});
    AddRow("mproc.queue.1p1c." + m, Section::kMproc,
           [mode](benchmark::State& st) { InIoMode(st, mode, [&] { QueueOneToOne(st); }); })
        .Title("Queue<int64_t> 1 -> 1, per item, I/O mode " + m)
        .PerItem()
        .Baselines({plain ? "cpython.queue.1p1c" : "mproc.queue.1p1c.plain"});
    AddRow("mproc.queue.putmany32." + m, Section::kMproc,
           [mode](benchmark::State& st) { InIoMode(st, mode, [&] { QueueBatchedOneToOne(st); }); })
        .Title("Queue<int64_t> 1 -> 1, PutMany batches of 32, per item, I/O mode " + m)
        .PerItem()
        .Baselines({plain ? "mproc.queue.1p1c.plain" : "mproc.queue.putmany32.plain",
                    "cpython.queue.1p1c", "boost.message_queue_64B"});
  }
}

}  // namespace mproc::bench
