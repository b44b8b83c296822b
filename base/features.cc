#include "base/features.h"

#include <errno.h>
#include <liburing.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>  // std::call_once
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/mutex.h"
#include "base/status.h"
#include "base/unique_fd.h"

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

namespace mproc {
namespace {

constexpr int kN = static_cast<int>(Feature::kCount);

// State per feature: kUnknown until probed, then 1 + errno (0 errno = available).
constexpr int kUnknown = -1;
std::atomic<int> g_state[kN] = {kUnknown, kUnknown, kUnknown, kUnknown, kUnknown,
                                kUnknown, kUnknown, kUnknown, kUnknown};
std::atomic<bool> g_forced[kN] = {};
std::once_flag g_env_once;
ABSL_CONST_INIT Mutex g_uring_mu;
bool g_uring_probed ABSL_GUARDED_BY(g_uring_mu) = false;
std::bitset<256> g_uring_ops ABSL_GUARDED_BY(g_uring_mu);
int g_uring_errno ABSL_GUARDED_BY(g_uring_mu) = 0;

const char* const kNames[kN] = {"io_uring",   "io_uring_futex", "io_uring_waitid",
                                "clone3",     "pidfd_open",     "pidfd_send_signal",
                                "memfd",      "memfd_noexec_seal", "close_range"};

void ReadEnvOnce() {
  std::call_once(g_env_once, [] {
    const char* env = std::getenv("MPROC_DISABLE_FEATURES");
    if (env == nullptr) return;
    for (absl::string_view name : absl::StrSplit(env, ',', absl::SkipWhitespace())) {
      for (int i = 0; i < kN; ++i) {
        if (name == kNames[i]) g_forced[i].store(true);
      }
    }
  });
}

// What probing io_uring found: errno of the setup (0: it works), and the opcodes it supports.
struct UringProbe {
  int err = 0;
  std::bitset<256> ops;
};

// Fills the probe's globals (requires g_uring_mu).
void ProbeIoUringLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_uring_mu) {
  g_uring_probed = true;
  g_uring_ops.reset();
  g_uring_errno = 0;
  {
    io_uring ring;
    int r = io_uring_queue_init(2, &ring, 0);
    if (r < 0) {
      g_uring_errno = -r;
      return;
    }
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    if (probe != nullptr) {
      for (int op = 0; op <= probe->last_op && op < 256; ++op) {
        if (probe->ops[op].flags & IO_URING_OP_SUPPORTED) g_uring_ops.set(op);
      }
      io_uring_free_probe(probe);
    }
    io_uring_queue_exit(&ring);
  }
}

// Probes io_uring once (again after ResetFeatureCacheForTesting); returns what it found.
UringProbe ProbeIoUring() {
  MutexLock lock(&g_uring_mu);
  if (!g_uring_probed) ProbeIoUringLocked();
  return {g_uring_errno, g_uring_ops};
}

int Probe(Feature f) {
  switch (f) {
    case Feature::kIoUring:
      return ProbeIoUring().err;
    case Feature::kIoUringFutex: {
      const UringProbe p = ProbeIoUring();
      if (p.err) return p.err;
      return (p.ops.test(kIoringOpFutexWait) && p.ops.test(kIoringOpFutexWake)) ? 0 : EOPNOTSUPP;
    }
    case Feature::kIoUringWaitid: {
      const UringProbe p = ProbeIoUring();
      if (p.err) return p.err;
      return p.ops.test(kIoringOpWaitid) ? 0 : EOPNOTSUPP;
    }
    case Feature::kClone3: {
      // A null clone_args with size 0 fails with EINVAL where clone3 exists, ENOSYS (or a
      // seccomp errno) where it does not; nothing is created either way.
      long r = ::syscall(SYS_clone3, nullptr, 0);
      if (r >= 0) std::abort();  // cannot happen: no process is created by a zero-size call
      return errno == EINVAL ? 0 : errno;
    }
    case Feature::kPidfdOpen: {
      long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
      if (fd < 0) return errno;
      CloseNoInt(static_cast<int>(fd));
      return 0;
    }
    case Feature::kPidfdSendSignal: {
      long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
      if (fd < 0) return errno;
      long r = ::syscall(SYS_pidfd_send_signal, fd, 0, nullptr, 0);  // signal 0: a check
      int err = r < 0 ? errno : 0;
      CloseNoInt(static_cast<int>(fd));
      return err;
    }
    case Feature::kMemfdCreate: {
      int fd = ::memfd_create("mproc-probe", MFD_CLOEXEC);
      if (fd < 0) return errno;
      CloseNoInt(fd);
      return 0;
    }
    case Feature::kMemfdNoexecSeal: {
      int fd = ::memfd_create("mproc-probe", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
      if (fd < 0) return errno;
      CloseNoInt(fd);
      return 0;
    }
    case Feature::kCloseRange: {
      // An unknown flag bit: EINVAL where the syscall exists, ENOSYS where it does not.
      long r = ::syscall(SYS_close_range, ~0U, ~0U, 1U << 30);
      if (r == 0) return 0;
      return errno == EINVAL ? 0 : errno;
    }
    case Feature::kCount:
      break;
  }
  return ENOSYS;
}

int State(Feature f) {
  ReadEnvOnce();
  int i = static_cast<int>(f);
  if (g_forced[i].load(std::memory_order_relaxed)) return ENOSYS;
  // The io_uring opcodes need io_uring itself: forcing it off forces them off too.
  if ((f == Feature::kIoUringFutex || f == Feature::kIoUringWaitid) &&
      g_forced[static_cast<int>(Feature::kIoUring)].load(std::memory_order_relaxed)) {
    return ENOSYS;
  }
  int s = g_state[i].load(std::memory_order_acquire);
  if (s == kUnknown) {
    s = Probe(f);
    g_state[i].store(s, std::memory_order_release);
  }
  return s;
}

}  // namespace

bool HasFeature(Feature f) { return State(f) == 0; }

int FeatureErrno(Feature f) { return State(f); }

const char* FeatureName(Feature f) {
  int i = static_cast<int>(f);
  return (i >= 0 && i < kN) ? kNames[i] : "unknown";
}

std::bitset<256> IoUringOpcodes() {
  if (!HasFeature(Feature::kIoUring)) return {};
  return ProbeIoUring().ops;
}

void SetFeatureForcedOff(Feature f, bool off) {
  ReadEnvOnce();
  g_forced[static_cast<int>(f)].store(off, std::memory_order_relaxed);
}

void ResetFeatureCacheForTesting() {
  {
    MutexLock lock(&g_uring_mu);
    g_uring_probed = false;
  }
  for (auto& s : g_state) s.store(kUnknown, std::memory_order_release);
}

std::string DescribeFeatures() {
  std::string out;
  for (int i = 0; i < kN; ++i) {
    Feature f = static_cast<Feature>(i);
    int e = FeatureErrno(f);
    absl::StrAppend(&out, kNames[i], ": ",
                    e == 0 ? std::string("yes") : absl::StrCat("no (", ErrnoName(e), ")"), "\n");
  }
  return out;
}

}  // namespace mproc
