// libFuzzer target: the production frame reader on arbitrary bytes — both the in-memory parser
// and ReadFrameInto over a real pipe and a real SOCK_SEQPACKET socket, with a small limit.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "serialize/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 60000) return 0;  // keep each input within one pipe buffer
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  mproc::FrameLimits limits{1 << 16};
  absl::StatusOr<mproc::Frame> f = mproc::ParseFrame(bytes, limits);
  if (f.ok() && f->payload().size() + mproc::kFrameHeaderSize != size) std::abort();

  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return 0;
  ::fcntl(p[1], F_SETPIPE_SZ, 1 << 16);
  ssize_t w = size ? ::write(p[1], data, size) : 0;
  ::close(p[1]);
  if (w == static_cast<ssize_t>(size)) {
    mproc::Frame frame;
    // Read every frame the bytes hold, until an error or the end.
    while (mproc::ReadFrameInto(p[0], frame, mproc::Deadline::After(absl::Milliseconds(10)), limits,
                                mproc::FdKind::kPipe)
               .ok()) {
      if (frame.payload().size() > limits.max_payload) std::abort();
    }
  }
  ::close(p[0]);

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0) {
    if (size > 0 && ::send(sv[0], data, size, MSG_DONTWAIT) == static_cast<ssize_t>(size)) {
      ::close(sv[0]);
      mproc::Frame frame;
      while (mproc::ReadFrameInto(sv[1], frame, mproc::Deadline::After(absl::Milliseconds(10)),
                                  limits, mproc::FdKind::kSeqpacketSocket)
                 .ok()) {
      }
    } else {
      ::close(sv[0]);
    }
    ::close(sv[1]);
  }
  return 0;
}
