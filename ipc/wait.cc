#include "ipc/wait.h"

#include <poll.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/deadline.h"
#include "base/io_ring.h"
#include "base/status.h"

namespace mproc {

absl::StatusOr<std::vector<int>> Wait(std::span<const int> fds, absl::Duration timeout) {
  std::vector<pollfd> pfds;
  pfds.reserve(fds.size());
  for (int fd : fds) {
    if (fd < 0) return absl::InvalidArgumentError(absl::StrCat("Wait: invalid descriptor ", fd));
    pfds.push_back({fd, POLLIN, 0});
  }
  Deadline deadline = Deadline::After(timeout < absl::ZeroDuration() ? absl::ZeroDuration()
                                                                      : timeout);
  for (;;) {
    int n = WaitEvents(std::span<pollfd>(pfds), deadline);  // poll(2) or io_uring
    if (n < 0) return ErrnoToStatus(-n, "poll(Wait)");
    std::vector<int> ready;
    for (const pollfd& p : pfds) {
      if (p.revents & POLLNVAL) {
        return absl::InvalidArgumentError(absl::StrCat("Wait: descriptor ", p.fd, " is closed"));
      }
      if (p.revents != 0) ready.push_back(p.fd);
    }
    if (!ready.empty() || deadline.Expired()) return ready;
  }
}

}  // namespace mproc
