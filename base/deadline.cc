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
  int64_t now = MonotonicNowNs();
  if (timeout <= absl::ZeroDuration()) return Deadline(now);
  int64_t ns = absl::ToInt64Nanoseconds(timeout);  // saturates
  if (ns >= kInfiniteNs - now) return Infinite();
  return Deadline(now + ns);
}

absl::Duration Deadline::Remaining() const {
  if (infinite()) return absl::InfiniteDuration();
  return absl::Nanoseconds(std::max<int64_t>(0, ns_ - MonotonicNowNs()));
}

timespec Deadline::AbsTimespec() const {
  timespec ts;
  ts.tv_sec = ns_ / 1'000'000'000;
  ts.tv_nsec = ns_ % 1'000'000'000;
  return ts;
}

int Deadline::PollTimeoutMs() const {
  if (infinite()) return -1;
  int64_t left = ns_ - MonotonicNowNs();
  if (left <= 0) return 0;
  int64_t ms = (left + 999'999) / 1'000'000;
  return static_cast<int>(std::min<int64_t>(ms, std::numeric_limits<int>::max()));
}

}  // namespace mproc
