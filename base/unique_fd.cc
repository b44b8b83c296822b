#include "base/unique_fd.h"

#include <unistd.h>

namespace mproc {

void CloseNoInt(int fd) noexcept {
  if (fd < 0) return;
  int saved = errno;
  // Linux releases the descriptor even when close() reports EINTR: never retry.
  ::close(fd);
  errno = saved;
}

}  // namespace mproc
