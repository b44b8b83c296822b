// pool/: the same jobs as CPython's Pool rows (square over ints), per item or per call, with
// Pool(2) under the default start method (forkserver), created before timing.

#include <memory>
#include <string>
#include <vector>

#include "bench/report/report.h"
#include "pool/executor.h"
#include "pool/pool.h"

namespace mproc::bench {
namespace {

int64_t Square(int64_t x) { return x * x; }

std::unique_ptr<Pool> WarmPool(benchmark::State& state, int processes = 2) {
  Pool::Options o;
  o.processes = processes;
  absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Create(o);
  if (!pool.ok()) {
    state.SkipWithError("Pool::Create failed");
    return nullptr;
  }
  std::vector<int64_t> warm(1000);
  if (!(*pool)->Map(Square, warm).ok()) {
    state.SkipWithError("warm-up map failed");
    return nullptr;
  }
  return *std::move(pool);
}

void PoolCreate(benchmark::State& state) {
  for (auto _ : state) {
    Pool::Options o;
    o.processes = 2;
    absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Create(o);
    if (!pool.ok() || !(*pool)->Close().ok() || !(*pool)->Join().ok()) {
      return state.SkipWithError("Pool create/close/join failed");
    }
  }
}

// Pool(n) create + close + join, per worker: start-up must not grow faster than the workers.
void PoolCreatePerWorker(benchmark::State& state, int n) {
  for (auto _ : state) {
    Pool::Options o;
    o.processes = n;
    absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Create(o);
    if (!pool.ok() || !(*pool)->Close().ok() || !(*pool)->Join().ok()) {
      return state.SkipWithError("Pool create/close/join failed");
    }
  }
  SetOpsPerIteration(state, n);
}

void PoolMap(benchmark::State& state, size_t n, size_t chunksize) {
  std::unique_ptr<Pool> pool = WarmPool(state);
  if (!pool) return;
  std::vector<int64_t> in(n);
  for (size_t i = 0; i < n; ++i) in[i] = static_cast<int64_t>(i);
  for (auto _ : state) {
    absl::StatusOr<std::vector<int64_t>> out = pool->Map(Square, in, chunksize);
    if (!out.ok() || out->size() != n) return state.SkipWithError("map failed");
  }
  SetOpsPerIteration(state, static_cast<double>(n));
}

// Pool(workers).Map of `n` ints in chunks of 64: how assignment and collection scale with the
// number of workers (on this machine's CPUs, so more workers cannot run faster; they must not
// run much slower).
void PoolMapWorkers(benchmark::State& state, int workers, size_t n) {
  std::unique_ptr<Pool> pool = WarmPool(state, workers);
  if (!pool) return;
  std::vector<int64_t> in(n);
  for (size_t i = 0; i < n; ++i) in[i] = static_cast<int64_t>(i);
  for (auto _ : state) {
    absl::StatusOr<std::vector<int64_t>> out = pool->Map(Square, in, 64);
    if (!out.ok() || out->size() != n || (*out)[n - 1] != Square(in[n - 1])) {
      return state.SkipWithError("map failed");
    }
  }
  SetOpsPerIteration(state, static_cast<double>(n));
}

void PoolApply(benchmark::State& state) {
  std::unique_ptr<Pool> pool = WarmPool(state);
  if (!pool) return;
  for (auto _ : state) {
    absl::StatusOr<int64_t> v = pool->Apply(Square, int64_t{3});
    if (!v.ok()) return state.SkipWithError("apply failed");
  }
}

void PoolApplyAsync(benchmark::State& state) {
  std::unique_ptr<Pool> pool = WarmPool(state);
  if (!pool) return;
  const int n = QuickMode() ? 500 : 2000;
  std::vector<AsyncResult<int64_t>> results;
  for (auto _ : state) {
    results.clear();
    for (int i = 0; i < n; ++i) results.push_back(pool->ApplyAsync(Square, int64_t{i}));
    for (auto& r : results) {
      if (!r.Get().ok()) return state.SkipWithError("apply_async failed");
    }
  }
  SetOpsPerIteration(state, n);
}

// ProcessPoolExecutor(2): Submit then Result, one at a time.
void ExecutorSubmit(benchmark::State& state) {
  ExecutorOptions o;
  o.max_workers = 2;
  absl::StatusOr<std::unique_ptr<ProcessPoolExecutor>> ex = ProcessPoolExecutor::Create(o);
  if (!ex.ok()) return state.SkipWithError("ProcessPoolExecutor::Create failed");
  for (int i = 0; i < 200; ++i) {
    if (!(*ex)->Submit(Square, int64_t{3}).Result().ok()) {
      return state.SkipWithError("warm-up failed");
    }
  }
  for (auto _ : state) {
    absl::StatusOr<int64_t> v = (*ex)->Submit(Square, int64_t{3}).Result();
    if (!v.ok()) return state.SkipWithError("submit failed");
  }
  (void)(*ex)->Shutdown(true, false);
}

// About 1 ms of arithmetic (a xorshift walk), so the work, not the messaging, dominates.
int64_t Burn(int64_t seed) {
  uint64_t x = static_cast<uint64_t>(seed) * 2654435761u + 1;
  for (int i = 0; i < 700'000; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return static_cast<int64_t>(x & 0xffff);
}

// The CPU-bound scaling rows: 40 tasks of ~1 ms, chunksize 1, on `workers` workers; per item.
// While they run, the parent sleeps in the result wait (it does not spin).
void PoolCpuBound(benchmark::State& state, int workers) {
  Pool::Options o;
  o.processes = workers;
  absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Create(o);
  if (!pool.ok()) return state.SkipWithError("Pool::Create failed");
  std::vector<int64_t> in(40);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int64_t>(i);
  if (!(*pool)->Map(Burn, in, 1).ok()) return state.SkipWithError("warm-up failed");
  for (auto _ : state) {
    absl::StatusOr<std::vector<int64_t>> out = (*pool)->Map(Burn, in, 1);
    if (!out.ok()) return state.SkipWithError("map failed");
  }
  SetOpsPerIteration(state, static_cast<double>(in.size()));
}

}  // namespace

MPROC_REPORT_ROWS(PoolRows) {
  AddRow("mproc.pool.create", Section::kMproc, PoolCreate)
      .Title("Pool(2) create + close + join (forkserver)")
      .Baselines({"cpython.pool.create"});
  for (int n : {2, 8, 32, 64}) {
    AddRow("mproc.pool.create_per_worker." + std::to_string(n), Section::kMproc,
           [n](benchmark::State& s) { PoolCreatePerWorker(s, n); })
        .Title("Pool(" + std::to_string(n) + ") create + close + join (forkserver), per worker")
        .PerItem()
        .Baselines(n == 2 ? std::vector<std::string>{}
                          : std::vector<std::string>{"mproc.pool.create_per_worker.2"});
  }
  for (int n : {2, 8, 32, 64}) {
    AddRow("mproc.pool.map_workers." + std::to_string(n), Section::kMproc,
           [n](benchmark::State& s) { PoolMapWorkers(s, n, QuickMode() ? 20'000 : 200'000); })
        .Title("Pool(" + std::to_string(n) +
               ").Map square over 2*10^5 ints, chunksize 64, per item")
        .PerItem()
        .Baselines(n == 2 ? std::vector<std::string>{}
                          : std::vector<std::string>{"mproc.pool.map_workers.2"});
  }
  AddRow("mproc.pool.map_default", Section::kMproc,
         [](benchmark::State& s) { PoolMap(s, QuickMode() ? 100'000 : 1'000'000, 0); })
      .Title("Pool(2).Map square over 10^6 ints, automatic chunksize, per item")
      .PerItem()
      .Baselines({"cpython.pool.map_default"});
  AddRow("mproc.pool.map_chunk1", Section::kMproc,
         [](benchmark::State& s) { PoolMap(s, QuickMode() ? 2'000 : 20'000, 1); })
      .Title("Pool(2).Map square over 2*10^4 ints, chunksize 1, per item")
      .PerItem()
      .Baselines({"cpython.pool.map_chunk1"});
  AddRow("mproc.pool.apply", Section::kMproc, PoolApply)
      .Title("Pool.Apply, one synchronous round trip")
      .Baselines({"cpython.pool.apply"});
  AddRow("mproc.pool.apply_async", Section::kMproc, PoolApplyAsync)
      .Title("Pool.ApplyAsync, 2000 submitted then collected, per call")
      .PerItem()
      .Baselines({"cpython.pool.apply_async"});
  AddRow("mproc.executor.submit", Section::kMproc, ExecutorSubmit)
      .Title("ProcessPoolExecutor(2) Submit().Result(), one at a time")
      .Baselines({"cpython.executor.submit"});
  AddRow("mproc.pool.cpu_bound.1_worker", Section::kMproc,
         [](benchmark::State& s) { PoolCpuBound(s, 1); })
      .Title("Pool(1).Map of ~1 ms CPU-bound tasks, chunksize 1, per item")
      .PerItem();
  AddRow("mproc.pool.cpu_bound.2_workers", Section::kMproc,
         [](benchmark::State& s) { PoolCpuBound(s, 2); })
      .Title("Pool(2).Map of ~1 ms CPU-bound tasks, chunksize 1, per item (2 workers vs 1)")
      .PerItem()
      .Baselines({"mproc.pool.cpu_bound.1_worker"});
}

}  // namespace mproc::bench
