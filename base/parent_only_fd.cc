#include "base/parent_only_fd.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>

#include "base/process_id.h"

namespace mproc {
namespace {

// Each entry: 0 when free, else the descriptor + 1 (so the zero-initialised table is empty).
std::atomic<int> g_listed[kParentOnlyMax];

void InForkChild() { (void)ReleaseParentOnlyFdsInForkChild(); }

// At static initialisation, before any thread can fork: a fork while a lazily initialised
// static is being set up would leave the child's guard taken.
const bool g_registered = ::pthread_atfork(nullptr, nullptr, InForkChild) == 0;

}  // namespace

ParentOnlyListing::ParentOnlyListing(int fd) {
  if (fd < 0 || !g_registered) return;
  for (std::atomic<int>& e : g_listed) {
    int expected = 0;
    if (e.load(std::memory_order_relaxed) == 0 &&
        e.compare_exchange_strong(expected, fd + 1, std::memory_order_acq_rel)) {
      fd_ = fd;
      pid_ = CurrentPid();
      return;
    }
  }
}

ParentOnlyListing& ParentOnlyListing::operator=(ParentOnlyListing&& o) noexcept {
  if (this != &o) {
    Reset();
    fd_ = o.fd_;
    pid_ = o.pid_;
    o.fd_ = -1;
  }
  return *this;
}

void ParentOnlyListing::Reset() {
  if (fd_ < 0) return;
  const int want = fd_ + 1;
  fd_ = -1;
  // In a fork child the list was emptied; the number may be listed again by the child's own.
  if (pid_ != CurrentPid()) return;
  for (std::atomic<int>& e : g_listed) {
    int expected = want;
    if (e.load(std::memory_order_relaxed) == want &&
        e.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) {
      return;
    }
  }
}

int ReleaseParentOnlyFdsInForkChild() {
  int released = 0;
  int hole = -1;  // the placeholder: /dev/null, else an eventfd (no file system needed)
  for (std::atomic<int>& e : g_listed) {
    const int v = e.exchange(0, std::memory_order_acq_rel);
    if (v == 0) continue;
    const int fd = v - 1;
    if (hole < 0) hole = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (hole < 0) hole = ::eventfd(0, EFD_CLOEXEC);
    // With no placeholder at all (no descriptor free), closing is what is left.
    if (hole < 0 || ::dup3(hole, fd, O_CLOEXEC) < 0) ::close(fd);
    ++released;
  }
  if (hole >= 0) ::close(hole);
  return released;
}

int ParentOnlyFdCount() {
  int n = 0;
  for (const std::atomic<int>& e : g_listed) n += e.load(std::memory_order_relaxed) != 0;
  return n;
}

}  // namespace mproc
