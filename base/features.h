// base/features.h — what this kernel (and seccomp profile) lets mproc use, decided once.
//
// Kernel-feature decisions are made here and nowhere else (STYLE.md §1, like Abseil's
// ABSL_INTERNAL_HAVE_FUTEX block). Each feature is probed lazily, once per process, on first
// use, and the answer is cached. Probes create nothing that outlives them.
//
//   if (HasFeature(Feature::kClone3)) { ... } else { /* vfork + pidfd_open */ }
//
// Forcing features off, for tests of fallback paths and for users on odd kernels:
//   * the environment variable MPROC_DISABLE_FEATURES, a comma-separated list of feature
//     names (see FeatureName(); e.g. "io_uring", "io_uring_futex,io_uring_waitid", "clone3"),
//     read once at the first query and inherited by children;
//   * SetFeatureForcedOff(feature, true) at run time (tests).
// A feature forced off reports unavailable with errno ENOSYS; forcing io_uring off also
// forces off io_uring_futex and io_uring_waitid, which need it.
//
// Thread-safety: all functions are thread-safe. Fork children inherit the cached answers
// (the kernel did not change), which is right.

#ifndef MPROC_BASE_FEATURES_H_
#define MPROC_BASE_FEATURES_H_

#include <bitset>
#include <string>

namespace mproc {

enum class Feature {
  kIoUring,          // io_uring_setup works
  kIoUringFutex,     // IORING_OP_FUTEX_WAIT/WAKE/WAITV (Linux 6.7+)
  kIoUringWaitid,    // IORING_OP_WAITID (Linux 6.7+)
  kClone3,           // clone3() (ENOSYS under valgrind and some seccomp profiles)
  kPidfdOpen,        // pidfd_open()
  kPidfdSendSignal,  // pidfd_send_signal()
  kMemfdCreate,      // memfd_create()
  kMemfdNoexecSeal,  // MFD_NOEXEC_SEAL (Linux 6.3+)
  kCloseRange,       // close_range()
  kCount,
};

// io_uring opcodes liburing 2.3's headers do not name yet (Linux 6.7 uapi values).
inline constexpr int kIoringOpWaitid = 50;
inline constexpr int kIoringOpFutexWait = 51;
inline constexpr int kIoringOpFutexWake = 52;
inline constexpr int kIoringOpFutexWaitv = 53;

// Whether `f` is usable in this process (probing it on first call).
bool HasFeature(Feature f);

// The errno the probe saw when `f` is unavailable (ENOSYS when forced off), 0 when available.
int FeatureErrno(Feature f);

// The feature's name as accepted by MPROC_DISABLE_FEATURES ("io_uring", "clone3", ...).
const char* FeatureName(Feature f);

// The io_uring opcodes this kernel supports (empty when io_uring is unavailable).
std::bitset<256> IoUringOpcodes();

// Forces `f` off (or lets it be probed again). For tests; thread-safe.
void SetFeatureForcedOff(Feature f, bool off);

// Forgets every cached probe result (forced-off settings stay), so the next query probes the
// kernel again. For tests that change what the process may do (a seccomp filter).
void ResetFeatureCacheForTesting();

// One line per feature: "clone3: yes", "io_uring: no (EPERM)", ... for reports and logs.
std::string DescribeFeatures();

}  // namespace mproc

#endif  // MPROC_BASE_FEATURES_H_
