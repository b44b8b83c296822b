// bench/rows/two_process.h — helpers for rows that time an exchange between two processes.
#ifndef MPROC_BENCH_ROWS_TWO_PROCESS_H_
#define MPROC_BENCH_ROWS_TWO_PROCESS_H_

#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <vector>

#include "absl/time/time.h"
#include "base/fork_child.h"
#include "benchmark/benchmark.h"

namespace mproc::bench {

// Raw fork + _exit + waitpid per iteration: the kernel's floor for creating a process of
// this one's size (kernel.fork_exit_wait, and again just before the Process rows).
void ForkExitWait(benchmark::State& state);

// ForkChild (base/fork_child.h) of a child that first pins itself to `cpu` (when >= 0).
pid_t ForkPinnedChild(int cpu, const std::function<int()>& body);

// Waits for `pid`; returns its exit code, or 128 + signal. Kills it first when `kill` is set.
using ::mproc::ReapChild;

// The CPU time this process (every thread) and its `children` spend while a row's loop runs,
// so that a row whose sides spin shows what it burns (a spin is not free):
//   CpuMeter cpu({pid});         // right before `for (auto _ : state)`
//   for (auto _ : state) { ... }
//   cpu.Stop(state);             // right after it, while the children still run
// The report prints it per operation beside the row's time ("cpu/op"), in the table, the JSON
// and the chart. Children are read through their CPU-time clocks (clock_getcpuclockid).
class CpuMeter {
 public:
  explicit CpuMeter(std::vector<pid_t> children);
  void Stop(benchmark::State& state);

 private:
  std::vector<clockid_t> clocks_;
  std::vector<int64_t> start_ns_;
};

// Gets (and drops) items from `q` until the producer `pid` has exited: a producer blocked on
// a full queue must be able to finish. One that is still there after 30 s is killed.
template <typename Q>
void DrainUntilExited(Q& q, pid_t pid) {
  for (int i = 0;; ++i) {
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) return;
    if (i == 3000) {
      ReapChild(pid, /*kill=*/true);
      return;
    }
    (void)q.Get(absl::Milliseconds(10));
  }
}

// Reads every byte of `p` (n a multiple of 8): the sum of its 64-bit words. The read-speed
// rows (kernel.read_64MiB and the SharedBytes reads) all use it.
inline uint64_t SumWords(const void* p, size_t n) {
  const auto* w = static_cast<const uint64_t*>(p);
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i + 4 <= n / 8; i += 4) {
    a += w[i];
    b += w[i + 1];
    c += w[i + 2];
    d += w[i + 3];
  }
  return a + b + c + d;
}

// An object of type T in anonymous MAP_SHARED memory, visible to forked children.
template <typename T>
class SharedObject {
 public:
  SharedObject() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    obj_ = p == MAP_FAILED ? nullptr : new (p) T();
  }
  ~SharedObject() {
    if (obj_) {
      obj_->~T();
      ::munmap(obj_, sizeof(T));
    }
  }
  SharedObject(const SharedObject&) = delete;
  SharedObject& operator=(const SharedObject&) = delete;
  T* get() const { return obj_; }
  T* operator->() const { return obj_; }
  bool ok() const { return obj_ != nullptr; }

 private:
  T* obj_ = nullptr;
};

}  // namespace mproc::bench

#endif  // MPROC_BENCH_ROWS_TWO_PROCESS_H_
