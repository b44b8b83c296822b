// base/deadline.h — absl::Duration timeouts turned once into CLOCK_MONOTONIC deadlines.
//
// Every blocking call in mproc takes an optional absl::Duration timeout (infinite by default)
// and converts it here, once, on entry, so that retries after EINTR or spurious wake-ups never
// stretch the wait (Abseil's KernelTimeout does the same).
//
//   Deadline d = Deadline::After(timeout);
//   while (!ready) {
//     if (d.Expired()) return absl::DeadlineExceededError("...");
//     FutexWait(&word, seen, d);
//   }
//
// Thread-safety: a Deadline is an immutable value.

#ifndef MPROC_BASE_DEADLINE_H_
#define MPROC_BASE_DEADLINE_H_

#include <time.h>

#include <cstdint>
#include <limits>

#include "absl/time/time.h"

namespace mproc {

// Nanoseconds on CLOCK_MONOTONIC.
int64_t MonotonicNowNs();

class Deadline {
 public:
  // Never expires.
  static constexpr Deadline Infinite() { return Deadline(kInfiniteNs); }
  // Expires `timeout` from now. An infinite timeout gives Infinite(); zero or a negative
  // timeout gives a deadline that has already expired (a non-blocking attempt).
  static Deadline After(absl::Duration timeout);
  // At an absolute CLOCK_MONOTONIC time in nanoseconds.
  static constexpr Deadline AtMonotonicNs(int64_t ns) { return Deadline(ns); }

  bool infinite() const { return ns_ == kInfiniteNs; }
  bool Expired() const { return !infinite() && MonotonicNowNs() >= ns_; }
  // Time left, never negative; absl::InfiniteDuration() when infinite.
  absl::Duration Remaining() const;
  // The absolute CLOCK_MONOTONIC time (meaningless when infinite).
  int64_t monotonic_ns() const { return ns_; }
  timespec AbsTimespec() const;
  // Milliseconds for poll()/epoll_wait(): -1 when infinite, rounded up so a wait never
  // returns before the deadline, 0 when expired.
  int PollTimeoutMs() const;

 private:
  static constexpr int64_t kInfiniteNs = std::numeric_limits<int64_t>::max();
  constexpr explicit Deadline(int64_t ns) : ns_(ns) {}
  int64_t ns_;
};

}  // namespace mproc

#endif  // MPROC_BASE_DEADLINE_H_
