#include "base/parent_only_fd.h"

#include <unistd.h>

#include <atomic>

#include "base/process_id.h"

namespace mproc {
namespace {

// Each entry: 0 when free, else the descriptor + 1 (so the zero-initialised table is empty).
std::atomic<int> g_listed[kParentOnlyMax];

}  // namespace

ParentOnlyListing::ParentOnlyListing(int fd) {
  if (fd < 0) return;
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
  // In a fork child the list was emptied; the number may be listed again by the child's own.
  if (pid_ != CurrentPid()) {
    fd_ = -1;
    return;
  }
  for (std::atomic<int>& e : g_listed) {
    int expected = fd_ + 1;
    if (e.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) break;
  }
  fd_ = -1;
}

int CloseParentOnlyFdsInForkChild() {
  int closed = 0;
  for (std::atomic<int>& e : g_listed) {
    const int v = e.exchange(0, std::memory_order_acq_rel);
    if (v == 0) continue;
    ::close(v - 1);
    ++closed;
  }
  return closed;
}

int ParentOnlyFdCount() {
  int n = 0;
  for (const std::atomic<int>& e : g_listed) n += e.load(std::memory_order_relaxed) != 0;
  return n;
}

}  // namespace mproc
