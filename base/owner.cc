#include "base/owner.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/futex.h"
#include "base/process_id.h"

namespace mproc {
namespace {

thread_local uint32_t t_tid = 0;

void ResetTidAfterFork() { t_tid = 0; }

[[maybe_unused]] const int kAtfork = [] {
  pthread_atfork(nullptr, nullptr, ResetTidAfterFork);
  return 0;
}();

// What /proc/<id>/stat says of a task.
struct TaskStat {
  enum { kGone, kUnknown, kFound } found = kGone;
  char state = '?';
  long threads = 0;
  uint64_t start_time = 0;
};

TaskStat ReadStat(uint32_t id) {
  TaskStat out;
  char path[48];
  std::snprintf(path, sizeof(path), "/proc/%u/stat", id);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT && errno != ESRCH) out.found = TaskStat::kUnknown;
    return out;
  }
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return out;  // the task vanished between open and read
  buf[n] = '\0';
  // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so parse after the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] == '\0' || p[2] == '\0') {
    out.found = TaskStat::kUnknown;
    return out;
  }
  out.found = TaskStat::kFound;
  out.state = p[2];
  // Fields after the state: field 4 (ppid) is the first; num_threads is field 20, starttime 22.
  p += 3;
  for (int field = 4; field <= 22 && *p != '\0'; ++field) {
    while (*p == ' ') ++p;
    char* end = nullptr;
    unsigned long long v = std::strtoull(p, &end, 10);
    if (field == 20) out.threads = static_cast<long>(v);
    if (field == 22) out.start_time = v;
    if (end == p) break;
    p = end;
  }
  return out;
}

bool Zombie(char state) { return state == 'Z' || state == 'X' || state == 'x'; }

// 0 when it cannot be read (no /proc, out of descriptors).
uint64_t StartTimeOf(uint32_t pid) {
  TaskStat s = ReadStat(pid);
  return s.found == TaskStat::kFound ? s.start_time : 0;
}

}  // namespace

uint32_t CurrentTid() {
  if (t_tid == 0) t_tid = static_cast<uint32_t>(::syscall(SYS_gettid));
  return t_tid;
}

bool TaskAlive(uint32_t tid) {
  TaskStat s = ReadStat(tid);
  if (s.found == TaskStat::kGone) return false;
  if (s.found == TaskStat::kUnknown) return true;
  return !Zombie(s.state);
}

OwnerAcquire TryAcquireOwnerWord(std::atomic<uint32_t>* word, uint32_t tid) {
  uint32_t v = word->load(std::memory_order_relaxed);
  if (v == 0) {
    return word->compare_exchange_strong(v, tid, std::memory_order_acquire)
               ? OwnerAcquire::kAcquired
               : OwnerAcquire::kTimedOut;
  }
  const uint32_t holder = v & kOwnerTidMask;
  // Keep the waiters bit: others may be sleeping.
  if (holder != 0 && holder != tid && !TaskAlive(holder) &&
      word->compare_exchange_strong(v, tid | (v & kOwnerWaitersBit), std::memory_order_acquire)) {
    return OwnerAcquire::kOwnerDied;
  }
  return OwnerAcquire::kTimedOut;
}

OwnerAcquire AcquireOwnerWord(std::atomic<uint32_t>* word, uint32_t tid,
                              const Deadline& deadline) {
  for (;;) {
    uint32_t v = word->load(std::memory_order_relaxed);
    if (v == 0) {
      // Others may still sleep: take it with the waiters bit so the release wakes one.
      if (word->compare_exchange_strong(v, tid | kOwnerWaitersBit, std::memory_order_acquire)) {
        return OwnerAcquire::kAcquired;
      }
      continue;
    }
    if (!(v & kOwnerWaitersBit)) {
      if (!word->compare_exchange_strong(v, v | kOwnerWaitersBit, std::memory_order_relaxed)) {
        continue;
      }
      v |= kOwnerWaitersBit;
    }
    if (deadline.Expired()) return OwnerAcquire::kTimedOut;
    if (FutexWait(word, v, deadline.Slice(absl::Nanoseconds(kOwnerCheckNs))) !=
        FutexResult::kTimedOut) {
      continue;
    }
    if (deadline.Expired()) {
      // One last attempt: the word may have been freed at the deadline.
      uint32_t z = 0;
      return word->compare_exchange_strong(z, tid | kOwnerWaitersBit, std::memory_order_acquire)
                 ? OwnerAcquire::kAcquired
                 : OwnerAcquire::kTimedOut;
    }
    uint32_t now = word->load(std::memory_order_relaxed);
    const uint32_t holder = now & kOwnerTidMask;
    if (holder != 0 && holder != tid && !TaskAlive(holder) &&
        word->compare_exchange_strong(now, tid | kOwnerWaitersBit, std::memory_order_acquire)) {
      return OwnerAcquire::kOwnerDied;
    }
  }
}

uint32_t ReleaseOwnerWord(std::atomic<uint32_t>* word, bool wake_all) {
  const uint32_t old = word->exchange(0, std::memory_order_release);
  if (old & kOwnerWaitersBit) FutexWake(word, wake_all ? INT32_MAX : 1);
  return old;
}

uint64_t CurrentProcessOwner() {
  static std::atomic<uint64_t> cached{0};
  const pid_t pid = CurrentPid();
  uint64_t v = cached.load(std::memory_order_relaxed);
  if (v != 0 && OwnerPid(v) == pid) return v;
  const uint64_t start = StartTimeOf(static_cast<uint32_t>(pid)) & 0xffffffffu;
  v = static_cast<uint32_t>(pid) | (start << 32);
  // Cached only when the start time was read: a failed read (start 0, which ProcessOwnerAlive
  // treats as "unknown") is tried again next time.
  if (start != 0) cached.store(v, std::memory_order_relaxed);
  return v;
}

bool ProcessOwnerAlive(uint64_t owner) {
  const pid_t pid = OwnerPid(owner);
  if (pid <= 0) return false;
  TaskStat s = ReadStat(static_cast<uint32_t>(pid));
  if (s.found == TaskStat::kGone) return false;
  if (s.found == TaskStat::kUnknown) return true;
  // A process whose main thread exited shows its leader as a zombie while other threads run.
  if (Zombie(s.state) && s.threads <= 1) return false;
  // An owner word written without a start time (it could not be read then) is taken as this
  // pid's: alive, the safe answer, since a wrong "dead" lets a second writer into a live ring.
  if ((owner >> 32) == 0) return true;
  return (s.start_time & 0xffffffffu) == (owner >> 32);
}

}  // namespace mproc
