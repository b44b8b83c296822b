// base/deadline.h — absl::Duration timeouts turned once into CLOCK_MONOTONIC deadlines.
//
// Every blocking call in mproc takes an optional absl::Duration timeout (infinite by default)
// and converts it here, so that retries after EINTR or spurious wake-ups never stretch the
// wait (Abseil's KernelTimeout does the same).
//
//   Deadline d = Deadline::After(timeout);
//   while (!ready) {
//     if (d.Expired()) return absl::DeadlineExceededError("...");
//     FutexWait(&word, seen, d);
//   }
//
// A finite timeout is fixed to the clock the first time the deadline is looked at (Expired,
// Remaining, monotonic_ns, a wait, or a copy), not in After(): a call that finishes without
// waiting — a Put into a ring with room, a Get of a waiting item — never reads the clock,
// which on these machines is a quarter of such a call. The deadline so starts at most the
// non-blocking part of the call later than the call; once fixed it never moves, and a copy
// fixes it first, so every copy shares it.
//
// Thread-safety: a Deadline is a value that may be read from several threads; fixing it is
// one compare-and-swap, so every reader sees the same time.
#ifndef MPROC_BASE_DEADLINE_H_
#define MPROC_BASE_DEADLINE_H_

#include <time.h>

#include <atomic>
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
  // timeout gives a deadline that has already expired (a non-blocking attempt). Reads no
  // clock: a finite deadline is fixed when first looked at (see above).
  static Deadline After(absl::Duration timeout);
  // At an absolute CLOCK_MONOTONIC time in nanoseconds.
  static constexpr Deadline AtMonotonicNs(int64_t ns) { return Deadline(ns); }

  Deadline(const Deadline& other) : ns_(other.monotonic_ns()), timeout_ns_(other.timeout_ns_) {}
  Deadline& operator=(const Deadline& other) {
    ns_.store(other.monotonic_ns(), std::memory_order_relaxed);
    timeout_ns_ = other.timeout_ns_;
    return *this;
  }

  bool infinite() const { return ns_.load(std::memory_order_relaxed) == kInfiniteNs; }
  bool Expired() const;
  // Time left, never negative; absl::InfiniteDuration() when infinite.
  absl::Duration Remaining() const;
  // The absolute CLOCK_MONOTONIC time (meaningless when infinite).
  int64_t monotonic_ns() const {
    const int64_t ns = ns_.load(std::memory_order_relaxed);
    return ns != kUnfixed ? ns : Fix();
  }
  timespec AbsTimespec() const;
  // Milliseconds for poll()/epoll_wait(): -1 when infinite, rounded up so a wait never
  // returns before the deadline, 0 when expired.
  int PollTimeoutMs() const;
  // The earlier of this deadline and `length` from now: one bounded slice of a long wait, so
  // the waiter looks around (a Close in another thread, a peer or holder that died) at least
  // that often. Reads the clock.
  Deadline Slice(absl::Duration length) const;

 private:
  static constexpr int64_t kInfiniteNs = std::numeric_limits<int64_t>::max();
  // ns_ before a finite timeout is fixed to the clock.
  static constexpr int64_t kUnfixed = std::numeric_limits<int64_t>::min();
  constexpr explicit Deadline(int64_t ns, int64_t timeout_ns = 0)
      : ns_(ns), timeout_ns_(timeout_ns) {}
  // Fixes the deadline at now + timeout_ns_ (the first caller's now) and returns it.
  int64_t Fix() const;

  mutable std::atomic<int64_t> ns_;
  int64_t timeout_ns_ = 0;  // for kUnfixed: positive, and small enough never to overflow
};

}  // namespace mproc

#endif  // MPROC_BASE_DEADLINE_H_
