// base/parent_only_fd.h — descriptors no fork child may keep: this process's ends of its
// channels to its own helpers (a zygote's control socket, a pool worker's socket and rings).
//
// fork() copies every descriptor. A child forked later (a second Pool's zygote and workers, a
// fork Process) that keeps a copy of such an end keeps the channel open after this process
// closes its own: the helper never reads end of file, and whoever waits for it to end waits
// out a timeout (a fork Pool's zygote outlived its Pool by 5 s this way while another fork
// Pool lived). So the owner lists the descriptor while it is open, and every fork child of
// mproc's (spawn_internal::BeginChild, the zygote) closes the listed ones first thing.
//
//   UniqueFd mine = ...;                    // this process's end of a helper's channel
//   ParentOnlyListing listed(mine.get());   // declared after `mine`: unlisted before it closes
//
// The list is a fixed table of atomics (kParentOnlyMax entries; past that a descriptor is
// simply not listed and a child inherits it, as before), so a child may close the listed ones
// right after fork() without taking a lock another thread held at the fork. A descriptor must
// be unlisted before it is closed (a listing that outlived its descriptor would close another
// one that reused the number): ParentOnlyListing's destructor does it, hence the declaration
// order above. A fork in the window between opening and listing (or unlisting and closing)
// leaves that one copy inherited, as every descriptor was before.
//
// Thread-safety: listing, unlisting and forking may happen on any threads at once.
#ifndef MPROC_BASE_PARENT_ONLY_FD_H_
#define MPROC_BASE_PARENT_ONLY_FD_H_

#include <sys/types.h>

namespace mproc {

inline constexpr int kParentOnlyMax = 1024;

// Keeps `fd` listed for its lifetime (-1: lists nothing). Move-only. A fork child's copy of a
// listing (the child's list was emptied) unlists nothing.
class ParentOnlyListing {
 public:
  ParentOnlyListing() = default;
  explicit ParentOnlyListing(int fd);
  ~ParentOnlyListing() { Reset(); }
  ParentOnlyListing(ParentOnlyListing&& o) noexcept : fd_(o.fd_), pid_(o.pid_) { o.fd_ = -1; }
  ParentOnlyListing& operator=(ParentOnlyListing&& o) noexcept;
  ParentOnlyListing(const ParentOnlyListing&) = delete;
  ParentOnlyListing& operator=(const ParentOnlyListing&) = delete;

  // Unlists the descriptor now (before its owner closes it early).
  void Reset();
  // Whether the descriptor is listed (false when the table was full).
  bool listed() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
  pid_t pid_ = 0;  // the process that listed it
};

// In a child right after fork(): closes every listed descriptor and empties the list (what the
// child lists from then on is its own). Async-signal-safe. Returns how many it closed.
int CloseParentOnlyFdsInForkChild();

// How many descriptors are listed now (for tests).
int ParentOnlyFdCount();

}  // namespace mproc

#endif  // MPROC_BASE_PARENT_ONLY_FD_H_
