// The kernel's limits: what any IPC library on this machine can at best approach. Every
// mproc row names one or more of these as its baseline. Measured in the same statically linked
// binary as the mproc rows, so loader and binary-size effects are shared.

#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "base/clone3.h"
#include "base/deadline.h"
#include "base/features.h"
#include "base/futex.h"
#include "base/syscall.h"
#include "bench/report/report.h"
#include "bench/rows/two_process.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char** environ;

namespace mproc::bench {
namespace {

// ---------------------------------------------------------------- ping-pongs

// One byte there and back over two pipes (or one socketpair), blocking reads.
void PingPongFds(benchmark::State& state, PinCpus cpus, bool socketpair) {
  int to_child[2], to_parent[2];
  if (socketpair) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      state.SkipWithError("socketpair failed");
      return;
    }
    to_child[0] = sv[1];
    to_child[1] = sv[0];
    to_parent[0] = sv[0];
    to_parent[1] = sv[1];
  } else if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(to_parent, O_CLOEXEC) != 0) {
    state.SkipWithError("pipe2 failed");
    return;
  }
  ScopedPin pin(cpus.parent);
  pid_t pid = ForkPinnedChild(cpus.child, [&] {
    if (!socketpair) {
      ::close(to_child[1]);  // or the parent's close would never reach us as EOF
      ::close(to_parent[0]);
    }
    char c;
    for (;;) {
      if (::read(to_child[0], &c, 1) != 1) return 0;
      if (::write(to_parent[1], &c, 1) != 1) return 1;
    }
  });
  const int parent_read = to_parent[0], parent_write = to_child[1];
  if (!socketpair) {
    ::close(to_child[0]);
    ::close(to_parent[1]);
  }
  char c = 'x';
  CpuMeter cpu({pid});
  for (auto _ : state) {
    if (::write(parent_write, &c, 1) != 1 || ::read(parent_read, &c, 1) != 1) {
      state.SkipWithError("ping-pong broke");
      break;
    }
  }
  cpu.Stop(state);
  if (socketpair) {
    ::shutdown(parent_write, SHUT_RDWR);
    ::close(to_child[0]);
    ::close(to_child[1]);
  } else {
    ::close(parent_write);
    ::close(parent_read);
  }
  ReapChild(pid);
}

// A request of `req` bytes and a reply of `reply` bytes over an AF_UNIX stream socketpair
// between two processes, one blocking write and read each way: the floor of any
// request/reply server over the same sockets (the Manager's calls are such requests).
void UnixRequestReply(benchmark::State& state, PinCpus cpus, size_t req, size_t reply) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return state.SkipWithError("socketpair failed");
  }
  ScopedPin pin(cpus.parent);
  pid_t pid = ForkPinnedChild(cpus.child, [&] {
    ::close(sv[0]);
    std::vector<char> in(req), out(reply, 'r');
    for (;;) {
      if (ReadExact(sv[1], in.data(), in.size(), Deadline::Infinite(), "req").ok() == false) return 0;
      if (!WriteAll(sv[1], out.data(), out.size(), Deadline::Infinite(), "reply").ok()) return 1;
    }
  });
  ::close(sv[1]);
  std::vector<char> out(req, 'q'), in(reply);
  CpuMeter cpu({pid});
  for (auto _ : state) {
    if (!WriteAll(sv[0], out.data(), out.size(), Deadline::Infinite(), "req").ok() ||
        !ReadExact(sv[0], in.data(), in.size(), Deadline::Infinite(), "reply").ok()) {
      return state.SkipWithError("request/reply failed");
    }
  }
  cpu.Stop(state);
  ::close(sv[0]);
  ReapChild(pid);
}

struct FutexPair {
  alignas(64) std::atomic<uint32_t> seq{0};  // odd: the child's turn; even: the parent's
};
constexpr uint32_t kStop = 0xFFFFFFFFu;

// Two processes hand one shared word back and forth. kBlock: FUTEX_WAIT/FUTEX_WAKE, no
// spinning, the raw wake-up cost. kYield: each side yields (sched_yield) between looks and
// never blocks: on one CPU the cheapest round trip two processes can make (two context
// switches, no wake-up), the floor of any shared-memory channel such as a duplex Pipe's rings.
// kSpin: each side busy-polls with the CPU's pause hint, never yielding: across two CPUs the
// fastest hand-off there is, at the price of both CPUs (the like-for-like baseline of mproc's
// spinning hand-offs; on one CPU it would wait out whole time slices, so it runs cross-CPU
// only).
enum class WordWait { kBlock, kYield, kSpin };
template <WordWait kMode>
void WordPingPong(benchmark::State& state, PinCpus cpus) {
  constexpr bool kBlock = kMode == WordWait::kBlock;
  SharedObject<FutexPair> sh;
  auto wait = [&](uint32_t seen) {
    if constexpr (kMode == WordWait::kBlock) {
      FutexWait(&sh->seq, seen);
    } else if constexpr (kMode == WordWait::kYield) {
      ::sched_yield();
    } else {
      CpuRelax();
    }
  };
  auto wake = [&] {
    if constexpr (kBlock) FutexWake(&sh->seq, 1);
  };
  ScopedPin pin(cpus.parent);
  pid_t pid = ForkPinnedChild(cpus.child, [&] {
    uint32_t expect = 1;
    for (;;) {
      uint32_t v = sh->seq.load(std::memory_order_acquire);
      if (v == kStop) return 0;
      if (v != expect) {
        wait(v);
        continue;
      }
      sh->seq.store(expect + 1, std::memory_order_release);
      wake();
      expect += 2;
    }
  });
  uint32_t next = 1;
  CpuMeter cpu({pid});
  for (auto _ : state) {
    sh->seq.store(next, std::memory_order_release);
    wake();
    uint32_t v;
    while ((v = sh->seq.load(std::memory_order_acquire)) == next) wait(v);
    next += 2;
  }
  cpu.Stop(state);
  sh->seq.store(kStop, std::memory_order_release);
  wake();
  ReapChild(pid);
}

// ---------------------------------------------------------------- locks

struct alignas(64) CasLock {
  std::atomic<uint32_t> word{0};  // 0 free, 1 held, 2 held with waiters
  void Lock() {
    uint32_t z = 0;
    if (word.compare_exchange_strong(z, 1, std::memory_order_acquire)) return;
    while (word.exchange(2, std::memory_order_acquire) != 0) FutexWait(&word, 2);
  }
  void Unlock() {
    if (word.exchange(0, std::memory_order_release) == 2) FutexWake(&word, 1);
  }
};

void FutexCasLock(benchmark::State& state) {
  SharedObject<CasLock> lock;
  for (auto _ : state) {
    lock->Lock();
    lock->Unlock();
  }
}

struct CasLockedCounter {
  CasLock lock;
  int32_t value = 0;
};

// The raw equivalent of Value<int> += 1 under its lock.
void FutexCasLockIncrement(benchmark::State& state) {
  SharedObject<CasLockedCounter> c;
  for (auto _ : state) {
    c->lock.Lock();
    c->value = c->value + 1;
    c->lock.Unlock();
  }
  benchmark::DoNotOptimize(c->value);
}

void PthreadMutexPshared(benchmark::State& state, bool robust) {
  SharedObject<pthread_mutex_t> m;
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (robust) pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(m.get(), &a);
  pthread_mutexattr_destroy(&a);
  for (auto _ : state) {
    pthread_mutex_lock(m.get());
    pthread_mutex_unlock(m.get());
  }
  pthread_mutex_destroy(m.get());
}

// Two processes hammer one lock; ns per acquire+release of the parent's share. Unpinned: the
// figure is the lock's throughput under real contention on this machine.
template <typename LockFn, typename UnlockFn>
void ContendedLock(benchmark::State& state, LockFn lock, UnlockFn unlock, std::atomic<uint32_t>* stop) {
  pid_t pid = ForkPinnedChild(-1, [&] {
    while (stop->load(std::memory_order_relaxed) == 0) {
      for (int i = 0; i < 64; ++i) {
        lock();
        unlock();
      }
    }
    return 0;
  });
  CpuMeter cpu({pid});
  for (auto _ : state) {
    lock();
    unlock();
  }
  cpu.Stop(state);
  stop->store(1);
  ReapChild(pid);
}

struct ContendedCas {
  CasLock lock;
  alignas(64) std::atomic<uint32_t> stop{0};
};

void FutexCasLockContended(benchmark::State& state) {
  SharedObject<ContendedCas> sh;
  ContendedLock(state, [&] { sh->lock.Lock(); }, [&] { sh->lock.Unlock(); }, &sh->stop);
}

struct ContendedPthread {
  pthread_mutex_t m;
  alignas(64) std::atomic<uint32_t> stop{0};
};

void PthreadMutexContended(benchmark::State& state) {
  SharedObject<ContendedPthread> sh;
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&sh->m, &a);
  pthread_mutexattr_destroy(&a);
  ContendedLock(state, [&] { pthread_mutex_lock(&sh->m); }, [&] { pthread_mutex_unlock(&sh->m); },
                &sh->stop);
  pthread_mutex_destroy(&sh->m);
}

// ---------------------------------------------------------------- process creation

int ExitZero(void*) { return 0; }
alignas(64) char g_clone_stack[64 << 10];

void Clone3VforkPidfd(benchmark::State& state) {
  if (!HasFeature(Feature::kClone3)) {
    SkipRow(state, "clone3 unavailable here");
    return;
  }
  for (auto _ : state) {
    int pidfd = -1;
    clone_args args = {};
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uintptr_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    args.stack = reinterpret_cast<uintptr_t>(g_clone_stack);
    args.stack_size = sizeof(g_clone_stack);
    long pid = Clone3(&args, ExitZero, nullptr);
    if (pid < 0) {
      state.SkipWithError("clone3 failed");
      break;
    }
    siginfo_t si;
    ::waitid(static_cast<idtype_t>(P_PIDFD), pidfd, &si, WEXITED);
    ::close(pidfd);
  }
}

void VforkExecSelf(benchmark::State& state) {
  std::string exe = SelfExe();
  char arg1[] = "--exit-now";
  char* argv[] = {exe.data(), arg1, nullptr};
  std::fflush(nullptr);
  for (auto _ : state) {
    pid_t pid = ::vfork();
    if (pid == 0) {
      ::execve(argv[0], argv, environ);
      _exit(127);
    }
    int status;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      state.SkipWithError("the re-executed report did not exit 0");
      break;
    }
  }
}

void PosixSpawnSelf(benchmark::State& state) {
  std::string exe = SelfExe();
  char arg1[] = "--exit-now";
  char* argv[] = {exe.data(), arg1, nullptr};
  std::fflush(nullptr);
  for (auto _ : state) {
    pid_t pid;
    if (::posix_spawn(&pid, argv[0], nullptr, nullptr, argv, environ) != 0) {
      state.SkipWithError("posix_spawn failed");
      break;
    }
    int status;
    ::waitpid(pid, &status, 0);
  }
}

// ---------------------------------------------------------------- streams of messages

constexpr int kMsg = 64;
constexpr int kBatchMsgs = 1024;  // messages per benchmark iteration

// A child writes kBatchMsgs 64-byte messages per request — one write() each, or packed into
// 4 KiB writes — and the parent reads them in large reads. ns per message.
void PipeThroughput(benchmark::State& state, bool batched) {
  int data[2], ctl[2];
  if (::pipe2(data, O_CLOEXEC) != 0 || ::pipe2(ctl, O_CLOEXEC) != 0) {
    state.SkipWithError("pipe2 failed");
    return;
  }
  pid_t pid = ForkPinnedChild(-1, [&] {
    ::close(data[0]);
    ::close(ctl[1]);
    char msg[4096];
    std::memset(msg, 'm', sizeof(msg));
    char go;
    while (::read(ctl[0], &go, 1) == 1) {
      if (batched) {
        for (int i = 0; i < kBatchMsgs * kMsg; i += 4096) {
          if (WriteFull(data[1], msg, 4096) != 4096) return 1;
        }
      } else {
        for (int i = 0; i < kBatchMsgs; ++i) {
          if (::write(data[1], msg, kMsg) != kMsg) return 1;
        }
      }
    }
    return 0;
  });
  ::close(data[1]);
  ::close(ctl[0]);
  std::vector<char> buf(64 << 10);
  CpuMeter cpu({pid});
  for (auto _ : state) {
    char go = 1;
    ::write(ctl[1], &go, 1);
    size_t want = kBatchMsgs * kMsg;
    while (want > 0) {
      ssize_t n = ::read(data[0], buf.data(), std::min(buf.size(), want));
      if (n <= 0) {
        state.SkipWithError("pipe broke");
        want = 0;
        break;
      }
      want -= static_cast<size_t>(n);
    }
  }
  cpu.Stop(state);
  ::close(ctl[1]);
  ::close(data[0]);
  ReapChild(pid);
  SetOpsPerIteration(state, kBatchMsgs);
}

// A single-producer single-consumer ring of 64-byte slots in shared memory, both sides
// busy-polling on different CPUs: the ceiling for message passing without the kernel.
struct SpscRing {
  static constexpr uint32_t kSlots = 1024;
  alignas(64) std::atomic<uint64_t> head{0};     // written by the producer
  alignas(64) std::atomic<uint64_t> tail{0};     // written by the consumer
  alignas(64) std::atomic<uint64_t> request{0};  // batches requested by the consumer
  alignas(64) std::atomic<uint32_t> stop{0};
  alignas(64) char slots[kSlots][kMsg];
};

void SpscRingThroughput(benchmark::State& state, PinCpus cpus) {
  if (cpus.same()) {
    SkipRow(state, "busy-polling needs two CPUs");
    return;
  }
  SharedObject<SpscRing> r;
  ScopedPin pin(cpus.parent);
  pid_t pid = ForkPinnedChild(cpus.child, [&] {
    uint64_t produced = 0, served = 0;
    char msg[kMsg];
    std::memset(msg, 'r', sizeof(msg));
    while (r->stop.load(std::memory_order_relaxed) == 0) {
      uint64_t req = r->request.load(std::memory_order_acquire);
      if (req == served) continue;
      for (int i = 0; i < kBatchMsgs; ++i) {
        while (produced - r->tail.load(std::memory_order_acquire) >= SpscRing::kSlots) {
        }
        std::memcpy(r->slots[produced % SpscRing::kSlots], msg, kMsg);
        r->head.store(++produced, std::memory_order_release);  // pairs with the consumer's acquire
      }
      ++served;
    }
    return 0;
  });
  uint64_t consumed = 0, requested = 0;
  char out[kMsg];
  CpuMeter cpu({pid});
  for (auto _ : state) {
    r->request.store(++requested, std::memory_order_release);
    for (int i = 0; i < kBatchMsgs; ++i) {
      while (r->head.load(std::memory_order_acquire) == consumed) {
      }
      std::memcpy(out, r->slots[consumed % SpscRing::kSlots], kMsg);
      r->tail.store(++consumed, std::memory_order_release);  // frees the slot
    }
    benchmark::DoNotOptimize(out);
  }
  cpu.Stop(state);
  r->stop.store(1);
  ReapChild(pid);
  SetOpsPerIteration(state, kBatchMsgs);
}

// ---------------------------------------------------------------- memcpy

void Memcpy(benchmark::State& state, size_t bytes) {
  std::unique_ptr<char[]> src(new char[bytes]), dst(new char[bytes]);
  std::memset(src.get(), 1, bytes);
  std::memset(dst.get(), 2, bytes);
  for (auto _ : state) {
    std::memcpy(dst.get(), src.get(), bytes);
    benchmark::ClobberMemory();
  }
}

// Reads every byte of a 64 MiB buffer of this process's own memory (already touched).
void ReadLocal(benchmark::State& state, size_t bytes) {
  std::unique_ptr<uint64_t[]> buf(new uint64_t[bytes / 8]);
  std::memset(buf.get(), 1, bytes);
  for (auto _ : state) benchmark::DoNotOptimize(SumWords(buf.get(), bytes));
}

}  // namespace

MPROC_REPORT_ROWS(KernelRows) {
  AddCrossCpuRow("kernel.spin_pingpong", Section::kKernel, WordPingPong<WordWait::kSpin>)
      .Title("shared word ping-pong, both sides busy-polling (pause), round trip");
  AddPairRows("kernel.pipe_pingpong", Section::kKernel,
              [](benchmark::State& s, PinCpus c) { PingPongFds(s, c, false); })
      .Title("pipe ping-pong, 1 B round trip");
  AddPairRows("kernel.socketpair_pingpong", Section::kKernel,
              [](benchmark::State& s, PinCpus c) { PingPongFds(s, c, true); })
      .Title("AF_UNIX socketpair ping-pong, 1 B round trip");
  AddPairRows("kernel.unix_reqrep_48B", Section::kKernel,
              [](benchmark::State& s, PinCpus c) { UnixRequestReply(s, c, 48, 16); })
      .Title("AF_UNIX stream request (48 B) and reply (16 B) between two processes");
  AddPairRows("kernel.futex_pingpong", Section::kKernel, WordPingPong<WordWait::kBlock>)
      .Title("shared futex ping-pong across processes (blocking)");
  AddPairRows("kernel.yield_pingpong", Section::kKernel, WordPingPong<WordWait::kYield>)
      .Title("shared-word ping-pong across processes, sched_yield while waiting (never blocks)");
  AddRow("kernel.futex_cas_lock", Section::kKernel, FutexCasLock)
      .Title("futex-word CAS lock+unlock, uncontended");
  AddRow("kernel.futex_cas_lock_incr", Section::kKernel, FutexCasLockIncrement)
      .Title("futex-word CAS lock + increment + unlock, uncontended");
  AddRow("kernel.futex_cas_lock_contended", Section::kKernel, FutexCasLockContended)
      .Title("futex-word CAS lock+unlock, 2 processes contending");
  AddRow("kernel.pthread_mutex_pshared", Section::kKernel,
         [](benchmark::State& s) { PthreadMutexPshared(s, false); })
      .Title("pthread_mutex PROCESS_SHARED lock+unlock");
  AddRow("kernel.pthread_mutex_pshared_robust", Section::kKernel,
         [](benchmark::State& s) { PthreadMutexPshared(s, true); })
      .Title("pthread_mutex PROCESS_SHARED+ROBUST lock+unlock");
  AddRow("kernel.pthread_mutex_contended", Section::kKernel, PthreadMutexContended)
      .Title("pthread_mutex PROCESS_SHARED, 2 processes contending");
  AddRow("kernel.fork_exit_wait", Section::kKernel, ForkExitWait)
      .Title("fork + _exit + waitpid");
  AddRow("kernel.clone3_vfork_pidfd", Section::kKernel, Clone3VforkPidfd)
      .Title("clone3(CLONE_VM|CLONE_VFORK|CLONE_PIDFD) + _exit + waitid");
  AddRow("kernel.vfork_exec_self", Section::kKernel, VforkExecSelf)
      .Title("vfork + execve of this binary (exits at once) + waitpid");
  AddRow("kernel.posix_spawn_self", Section::kKernel, PosixSpawnSelf)
      .Title("posix_spawn of this binary (exits at once) + waitpid");
  AddRow("kernel.pipe_64B_per_write", Section::kKernel,
         [](benchmark::State& s) { PipeThroughput(s, false); })
      .Title("pipe, 64 B messages, one write per message")
      .PerItem();
  AddRow("kernel.pipe_64B_batched", Section::kKernel,
         [](benchmark::State& s) { PipeThroughput(s, true); })
      .Title("pipe, 64 B messages batched into 4 KiB writes")
      .PerItem();
  AddPairRows("kernel.spsc_ring_64B", Section::kKernel, SpscRingThroughput)
      .Title("SPSC ring in shared memory, 64 B messages, busy-poll")
      .PerItem();
  for (auto [name, bytes] : {std::pair<const char*, size_t>{"64B", 64},
                             {"4KiB", 4096},
                             {"1MiB", 1 << 20},
                             {"64MiB", 64 << 20}}) {
    AddRow(std::string("kernel.memcpy_") + name, Section::kKernel,
           [b = bytes](benchmark::State& s) { Memcpy(s, b); })
        .Title(std::string("memcpy ") + name)
        .BytesPerOp(static_cast<double>(bytes));
  }
  AddRow("kernel.read_64MiB", Section::kKernel,
         [](benchmark::State& s) { ReadLocal(s, 64 << 20); })
      .Title("read every byte of 64 MiB of local memory (sum of words)")
      .BytesPerOp(64 << 20);
}

}  // namespace mproc::bench
