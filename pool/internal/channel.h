// pool/internal/channel.h — a pool worker's channel: one stream socket and a RingLink's two
// rings (ipc/internal/ring_link.h), the parent at end 0 and the worker at end 1.
//
// A message is a kind byte and its bytes. Without descriptors it goes through the ring with no
// system call (one record, or pieces streamed while the other side copies them out); with
// descriptors it is announced by a record and written to the socket as a frame. A side that
// finds nothing to read spins briefly (base/spin.h), then sleeps in poll() on the socket,
// where the sender's bell wakes it. A message cut off partway (partly published, or an
// announced frame not written whole) tears its direction: the receiver sees end of file, never
// a message spliced from two (ChannelTorn says so on the sending side).

#ifndef MPROC_POOL_INTERNAL_CHANNEL_H_
#define MPROC_POOL_INTERNAL_CHANNEL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/deadline.h"
#include "base/unique_fd.h"
#include "ipc/internal/ring_link.h"
#include "serialize/frame.h"

namespace mproc::pool_internal {

// Message kinds.
inline constexpr uint8_t kTask = 1;
inline constexpr uint8_t kStop = 2;
inline constexpr uint8_t kResult = 3;
inline constexpr uint8_t kInitFailed = 4;
inline constexpr uint8_t kLink = 5;  // parent -> worker, first, on the socket: the rings' segment

struct Channel {
  int sock = -1;
  ipc_internal::RingLink* link = nullptr;
  int end = 0;
};

// Sends one message. Descriptors are checked before anything is announced, so a message
// naming a closed one fails alone (INVALID_ARGUMENT) and the channel goes on. OUT_OF_RANGE:
// the other side is gone.
absl::Status ChannelSend(const Channel& c, uint8_t kind, std::span<const std::byte> head,
                         std::span<const std::byte> body, std::span<const int> fds,
                         const Deadline& deadline);
// Whether this side's sending direction was torn (a message cut off partway).
bool ChannelTorn(const Channel& c);

// One received message. `payload` points into the ring (until ChannelRelease), into `scratch`
// (a record that wraps around the ring's end, or a long message's pieces) or into `frame` (a
// socket message).
struct Incoming {
  uint8_t kind = 0;
  std::span<const std::byte> payload;
  std::vector<UniqueFd> fds;
  ipc_internal::RingLink::Next record = {};
  bool held = false;  // the record is still in the ring
};

// Takes the message whose first record Peek/TryPeek returned as `next`.
absl::Status ChannelTake(const Channel& c, const ipc_internal::RingLink::Next& next,
                         Frame& frame, std::string& scratch, Incoming* in);
// Frees the ring record `in` still holds.
void ChannelRelease(const Channel& c, Incoming& in);

// True when the socket is at end of file (the peer process is gone).
bool SocketAtEof(int sock);

// The worker's side of its channel: the parent sends the rings' segment first, on the socket.
struct WorkerChannel {
  Channel c;
  std::shared_ptr<ipc_internal::RingLink> link;
};
absl::StatusOr<WorkerChannel> OpenChannel(int sock);

}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_CHANNEL_H_
