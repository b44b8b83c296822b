#include "base/io_ring.h"

#include <linux/time_types.h>
#include <liburing.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "base/features.h"
#include "base/process_id.h"

namespace mproc {
namespace {

constexpr unsigned kRingEntries = 64;
// At most this many operations per wait, so a wait plus its cancellations fit the ring.
constexpr size_t kMaxWaitOps = kRingEntries / 2 - 1;
constexpr uint64_t kCancelTag = ~uint64_t{0};
constexpr uint32_t kFutex2SizeU32 = 0x02;  // FUTEX2_SIZE_U32; shared (no FUTEX2_PRIVATE)
constexpr uint64_t kFutexBitsetMatchAny = 0xffffffffu;

std::atomic<int> g_mode{-1};
std::once_flag g_mode_once;

std::atomic<bool> g_mode_set_explicitly{false};  // SetIoMode ran
std::atomic<uint64_t> g_submissions{0};
std::atomic<uint64_t> g_futex_waits{0};
std::atomic<uint64_t> g_batches{0};

IoMode Lower(IoMode requested) {
  IoMode best = BestIoMode();
  return static_cast<int>(requested) <= static_cast<int>(best) ? requested : best;
}

void ResolveMode() {
  std::call_once(g_mode_once, [] {
    if (g_mode.load() >= 0) return;  // SetIoMode ran first
    IoMode want = kDefaultIoMode;
    if (const char* env = ::getenv("MPROC_IO_MODE"); env != nullptr) {
      if (std::optional<IoMode> m = ParseIoMode(env)) want = *m;
    }
    int expected = -1;
    g_mode.compare_exchange_strong(expected, static_cast<int>(Lower(want)));
  });
}

// This thread's ring, keyed to the process that made it.
struct ThreadRing {
  io_uring ring;
  pid_t pid = 0;
  bool ok = false;
  bool failed = false;  // setup failed in this process: plain syscalls for this thread

  ~ThreadRing() {
    // At a fork child's exit the copy is its parent's ring (see RingForThisThread): not ours.
    if (ok && pid == CurrentPid()) io_uring_queue_exit(&ring);
    // glibc runs thread_local destructors before atexit handlers, and those may still wait (a
    // Process joining its fork server at exit): they get poll(2) from here on, never the
    // unmapped ring, and no new ring is made for this pid.
    ok = false;
    pid = CurrentPid();
  }
};

thread_local ThreadRing t_ring;

io_uring* RingForThisThread() {
  ThreadRing& t = t_ring;
  const pid_t me = CurrentPid();
  if (t.pid == me) return t.ok ? &t.ring : nullptr;
  if (t.ok) {
    // A fork child's copy of its parent's ring: unmap our copy and close our descriptor (the
    // parent's ring lives on), never submit to it.
    io_uring_queue_exit(&t.ring);
    t.ok = false;
  }
  t.pid = me;
  const unsigned flag_sets[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                                IORING_SETUP_COOP_TASKRUN, 0};
  int r = -EINVAL;
  for (unsigned flags : flag_sets) {
    io_uring_params p;
    std::memset(&p, 0, sizeof(p));
    p.flags = flags;
    r = io_uring_queue_init_params(kRingEntries, &t.ring, &p);
    if (r != -EINVAL) break;
  }
  t.ok = r == 0;
  return t.ok ? &t.ring : nullptr;
}

__kernel_timespec Relative(const Deadline& deadline) {
  int64_t left = deadline.monotonic_ns() - MonotonicNowNs();
  if (left < 0) left = 0;
  __kernel_timespec ts;
  ts.tv_sec = left / 1000000000;
  ts.tv_nsec = left % 1000000000;
  return ts;
}

io_uring_sqe* GetSqe(io_uring* ring) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == nullptr) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

int PlainPoll(std::span<pollfd> fds, const Deadline& deadline) {
  for (;;) {
    int r = ::poll(fds.data(), fds.size(), deadline.PollTimeoutMs());
    if (r > 0) return r;
    if (r == 0) {
      // poll's millisecond rounding can wake us a hair early; only report a timeout once the
      // deadline really passed.
      if (deadline.Expired()) return 0;
      continue;
    }
    if (errno != EINTR) return -errno;
  }
}

// The io_uring wait: one POLL_ADD per descriptor (and a FUTEX_WAIT), submitted and waited in
// one io_uring_enter; the operations still pending afterwards are cancelled and reaped before
// returning, so nothing outlives the call. Returns -ENOSPC when there are too many operations
// (or none: every descriptor negative), for poll(2) to do instead.
int UringWait(io_uring* ring, std::span<pollfd> fds, const std::atomic<uint32_t>* word,
              uint32_t expected, const Deadline& deadline, bool* futex_woken) {
  const size_t n = fds.size() + (word != nullptr ? 1 : 0);
  if (n > kMaxWaitOps) return -ENOSPC;
  uint64_t done = 0;  // bit i: operation i completed (or, for a negative fd, never started)
  size_t pending = n;
  for (size_t i = 0; i < fds.size(); ++i) {
    fds[i].revents = 0;
    if (fds[i].fd < 0) {  // poll(2) ignores negative descriptors; so do we
      done |= uint64_t{1} << i;
      --pending;
      continue;
    }
    io_uring_sqe* sqe = GetSqe(ring);
    io_uring_prep_poll_add(sqe, fds[i].fd, static_cast<unsigned>(fds[i].events));
    sqe->user_data = i + 1;
  }
  if (word != nullptr) {
    *futex_woken = false;
    io_uring_sqe* sqe = GetSqe(ring);
    std::memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = kIoringOpFutexWait;
    sqe->fd = static_cast<int32_t>(kFutex2SizeU32);
    sqe->addr = reinterpret_cast<uint64_t>(word);
    sqe->off = expected;
    sqe->addr3 = kFutexBitsetMatchAny;
    sqe->user_data = n;
    g_futex_waits.fetch_add(1, std::memory_order_relaxed);
  }
  g_submissions.fetch_add(pending, std::memory_order_relaxed);
  if (pending == 0) return -ENOSPC;  // nothing to submit: poll(2) sleeps out the timeout
  int ready = 0;
  bool cancelling = false;
  for (;;) {
    __kernel_timespec ts = Relative(deadline);
    io_uring_cqe* first = nullptr;
    const bool wait_forever = cancelling || deadline.infinite();
    int r = io_uring_submit_and_wait_timeout(ring, &first, 1, wait_forever ? nullptr : &ts,
                                             nullptr);
    // -ETIME: the wait timed out; -EINTR: a signal; -EAGAIN/-EBUSY: the kernel is short of
    // resources for now. Anything else means the ring itself is unusable: drop it.
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) return r;
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(ring, head, cqe) {
      ++seen;
      if (cqe->user_data == kCancelTag || cqe->user_data == 0 || cqe->user_data > n) continue;
      const size_t i = cqe->user_data - 1;
      if (done & (uint64_t{1} << i)) continue;
      done |= uint64_t{1} << i;
      --pending;
      const int res = cqe->res;
      if (i < fds.size()) {
        if (res > 0) {
          fds[i].revents = static_cast<short>(res);
          ++ready;
        } else if (res == -EBADF) {
          fds[i].revents = POLLNVAL;
          ++ready;
        } else if (res != -ECANCELED && res != 0) {
          fds[i].revents = POLLERR;
          ++ready;
        }
      } else if (res == 0 || res == -EAGAIN) {
        // Woken, or the word had already changed: either way the caller re-checks.
        *futex_woken = true;
        ++ready;
      }
    }
    io_uring_cq_advance(ring, seen);
    if (pending == 0) break;
    if (!cancelling && (ready > 0 || deadline.Expired())) {
      for (size_t i = 0; i < n; ++i) {
        if (done & (uint64_t{1} << i)) continue;
        io_uring_sqe* sqe = GetSqe(ring);
        io_uring_prep_cancel64(sqe, i + 1, 0);
        sqe->user_data = kCancelTag;
      }
      cancelling = true;
    }
  }
  return ready;
}

// UringWait until something is ready or the deadline passed (a ring wait may end early, as
// poll(2) may); -ENOSPC as UringWait.
int UringWaitUntil(io_uring* ring, std::span<pollfd> fds, const std::atomic<uint32_t>* word,
                   uint32_t expected, const Deadline& deadline, bool* futex_woken) {
  for (;;) {
    int r = UringWait(ring, fds, word, expected, deadline, futex_woken);
    if (r != 0 || deadline.Expired()) return r;
  }
}

}  // namespace

const char* IoModeName(IoMode mode) {
  switch (mode) {
    case IoMode::kPlain:
      return "plain";
    case IoMode::kUringBasic:
      return "uring_basic";
    case IoMode::kUring:
      return "uring";
  }
  return "?";
}

std::optional<IoMode> ParseIoMode(std::string_view name) {
  if (name == "plain") return IoMode::kPlain;
  if (name == "uring_basic") return IoMode::kUringBasic;
  if (name == "uring") return IoMode::kUring;
  if (name == "auto" || name.empty()) return kDefaultIoMode;
  return std::nullopt;
}

bool IoModeChosen() {
  if (g_mode_set_explicitly.load(std::memory_order_acquire)) return true;
  const char* env = ::getenv("MPROC_IO_MODE");
  if (env == nullptr) return false;
  const std::string_view v(env);
  return !v.empty() && v != "auto" && ParseIoMode(v).has_value();
}

IoMode BestIoMode() {
  if (!HasFeature(Feature::kIoUring)) return IoMode::kPlain;
  return HasFeature(Feature::kIoUringFutex) ? IoMode::kUring : IoMode::kUringBasic;
}

IoMode ActiveIoMode() {
  int m = g_mode.load(std::memory_order_acquire);
  if (m < 0) {
    ResolveMode();
    m = g_mode.load(std::memory_order_acquire);
  }
  return static_cast<IoMode>(m);
}

IoMode SetIoMode(IoMode requested) {
  IoMode m = Lower(requested);
  g_mode.store(static_cast<int>(m), std::memory_order_release);
  g_mode_set_explicitly.store(true, std::memory_order_release);
  ::setenv("MPROC_IO_MODE", IoModeName(m), 1);
  return m;
}

IoRingCounters GetIoRingCounters() {
  IoRingCounters c;
  c.submissions = g_submissions.load(std::memory_order_relaxed);
  c.futex_waits = g_futex_waits.load(std::memory_order_relaxed);
  c.batches = g_batches.load(std::memory_order_relaxed);
  return c;
}

int WaitEvents(std::span<pollfd> fds, const Deadline& deadline) {
  if (ActiveIoMode() != IoMode::kPlain) {
    if (io_uring* ring = RingForThisThread()) {
      int r = UringWaitUntil(ring, fds, nullptr, 0, deadline, nullptr);
      if (r != -ENOSPC) return r;  // else: too many descriptors for one ring wait
    }
  }
  return PlainPoll(fds, deadline);
}

bool CanWaitFutexWithFds() { return ActiveIoMode() == IoMode::kUring; }

int WaitEventsOrFutex(std::span<pollfd> fds, const std::atomic<uint32_t>* word, uint32_t expected,
                      const Deadline& deadline, bool* futex_woken) {
  *futex_woken = false;
  if (ActiveIoMode() != IoMode::kUring) return -EOPNOTSUPP;
  io_uring* ring = RingForThisThread();
  if (ring == nullptr) return -EOPNOTSUPP;
  int r = UringWaitUntil(ring, fds, word, expected, deadline, futex_woken);
  return r == -ENOSPC ? -EOPNOTSUPP : r;
}

int SendMessages(int fd, std::span<msghdr> msgs) {
  if (msgs.empty()) return 0;
  constexpr int kFlags = MSG_DONTWAIT | MSG_NOSIGNAL;
  io_uring* ring = ActiveIoMode() != IoMode::kPlain ? RingForThisThread() : nullptr;
  if (ring == nullptr) {
    mmsghdr batch[kRingEntries];
    const size_t n = msgs.size() < kRingEntries ? msgs.size() : kRingEntries;
    for (size_t i = 0; i < n; ++i) batch[i] = {msgs[i], 0};
    int r;
    do {
      r = ::sendmmsg(fd, batch, static_cast<unsigned>(n), kFlags);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    if (r > 1) g_batches.fetch_add(1, std::memory_order_relaxed);
    return r;
  }
  // One linked chain: the kernel issues each send only after the previous one succeeded, so the
  // order holds and a failure cancels the rest.
  const size_t n = msgs.size() < kRingEntries / 2 ? msgs.size() : kRingEntries / 2;
  for (size_t i = 0; i < n; ++i) {
    io_uring_sqe* sqe = GetSqe(ring);
    io_uring_prep_sendmsg(sqe, fd, &msgs[i], kFlags);
    if (i + 1 < n) sqe->flags |= IOSQE_IO_LINK;
    sqe->user_data = i + 1;
  }
  g_submissions.fetch_add(n, std::memory_order_relaxed);
  int results[kRingEntries / 2];
  size_t reaped = 0;
  uint64_t seen_mask = 0;
  while (reaped < n) {
    int r = io_uring_submit_and_wait(ring, static_cast<unsigned>(n - reaped));
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) return r;
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(ring, head, cqe) {
      ++seen;
      if (cqe->user_data == 0 || cqe->user_data > n) continue;
      const size_t i = cqe->user_data - 1;
      if (seen_mask & (uint64_t{1} << i)) continue;
      seen_mask |= uint64_t{1} << i;
      results[i] = cqe->res;
      ++reaped;
    }
    io_uring_cq_advance(ring, seen);
  }
  int sent = 0;
  while (static_cast<size_t>(sent) < n && results[sent] >= 0) ++sent;
  if (sent == 0) return results[0];
  if (sent > 1) g_batches.fetch_add(1, std::memory_order_relaxed);
  return sent;
}

}  // namespace mproc
