// libFuzzer target: a duplex Pipe's ring reader (ipc/internal/ring_link.h) against a hostile peer that
// writes arbitrary records and positions into the shared ring and arbitrary bytes into the
// socket, then closes its end. Never crashes, never reads outside the ring, never returns a
// message longer than max_length, and every failure is one of the documented codes.
//
// The hostile peer attacks direction 1, whose ring is the last thing in the segment, so a read
// past the ring would leave the mapping.
//
// Input: u64 head, u64 published tail, u32 n, n bytes for the socket, then the bytes of the
// ring from the head's offset on (wrapping).
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ipc/connection.h"
#include "ipc/internal/ring_link.h"
#include "serialize/codec.h"
#include "shm/segment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 20 || size > 100000) return 0;
  uint64_t head, tail;
  uint32_t n_sock;
  std::memcpy(&head, data, 8);
  std::memcpy(&tail, data + 8, 8);
  std::memcpy(&n_sock, data + 16, 4);
  data += 20;
  size -= 20;
  if (n_sock > size) n_sock = static_cast<uint32_t>(size);
  absl::StatusOr<std::pair<mproc::Connection, mproc::Connection>> pair = mproc::Pipe();
  if (!pair.ok()) return 0;
  auto& [b, a] = *pair;  // a, the peer, is end 1: it sends on direction 1
  {
    // The peer's view: its socket and the shared segment.
    mproc::EncodeBuffer buf;
    mproc::Encode(a, buf);
    if (buf.fds().size() != 2) std::abort();
    const int sock = buf.fds()[0];
    absl::StatusOr<mproc::Segment> seg = mproc::Segment::FromFd(mproc::UniqueFd(::dup(buf.fds()[1])));
    if (!seg.ok()) std::abort();
    absl::StatusOr<mproc::Mapping> m = seg->Map();
    if (!m.ok()) std::abort();
    auto* base = static_cast<std::byte*>(m->data());
    constexpr uint64_t kRing = mproc::ipc_internal::kLinkRingBytes;
    mproc::ipc_internal::ByteRing<kRing> ring(base + 4096 + kRing);
    ring.CopyIn(head, data + n_sock, std::min<size_t>(size - n_sock, kRing));
    auto* dir1 = reinterpret_cast<mproc::ipc_internal::LinkDirection*>(
        base + 64 + sizeof(mproc::ipc_internal::LinkDirection));
    dir1->head.store(head);
    dir1->tail.store(tail);
    if (n_sock > 0 && ::send(sock, data, n_sock, MSG_DONTWAIT) != static_cast<ssize_t>(n_sock)) {
      return 0;
    }
  }
  a.Close();
  constexpr uint64_t kMax = 4096;
  for (int i = 0; i < 200; ++i) {
    if (i % 3 == 1) {
      absl::StatusOr<bool> ready = b.Poll();
      if (!ready.ok() && !absl::IsFailedPrecondition(ready.status())) std::abort();
      continue;
    }
    absl::Status s;
    if (i % 3 == 2) {
      s = b.RecvHandle(absl::ZeroDuration()).status();
    } else {
      absl::StatusOr<std::string> msg = b.RecvBytes(kMax, absl::ZeroDuration());
      if (msg.ok() && msg->size() > kMax) std::abort();
      s = msg.status();
    }
    switch (s.code()) {
      case absl::StatusCode::kOk:
        continue;
      case absl::StatusCode::kInvalidArgument:     // a corrupt record, stray bytes, no handle
      case absl::StatusCode::kResourceExhausted:   // over max_length
        continue;                                  // (the connection is now unreadable)
      case absl::StatusCode::kOutOfRange:          // end of file
      case absl::StatusCode::kFailedPrecondition:  // unreadable after a bad message
      case absl::StatusCode::kDeadlineExceeded:    // a record whose socket bytes never came
        return 0;
      default:
        std::abort();
    }
  }
  return 0;
}
