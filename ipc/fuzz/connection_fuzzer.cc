// libFuzzer target: Connection's reader (CPython's length framing) against arbitrary peer bytes
// over a real socket, then end of file. Never crashes, never returns a message longer than
// max_length, and every failure is one of the documented codes.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "base/unique_fd.h"
#include "ipc/connection.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 100000) return 0;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  mproc::UniqueFd peer(sv[0]);
  absl::StatusOr<mproc::Connection> c = mproc::Connection::FromFd(mproc::UniqueFd(sv[1]), true, true);
  if (!c.ok()) std::abort();
  if (size > 0 && ::send(peer.get(), data, size, MSG_DONTWAIT) != static_cast<ssize_t>(size)) {
    return 0;
  }
  ::shutdown(peer.get(), SHUT_WR);
  constexpr uint64_t kMax = 1024;
  for (int i = 0; i < 1000; ++i) {
    absl::StatusOr<std::string> m = c->RecvBytes(kMax, absl::Milliseconds(50));
    if (m.ok()) {
      if (m->size() > kMax) std::abort();
      continue;
    }
    switch (m.status().code()) {
      case absl::StatusCode::kOutOfRange:          // end of file, also mid-message
      case absl::StatusCode::kInvalidArgument:     // a negative length
      case absl::StatusCode::kResourceExhausted:   // a length over max_length
      case absl::StatusCode::kFailedPrecondition:  // unreadable after a bad message
        return 0;
      default:
        std::abort();
    }
  }
  return 0;
}
