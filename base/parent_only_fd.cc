#include "base/parent_only_fd.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include "base/process_id.h"

namespace mproc {
namespace {

// Each entry: 0 when free, else the descriptor + 1 (so the zero-initialised table is empty).
std::atomic<int> g_listed[kParentOnlyMax];

void InForkChild() { (void)ReleaseParentOnlyFdsInForkChild(); }

// The child handler's registration: 0 not yet, 1 under way, 2 done, 3 failed. Done at static
// initialisation, and by the first listing if that comes first (another translation unit's
// static initialiser); no lock and no guarded static, which a fork on another thread could
// leave taken in the child.
std::atomic<int> g_registration{0};

bool EnsureRegistered() {
  int state = g_registration.load(std::memory_order_acquire);
  if (state == 0 && g_registration.compare_exchange_strong(state, 1, std::memory_order_acq_rel)) {
    state = ::pthread_atfork(nullptr, nullptr, InForkChild) == 0 ? 2 : 3;
    g_registration.store(state, std::memory_order_release);
  }
  return state != 3;  // under way on another thread: it will be registered; list anyway
}

const bool g_registered_at_start = EnsureRegistered();

}  // namespace

ParentOnlyListing::ParentOnlyListing(int fd) {
  if (fd < 0 || !EnsureRegistered()) return;
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
  // The placeholder: a socket whose peer is gone (reads see end of file, writes fail with
  // EPIPE, as on a channel whose other end closed), else /dev/null.
  int hole = -1;
  for (std::atomic<int>& e : g_listed) {
    const int v = e.exchange(0, std::memory_order_acq_rel);
    if (v == 0) continue;
    const int fd = v - 1;
    if (hole < 0) {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
        ::close(sv[1]);
        hole = sv[0];
      } else {
        hole = ::open("/dev/null", O_RDWR | O_CLOEXEC);
      }
    }
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
