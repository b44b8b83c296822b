#include "base/deadline.h"

#include <algorithm>

namespace mproc {

int64_t MonotonicNowNs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

Deadline Deadline::After(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return Infinite();
  // Monotonic time is positive after boot: 0 has always passed.
  if (timeout <= absl::ZeroDuration()) return Deadline(0);
  const int64_t ns = absl::ToInt64Nanoseconds(timeout);  // saturates
  // Beyond a century the deadline is never reached: infinite, so that fixing it cannot
  // overflow and infinite() never changes its answer.
  if (ns >= kInfiniteNs / 4) return Infinite();
  return Deadline(kUnfixed, ns);  // a prvalue: no copy, which would fix it
}

int64_t Deadline::Fix() const {
  int64_t expected = kUnfixed;
  const int64_t at = MonotonicNowNs() + timeout_ns_;
  if (ns_.compare_exchange_strong(expected, at, std::memory_order_relaxed)) return at;
  return expected;  // another thread fixed it first
}

bool Deadline::Expired() const {
  const int64_t ns = ns_.load(std::memory_order_relaxed);
  if (ns == kInfiniteNs) return false;
  if (ns == kUnfixed) {
    Fix();
    return false;  // a positive timeout, started just now
  }
  return MonotonicNowNs() >= ns;
}

absl::Duration Deadline::Remaining() const {
  if (infinite()) return absl::InfiniteDuration();
  const int64_t at = monotonic_ns();
  return absl::Nanoseconds(std::max<int64_t>(0, at - MonotonicNowNs()));
}

timespec Deadline::AbsTimespec() const {
  const int64_t at = monotonic_ns();
  timespec ts;
  ts.tv_sec = at / 1'000'000'000;
  ts.tv_nsec = at % 1'000'000'000;
  return ts;
}

int Deadline::PollTimeoutMs() const {
  if (infinite()) return -1;
  const int64_t at = monotonic_ns();
  int64_t left = at - MonotonicNowNs();
  if (left <= 0) return 0;
  int64_t ms = (left + 999'999) / 1'000'000;
  return static_cast<int>(std::min<int64_t>(ms, std::numeric_limits<int>::max()));
}

Deadline Deadline::Slice(absl::Duration length) const {
  const int64_t end = MonotonicNowNs() + absl::ToInt64Nanoseconds(length);
  return infinite() || end < monotonic_ns() ? Deadline::AtMonotonicNs(end) : *this;
}

}  // namespace mproc
