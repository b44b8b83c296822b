// ipc/wait.h — Wait: CPython's multiprocessing.connection.wait over descriptors.
//
//   std::vector<int> ready = Wait({conn.fileno(), process.sentinel()}, absl::Seconds(1)).value();
//
// Any Waitable exposes a pollable descriptor: a Connection's fileno(), a Listener's fileno()
// (readable when a client waits), a Queue's fileno() (its doorbell: readable while items wait),
// a Process's sentinel() (its pidfd: readable once it exited)
// — spawn/ and ipc/ never include each other, the descriptor is the contract. Returns the
// ready subset in the order given; end of file and hang-up count as ready; nothing ready by
// the timeout returns an empty list (a negative timeout is zero). INVALID_ARGUMENT for a
// negative or closed descriptor.
#ifndef MPROC_IPC_WAIT_H_
#define MPROC_IPC_WAIT_H_

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mproc {

[[nodiscard]] absl::StatusOr<std::vector<int>> Wait(std::span<const int> fds,
                                      absl::Duration timeout = absl::InfiniteDuration());
[[nodiscard]] inline absl::StatusOr<std::vector<int>> Wait(std::initializer_list<int> fds,
                                             absl::Duration timeout = absl::InfiniteDuration()) {
  return Wait(std::span<const int>(fds.begin(), fds.size()), timeout);
}

}  // namespace mproc

#endif  // MPROC_IPC_WAIT_H_
