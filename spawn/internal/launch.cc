// Runs between clone and exec: everything in ChildMain and the helpers it calls executes in a
// child that shares the parent's memory (CLONE_VM) while the parent thread is suspended
// (CLONE_VFORK). Only raw system calls and _exit: no malloc, no locks, no logging, no
// exceptions, no sanitizer instrumentation (STYLE.md §6).
#include "spawn/internal/launch.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "base/clone3.h"
#include "base/features.h"
#include "base/status.h"

#define MPROC_CHILD_CODE \
  __attribute__((noinline, no_sanitize_address, no_sanitize_undefined, no_stack_protector))

namespace mproc::spawn_internal {
namespace {

enum Stage : int { kStageNone = 0, kStageFd3, kStageCloseFds, kStageSignals, kStageExec };

struct ChildContext {
  const LaunchRequest* req;
  bool have_close_range;
  uint64_t old_mask;  // the kernel's 64-bit sigset
  // Written by the child (shared memory), read by the parent after the child execs or exits.
  volatile int stage;
  volatile int err;
};

struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

MPROC_CHILD_CODE long RawSyscall(long n, long a = 0, long b = 0, long c = 0, long d = 0) noexcept {
  long r = ::syscall(n, a, b, c, d);
  return r == -1 ? -errno : r;
}

MPROC_CHILD_CODE void Fail(ChildContext* ctx, int stage, long neg_errno) noexcept {
  ctx->stage = stage;
  ctx->err = static_cast<int>(-neg_errno);
  ::_exit(127);
}

// Closes every descriptor >= 4 without close_range: walk /proc/self/fd with getdents64.
MPROC_CHILD_CODE long CloseFromWalking() noexcept {
  long dir = RawSyscall(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/fd"),
                        O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return dir;
  alignas(8) char buf[4096];
  for (;;) {
    long n = RawSyscall(SYS_getdents64, dir, reinterpret_cast<long>(buf), sizeof(buf));
    if (n < 0) return n;
    if (n == 0) break;
    for (long off = 0; off < n;) {
      // struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
      unsigned short reclen;
      __builtin_memcpy(&reclen, buf + off + 16, sizeof(reclen));
      const char* name = buf + off + 19;
      long fd = 0;
      bool digits = name[0] != '\0';
      for (const char* p = name; *p; ++p) {
        if (*p < '0' || *p > '9') digits = false;
        fd = fd * 10 + (*p - '0');
      }
      if (digits && fd >= 4 && fd != dir) RawSyscall(SYS_close, fd);
      off += reclen;
    }
  }
  RawSyscall(SYS_close, dir);
  return 0;
}

MPROC_CHILD_CODE int ChildMain(void* arg) noexcept {
  auto* ctx = static_cast<ChildContext*>(arg);
  const LaunchRequest* req = ctx->req;
  // 1. The bootstrap descriptor as fd 3, inheritable.
  long r;
  if (req->child_fd == 3) {
    r = RawSyscall(SYS_fcntl, 3, F_SETFD, 0);
  } else {
    r = RawSyscall(SYS_dup3, req->child_fd, 3, 0);
  }
  if (r < 0) Fail(ctx, kStageFd3, r);
  // 2. Nothing else crosses exec.
  r = ctx->have_close_range ? RawSyscall(SYS_close_range, 4, ~0U, 0) : CloseFromWalking();
  if (r < 0) Fail(ctx, kStageCloseFds, r);
  // 3. Handlers to default (while every signal is blocked), then the caller's mask back.
  for (int sig = 1; sig < 65; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    KernelSigaction old{};
    if (RawSyscall(SYS_rt_sigaction, sig, 0, reinterpret_cast<long>(&old), 8) < 0) continue;
    if (old.handler == SIG_DFL || old.handler == SIG_IGN) continue;
    KernelSigaction dfl{};
    dfl.handler = SIG_DFL;
    RawSyscall(SYS_rt_sigaction, sig, reinterpret_cast<long>(&dfl), 0, 8);
  }
  r = RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&ctx->old_mask), 0, 8);
  if (r < 0) Fail(ctx, kStageSignals, r);
  // 4. The new image.
  r = RawSyscall(SYS_execve, reinterpret_cast<long>(req->path), reinterpret_cast<long>(req->argv),
                 reinterpret_cast<long>(req->envp));
  Fail(ctx, kStageExec, r);
  return 127;
}

// vfork's child must not return from the function that called vfork.
MPROC_CHILD_CODE pid_t VforkAndExec(ChildContext* ctx) noexcept {
  pid_t pid = ::vfork();
  if (pid == 0) {
    ChildMain(ctx);
    ::_exit(127);
  }
  return pid;
}

const char* StageName(int stage) {
  switch (stage) {
    case kStageFd3: return "dup3(bootstrap fd, 3)";
    case kStageCloseFds: return "closing inherited descriptors";
    case kStageSignals: return "restoring the signal mask";
    case kStageExec: return "execve";
    default: return "starting the child";
  }
}

std::atomic<int> g_clone3_launches{0};
std::atomic<int> g_vfork_launches{0};

}  // namespace

int LaunchCount(bool clone3) { return (clone3 ? g_clone3_launches : g_vfork_launches).load(); }

absl::StatusOr<Launched> Launch(const LaunchRequest& request) {
  // The child's stack (clone3 only); one per thread, reused: the parent thread is suspended
  // while the child runs on it.
  constexpr size_t kStackSize = 64 << 10;
  thread_local void* stack = nullptr;
  if (stack == nullptr) {
    void* p = ::mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) return ErrnoToStatus(errno, "mmap(spawn child stack)");
    stack = p;
  }

  ChildContext ctx{};
  ctx.req = &request;
  ctx.have_close_range = HasFeature(Feature::kCloseRange);
  sigset_t all;
  sigset_t old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  static_assert(sizeof(old) >= sizeof(ctx.old_mask));
  __builtin_memcpy(&ctx.old_mask, &old, sizeof(ctx.old_mask));

  Launched out;
  int pidfd = -1;
  long pid = -ENOSYS;
  if (HasFeature(Feature::kClone3)) {
    clone_args args{};
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uintptr_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    args.stack = reinterpret_cast<uintptr_t>(stack);
    args.stack_size = kStackSize;
    pid = Clone3(&args, ChildMain, &ctx);
    if (pid > 0) out.used_clone3 = true;
  }
  int saved_errno = 0;
  if (pid == -ENOSYS || pid == -EPERM) {  // no clone3 here (old kernel, seccomp, valgrind)
    pid = VforkAndExec(&ctx);
    if (pid < 0) saved_errno = errno;
  } else if (pid < 0) {
    saved_errno = static_cast<int>(-pid);
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return ErrnoToStatus(saved_errno, "clone3/vfork (starting a spawn child)");

  if (ctx.err != 0) {
    int status;
    while (::waitpid(static_cast<pid_t>(pid), &status, 0) < 0 && errno == EINTR) {
    }
    if (pidfd >= 0) ::close(pidfd);
    return ErrnoToStatus(ctx.err, absl::StrCat(StageName(ctx.stage), "(", request.path, ")"));
  }
  out.pid = static_cast<pid_t>(pid);
  (out.used_clone3 ? g_clone3_launches : g_vfork_launches).fetch_add(1);
  if (pidfd < 0) {
    pidfd = static_cast<int>(::syscall(SYS_pidfd_open, out.pid, 0));
    if (pidfd < 0) {
      // Keep going without a pidfd (kernels before 5.3): the caller waits by pid.
      pidfd = -1;
    }
  }
  out.pidfd = UniqueFd(pidfd);
  return out;
}

}  // namespace mproc::spawn_internal
