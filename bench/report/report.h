// bench/report/report.h — how a layer adds rows to mproc's benchmark report.
//
// The report (bazel run -c opt //bench:report) measures, in one run, the kernel's limits,
// CPython's multiprocessing (bench/peers/cpython_mp.py), Boost.Interprocess, and mproc's own
// primitives, and prints each mproc row's ratio to the baselines it names — computed from this
// run only; a baseline missing from the run prints n/a, never a stored figure.
//
// A layer adds its rows with one registration block in a cc_library that the report links
// (alwayslink = True):
//
//   MPROC_REPORT_ROWS(SyncRows) {
//     AddRow("mproc.sync.lock", Section::kMproc, BM_LockUncontended)
//         .Title("Lock acquire+release, uncontended")
//         .Baselines({"kernel.futex_cas_lock", "cpython.lock", "boost.interprocess_mutex"});
//     AddPairRows("mproc.sync.event_pingpong", Section::kMproc, BM_EventPingPong)
//         .Title("Event hand-off round trip")
//         .PairBaselines({"kernel.futex_pingpong"});   // .same_cpu/.cross_cpu matched
//   }
//
// A row is a Google Benchmark function. Each benchmark iteration is one operation unless the
// function calls SetOpsPerIteration(state, n) (e.g. n messages moved per iteration); the
// report's figure is nanoseconds of real time per operation, one sample per repetition.
// Two-process latency rows use AddPairRows: the function is called with the CPUs to pin the
// parent (this thread) and the child to; the report registers a .same_cpu and a .cross_cpu
// variant and skips the cross-CPU one when only one CPU is allowed. A function that cannot run
// here calls SkipRow(state, "reason").

#ifndef MPROC_BENCH_REPORT_REPORT_H_
#define MPROC_BENCH_REPORT_REPORT_H_

#include <functional>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"

namespace mproc::bench {

enum class Section { kKernel, kCPython, kPeer, kMproc };

// Where a two-process row's sides run. parent/child are CPU numbers.
struct PinCpus {
  int parent = -1;
  int child = -1;
  bool same() const { return parent == child; }
};

struct RowSpec {
  std::string id;
  std::string title;
  Section section = Section::kKernel;
  std::vector<std::string> baselines;
  double bytes_per_op = 0;  // > 0: the table also prints GB/s
  bool per_item = false;    // true: the table also prints items/s (messages, tasks)
  std::string note;
};

class RowBuilder {
 public:
  explicit RowBuilder(std::vector<RowSpec*> specs) : specs_(std::move(specs)) {}
  RowBuilder& Title(const std::string& t);
  // Baseline row ids, used verbatim for every variant.
  RowBuilder& Baselines(const std::vector<std::string>& ids);
  // For pair rows: each id gets the variant's suffix (.same_cpu / .cross_cpu) appended.
  RowBuilder& PairBaselines(const std::vector<std::string>& ids);
  // For pair rows: baselines for the .cross_cpu variant only (e.g. a spinning peer).
  RowBuilder& CrossCpuBaselines(const std::vector<std::string>& ids);
  RowBuilder& BytesPerOp(double bytes);
  RowBuilder& PerItem();
  RowBuilder& Note(const std::string& n);

 private:
  std::vector<RowSpec*> specs_;
};

// Registers one row measured by `fn`.
RowBuilder AddRow(const std::string& id, Section section,
                  std::function<void(benchmark::State&)> fn);

// Registers `id`.same_cpu and `id`.cross_cpu, measured by fn(state, cpus).
RowBuilder AddPairRows(const std::string& id, Section section,
                       std::function<void(benchmark::State&, PinCpus)> fn);

// Registers only `id`.cross_cpu (skipped when one CPU is allowed): for exchanges that make no
// sense on one CPU, such as two sides that both busy-poll.
RowBuilder AddCrossCpuRow(const std::string& id, Section section,
                          std::function<void(benchmark::State&, PinCpus)> fn);

// Marks that each benchmark iteration performs `n` operations.
void SetOpsPerIteration(benchmark::State& state, double n);

// Skips the row with a reason (printed in the table and JSON).
void SkipRow(benchmark::State& state, const std::string& reason);

// True when the report runs with --quick: rows may shrink their setup (never their
// correctness).
bool QuickMode();

// The path of the running report binary, for rows that re-execute it.
const std::string& SelfExe();

// Pins the calling thread to `cpu` (or leaves it alone when cpu < 0) and restores the
// previous mask when destroyed.
class ScopedPin {
 public:
  explicit ScopedPin(int cpu);
  ~ScopedPin();
  ScopedPin(const ScopedPin&) = delete;
  ScopedPin& operator=(const ScopedPin&) = delete;

 private:
  bool active_ = false;
  unsigned char saved_[128];  // a cpu_set_t
};

// Pins the calling thread (e.g. in a freshly forked child) to `cpu`; returns 0 or -errno.
int PinSelf(int cpu);

namespace report_internal {
using Registrar = void (*)();
int AddRegistrar(Registrar r);
}  // namespace report_internal

}  // namespace mproc::bench

// Defines a function, run once when the report starts, that registers rows.
#define MPROC_REPORT_ROWS(name)                                                           \
  static void name##_RegisterRows();                                                      \
  [[maybe_unused]] static const int name##_registered =                                   \
      ::mproc::bench::report_internal::AddRegistrar(&name##_RegisterRows);                \
  static void name##_RegisterRows()

#endif  // MPROC_BENCH_REPORT_REPORT_H_
