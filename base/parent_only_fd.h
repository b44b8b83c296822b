// base/parent_only_fd.h — descriptors no fork child may keep: this process's ends of its
// channels to its own helpers (a zygote's control socket, a pool worker's socket and rings).
//
// fork() copies every descriptor. A child forked later (a second Pool's zygote and workers, a
// fork Process, a plain fork()) that keeps a copy of such an end keeps the channel open after
// this process closes its own: the helper never reads end of file, and whoever waits for it
// to end waits out a timeout (a fork Pool's zygote outlived its Pool by 5 s this way while
// another fork Pool lived). So the owner lists the descriptor while it is open, and every
// child made by fork() lets go of the listed ones at once (a pthread_atfork child handler).
//
//   ParentOnlyFd mine(UniqueFd(sv[0]));   // this process's end of a helper's channel
//   ... or, for a descriptor another object owns:
//   ParentOnlyListing listed(segment.fd());   // unlisted before the owner closes it
//
// The child does not close a listed number: it points it (dup3) at a placeholder, a socket
// whose peer is gone, so the channel is let go while the number stays taken, and a child that
// still uses its copy sees the channel closed (end of file, EPIPE). The child's copies of the
// owners (inherited objects) may close that number later, which then closes only the
// placeholder, never a descriptor the child opened meanwhile.
//
// The list is a fixed table of atomics (kParentOnlyMax entries; past that a descriptor is
// simply not listed and a child inherits it, as before), so the child handler takes no lock
// another thread held at the fork. A descriptor must be unlisted before it is closed (a
// listing that outlived its descriptor would blank another one that reused the number in
// later children): ParentOnlyFd does both in that order. A fork in the window between opening
// and listing (or unlisting and closing) leaves that one copy inherited, as every descriptor
// was before.
//
// Thread-safety: listing, unlisting and forking may happen on any threads at once.
#ifndef MPROC_BASE_PARENT_ONLY_FD_H_
#define MPROC_BASE_PARENT_ONLY_FD_H_

#include <sys/types.h>

#include <utility>

#include "base/unique_fd.h"

namespace mproc {

inline constexpr int kParentOnlyMax = 1024;

// Keeps `fd` (owned elsewhere) listed for its lifetime (-1: lists nothing). Move-only. A fork
// child's copy of a listing (the child's list starts empty) unlists nothing.
class ParentOnlyListing {
 public:
  ParentOnlyListing() = default;
  explicit ParentOnlyListing(int fd);
  ~ParentOnlyListing() { Reset(); }
  ParentOnlyListing(ParentOnlyListing&& o) noexcept : fd_(o.fd_), pid_(o.pid_) { o.fd_ = -1; }
  ParentOnlyListing& operator=(ParentOnlyListing&& o) noexcept;
  ParentOnlyListing(const ParentOnlyListing&) = delete;
  ParentOnlyListing& operator=(const ParentOnlyListing&) = delete;

  // Unlists the descriptor now (before its owner closes it).
  void Reset();
  // Whether the descriptor is listed (false when the table was full).
  bool listed() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
  pid_t pid_ = 0;  // the process that listed it
};

// A descriptor this process owns and keeps from its fork children: a UniqueFd, listed while
// it is open, unlisted before it closes (Reset, assignment, destruction).
class ParentOnlyFd {
 public:
  ParentOnlyFd() = default;
  explicit ParentOnlyFd(UniqueFd fd) : fd_(std::move(fd)), listing_(fd_.get()) {}
  ParentOnlyFd(ParentOnlyFd&& o) noexcept = default;
  ParentOnlyFd& operator=(ParentOnlyFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::move(o.fd_);
      listing_ = std::move(o.listing_);
    }
    return *this;
  }
  ~ParentOnlyFd() { Reset(); }

  int get() const { return fd_.get(); }
  bool ok() const { return fd_.ok(); }
  void Reset() {
    listing_.Reset();
    fd_.Reset();
  }

 private:
  UniqueFd fd_;
  ParentOnlyListing listing_;
};

// What the fork child handler does (called by it; exposed for tests): points every listed
// descriptor at a socket whose peer is gone (reads see end of file, writes EPIPE; /dev/null
// when no socket can be made; closed when no descriptor is free for either) and empties the list
// (what the child lists from then on is its own). Async-signal-safe. Returns how many.
int ReleaseParentOnlyFdsInForkChild();

// How many descriptors are listed now (for tests).
int ParentOnlyFdCount();

}  // namespace mproc

#endif  // MPROC_BASE_PARENT_ONLY_FD_H_
