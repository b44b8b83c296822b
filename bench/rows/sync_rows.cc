// sync/ and shm/: locks, hand-offs, Value, dead-owner recovery and segment creation, against
// the raw futex/pthread/Boost rows and CPython's multiprocessing.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "base/deadline.h"
#include "bench/report/report.h"
#include "bench/rows/two_process.h"
#include "shm/segment.h"
#include "shm/shared_memory.h"
#include "sync/event.h"
#include "sync/lock.h"
#include "sync/semaphore.h"
#include "sync/value.h"

namespace mproc::bench {
namespace {

void LockUncontended(benchmark::State& state) {
  absl::StatusOr<Lock> lock = Lock::Create();
  if (!lock.ok()) return state.SkipWithError("Lock::Create failed");
  for (auto _ : state) {
    (void)lock->Acquire();
    lock->Release().IgnoreError();
  }
}

void LockContended(benchmark::State& state) {
  absl::StatusOr<Lock> lock = Lock::Create();
  absl::StatusOr<Value<int32_t>> stop = Value<int32_t>::Create(0, LockMode::kNone);
  if (!lock.ok() || !stop.ok()) return state.SkipWithError("create failed");
  pid_t pid = ForkPinnedChild(-1, [&] {
    while (stop->Load() == 0) {
      for (int i = 0; i < 64; ++i) {
        (void)lock->Acquire();
        lock->Release().IgnoreError();
      }
    }
    return 0;
  });
  CpuMeter cpu({pid});
  for (auto _ : state) {
    (void)lock->Acquire();
    lock->Release().IgnoreError();
  }
  cpu.Stop(state);
  stop->Store(1);
  ReapChild(pid);
}

void ValueIncrement(benchmark::State& state) {
  absl::StatusOr<Value<int32_t>> v = Value<int32_t>::Create(0);
  if (!v.ok()) return state.SkipWithError("create failed");
  RLock& lock = v->GetLock();
  for (auto _ : state) {
    (void)lock.Acquire();
    v->Set(v->Get() + 1);
    lock.Release().IgnoreError();
  }
}

void EventPingPong(benchmark::State& state, PinCpus cpus) {
  absl::StatusOr<Event> ping = Event::Create(), pong = Event::Create();
  if (!ping.ok() || !pong.ok()) return state.SkipWithError("create failed");
  absl::StatusOr<Value<int32_t>> stop = Value<int32_t>::Create(0, LockMode::kNone);
  ScopedPin pin(cpus.parent);
  pid_t pid = ForkPinnedChild(cpus.child, [&] {
    for (;;) {
      ping->Wait();
      ping->Clear();
      if (stop->Load()) return 0;
      pong->Set();
    }
  });
  CpuMeter cpu({pid});
  for (auto _ : state) {
    ping->Set();
    pong->Wait();
    pong->Clear();
  }
  cpu.Stop(state);
  stop->Store(1);
  ping->Set();
  ReapChild(pid);
}

void SemaphorePingPong(benchmark::State& state, PinCpus cpus) {
  absl::StatusOr<Semaphore> a = Semaphore::Create(0), b = Semaphore::Create(0);
  absl::StatusOr<Value<int32_t>> stop = Value<int32_t>::Create(0, LockMode::kNone);
  if (!a.ok() || !b.ok() || !stop.ok()) return state.SkipWithError("create failed");
  ScopedPin pin(cpus.parent);
  pid_t pid = ForkPinnedChild(cpus.child, [&] {
    for (;;) {
      a->Acquire();
      if (stop->Load()) return 0;
      b->Release().IgnoreError();
    }
  });
  CpuMeter cpu({pid});
  for (auto _ : state) {
    a->Release().IgnoreError();
    b->Acquire();
  }
  cpu.Stop(state);
  stop->Store(1);
  a->Release().IgnoreError();
  ReapChild(pid);
}

// Kill the holder, time until a waiter holds the lock (the waiter notices within its 20 ms
// owner-check slice).
void LockRecovery(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    absl::StatusOr<Lock> lock = Lock::Create();
    absl::StatusOr<Value<int32_t>> held = Value<int32_t>::Create(0, LockMode::kNone);
    pid_t pid = ForkPinnedChild(-1, [&] {
      (void)lock->Acquire();
      held->Store(1);
      ::pause();
      return 0;
    });
    while (held->Load() == 0) ::usleep(100);
    ::kill(pid, SIGKILL);
    state.ResumeTiming();
    AcquireResult r = lock->Acquire(absl::Seconds(30));
    state.PauseTiming();
    if (!r.previous_owner_died()) state.SkipWithError("recovery not reported");
    lock->Release().IgnoreError();
    ReapChild(pid);
    state.ResumeTiming();
  }
}

void SegmentCycle(benchmark::State& state, Segment::Reserve reserve) {
  for (auto _ : state) {
    absl::StatusOr<Segment> s = Segment::Create(1 << 20, "bench", reserve);
    if (!s.ok()) return state.SkipWithError("Segment::Create failed");
    absl::StatusOr<Mapping> m = s->Map();
    benchmark::DoNotOptimize(m);
  }
}

// CPython's row does the same: SharedMemory(create=True, size=1 MiB), close(), unlink().
void NamedSharedMemoryCycle(benchmark::State& state) {
  for (auto _ : state) {
    absl::StatusOr<SharedMemory> s = SharedMemory::Create(1 << 20);
    if (!s.ok()) return state.SkipWithError("SharedMemory::Create failed");
    s->Close();
    if (!s->Unlink().ok()) return state.SkipWithError("SharedMemory::Unlink failed");
  }
}

// Objects made and kept, 1000 at a time (then dropped together): what a program that holds
// many locks or values pays per object. They come from shared arenas (many per memfd).
template <typename Make>
void CreateKept(benchmark::State& state, Make make) {
  std::vector<std::remove_cvref_t<decltype(make().value())>> held;
  held.reserve(1000);
  for (auto _ : state) {
    auto made = make();
    if (!made.ok()) return state.SkipWithError("Create failed");
    held.push_back(*std::move(made));
    if (held.size() == 1000) held.clear();
  }
}

// n Locks and n Values made and all held at once, then dropped: per object (a Lock and a
// Value count as two). Bounded by memory, not descriptors.
void HoldMany(benchmark::State& state, int n) {
  std::vector<Lock> locks;
  std::vector<Value<int32_t>> values;
  locks.reserve(n);
  values.reserve(n);
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) {
      absl::StatusOr<Lock> l = Lock::Create();
      absl::StatusOr<Value<int32_t>> v = Value<int32_t>::Create(0);
      if (!l.ok() || !v.ok()) return state.SkipWithError("Create failed");
      locks.push_back(*std::move(l));
      values.push_back(*std::move(v));
    }
    locks.clear();
    values.clear();
  }
  SetOpsPerIteration(state, 2.0 * n);
}

// What one object cost when each had a segment of its own: a sealed memfd, mapped, and (here)
// unmapped and closed at once.
void MemfdObject(benchmark::State& state) {
  for (auto _ : state) {
    absl::StatusOr<Segment> seg = Segment::Create(4096, "bench-object");
    if (!seg.ok()) return state.SkipWithError("Segment::Create failed");
    absl::StatusOr<Mapping> m = seg->Map();
    if (!m.ok()) return state.SkipWithError("Map failed");
    benchmark::DoNotOptimize(m->data());
  }
}

}  // namespace

MPROC_REPORT_ROWS(SyncRows) {
  AddRow("kernel.memfd_object", Section::kKernel, MemfdObject)
      .Title("a sealed 4 KiB memfd created, mapped, unmapped and closed (one object, one segment)");
  AddRow("mproc.sync.lock_create", Section::kMproc,
         [](benchmark::State& s) { CreateKept(s, [] { return Lock::Create(); }); })
      .Title("Lock::Create, kept 1000 at a time (arena slots)")
      .Baselines({"kernel.memfd_object", "cpython.lock_create"});
  for (int n : {1000, 10'000, 100'000}) {
    const std::string id = "mproc.sync.hold_locks_values." + std::to_string(n);
    AddRow(id, Section::kMproc, [n](benchmark::State& s) { HoldMany(s, n); })
        .Title(std::to_string(n) + " Locks and " + std::to_string(n) +
               " Values made and held at once, then dropped; per object")
        .PerItem()
        .Baselines(n == 1000 ? std::vector<std::string>{"cpython.hold_locks_values.1000"}
                   : n == 10'000 ? std::vector<std::string>{"cpython.hold_locks_values.10000"}
                                 : std::vector<std::string>{"mproc.sync.hold_locks_values.1000"});
  }
  AddRow("mproc.sync.value_create", Section::kMproc,
         [](benchmark::State& s) { CreateKept(s, [] { return Value<int64_t>::Create(0); }); })
      .Title("Value<int64_t>::Create, kept 1000 at a time (arena slots)")
      .Baselines({"kernel.memfd_object", "cpython.value_create"});
  AddRow("mproc.sync.lock", Section::kMproc, LockUncontended)
      .Title("Lock acquire+release, uncontended")
      .Baselines({"kernel.futex_cas_lock", "kernel.pthread_mutex_pshared", "boost.interprocess_mutex",
                  "cpython.lock"});
  AddRow("mproc.sync.lock_contended", Section::kMproc, LockContended)
      .Title("Lock acquire+release, 2 processes contending")
      .Baselines({"kernel.pthread_mutex_contended", "kernel.futex_cas_lock_contended"});
  AddRow("mproc.sync.value_incr", Section::kMproc, ValueIncrement)
      .Title("Value<int> += 1 under its RLock")
      .Baselines({"kernel.futex_cas_lock_incr", "cpython.value.incr"});
  // Across CPUs these hand-offs spin: against the raw spin ping-pong (like with like), with
  // the CPU both sides burn in the cpu/op column, as well as against a blocking futex.
  AddPairRows("mproc.sync.event_pingpong", Section::kMproc, EventPingPong)
      .Title("Event hand-off round trip between two processes")
      .PairBaselines({"kernel.futex_pingpong"})
      .CrossCpuBaselines({"kernel.spin_pingpong.cross_cpu"});
  AddPairRows("mproc.sync.semaphore_pingpong", Section::kMproc, SemaphorePingPong)
      .Title("Semaphore hand-off round trip between two processes")
      .PairBaselines({"kernel.futex_pingpong"})
      .CrossCpuBaselines({"kernel.spin_pingpong.cross_cpu"});
  AddRow("mproc.sync.lock_recovery", Section::kMproc, LockRecovery)
      .Title("dead-owner recovery: SIGKILL the holder, until a waiter holds the lock");
  AddRow("mproc.shm.segment_1mib_reserved", Section::kMproc,
         [](benchmark::State& s) { SegmentCycle(s, Segment::Reserve::kEager); })
      .Title("anonymous segment 1 MiB create+map+unmap+close, Reserve::kEager (fallocate)")
      .Baselines({"cpython.shm.create"});
  AddRow("mproc.shm.segment_1mib", Section::kMproc,
         [](benchmark::State& s) { SegmentCycle(s, Segment::Reserve::kLazy); })
      .Title("anonymous segment 1 MiB create+map+unmap+close, default lazy pages")
      .Baselines({"cpython.shm.create"});
  AddRow("mproc.shm.named_1mib", Section::kMproc, NamedSharedMemoryCycle)
      .Title("named SharedMemory 1 MiB create+close+unlink (random name, /dev/shm)")
      .Baselines({"cpython.shm.create"});
}

}  // namespace mproc::bench
