// libFuzzer target: a duplex Pipe's ring reader (ipc/ring_link.h) against a hostile peer that
// writes arbitrary records and positions into the shared ring and arbitrary bytes into the
// socket, then closes its end. Never crashes, never reads outside the ring, never returns a
// message longer than max_length, and every failure is one of the documented codes.
//
// Input: u64 published tail, u32 n, n bytes for the socket, then the ring's first bytes.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ipc/connection.h"
#include "ipc/ring_link.h"
#include "serialize/codec.h"
#include "shm/segment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 12 || size > 100000) return 0;
  uint64_t tail;
  uint32_t n_sock;
  std::memcpy(&tail, data, 8);
  std::memcpy(&n_sock, data + 8, 4);
  data += 12;
  size -= 12;
  if (n_sock > size) n_sock = static_cast<uint32_t>(size);
  absl::StatusOr<std::pair<mproc::Connection, mproc::Connection>> pair = mproc::Pipe();
  if (!pair.ok()) return 0;
  auto& [a, b] = *pair;
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
    const size_t ring_len = std::min<size_t>(size - n_sock, mproc::ipc_internal::kLinkRingBytes);
    std::memcpy(base + 4096, data + n_sock, ring_len);
    reinterpret_cast<mproc::ipc_internal::LinkDirection*>(base + 64)->tail.store(tail);
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
