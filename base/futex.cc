#include "base/futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "absl/base/internal/raw_logging.h"

namespace mproc {

FutexResult FutexWait(const std::atomic<uint32_t>* word, uint32_t expected,
                      const Deadline& deadline, FutexScope scope) {
  int op = FUTEX_WAIT_BITSET | (scope == FutexScope::kPrivate ? FUTEX_PRIVATE_FLAG : 0);
  timespec ts;
  const timespec* tsp = nullptr;
  if (!deadline.infinite()) {
    ts = deadline.AbsTimespec();
    tsp = &ts;
  }
  long r = ::syscall(SYS_futex, reinterpret_cast<const uint32_t*>(word), op, expected, tsp,
                     nullptr, FUTEX_BITSET_MATCH_ANY);
  if (r == 0) return FutexResult::kAwoken;
  switch (errno) {
    case EAGAIN:
      return FutexResult::kValueChanged;
    case ETIMEDOUT:
      return FutexResult::kTimedOut;
    case EINTR:
      return FutexResult::kInterrupted;
    default:
      // EFAULT/EINVAL mean a broken invariant: an unmapped or misaligned word.
      ABSL_RAW_LOG(FATAL, "futex wait on %p failed: errno %d", static_cast<const void*>(word),
                   errno);
      return FutexResult::kAwoken;
  }
}

int FutexWake(const std::atomic<uint32_t>* word, int count, FutexScope scope) noexcept {
  int op = FUTEX_WAKE | (scope == FutexScope::kPrivate ? FUTEX_PRIVATE_FLAG : 0);
  long r = ::syscall(SYS_futex, reinterpret_cast<const uint32_t*>(word), op, count, nullptr,
                     nullptr, 0);
  return r < 0 ? -errno : static_cast<int>(r);
}

}  // namespace mproc
