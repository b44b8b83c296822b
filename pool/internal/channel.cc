#include "pool/internal/channel.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "base/status.h"
#include "base/syscall.h"
#include "shm/segment.h"

namespace mproc::pool_internal {

using ipc_internal::LinkRecord;
using ipc_internal::RingLink;

absl::Status ChannelSend(const Channel& c, uint8_t kind, std::span<const std::byte> head,
                         std::span<const std::byte> body, std::span<const int> fds,
                         const Deadline& deadline) {
  MPROC_RETURN_IF_ERROR(CheckDescriptorsOpen(fds));
  std::byte prefix[32];
  if (fds.empty() && 1 + head.size() <= sizeof(prefix)) {
    prefix[0] = std::byte{kind};
    if (!head.empty()) std::memcpy(prefix + 1, head.data(), head.size());
    return c.link->AppendMessage(c.end, c.sock,
                                 std::span<const std::byte>(prefix, 1 + head.size()), body,
                                 deadline);
  }
  // A frame with descriptors: announced in the ring, carried by the socket, as a Pipe's
  // (RingLink::WriteSocketPart).
  const std::span<const std::byte> parts[2] = {head, body};
  return c.link->WriteSocketPart(c.end, c.sock, LinkRecord::kSocketMessage, deadline, [&] {
    return WriteFrameParts(c.sock, kind, parts, fds, deadline, {}, FdKind::kStreamSocket);
  });
}

bool ChannelTorn(const Channel& c) { return c.link->Torn(c.end); }

absl::Status ChannelTake(const Channel& c, const RingLink::Next& next, Frame& frame,
                         std::string& scratch, Incoming* in) {
  in->held = false;
  in->fds.clear();
  if (next.kind == LinkRecord::kPart) {
    // A long message, streamed through the ring in pieces.
    MPROC_RETURN_IF_ERROR(c.link->TakeMessage(c.end, c.sock, next,
                                              Deadline::After(absl::Seconds(60)), &scratch));
    if (scratch.empty()) return absl::InvalidArgumentError("pool channel: empty message");
    in->kind = static_cast<uint8_t>(scratch[0]);
    in->payload = std::as_bytes(std::span(scratch.data(), scratch.size())).subspan(1);
    return absl::OkStatus();
  }
  if (next.kind == LinkRecord::kData) {
    if (next.len < 1) return absl::InvalidArgumentError("pool channel: empty record");
    std::span<const std::byte> view = c.link->View(c.end, next);
    if (view.empty()) {
      c.link->Consume(c.end, next, &scratch);
      view = std::as_bytes(std::span(scratch.data(), scratch.size()));
    } else {
      in->record = next;
      in->held = true;
    }
    in->kind = static_cast<uint8_t>(view[0]);
    in->payload = view.subspan(1);
    return absl::OkStatus();
  }
  if (next.kind != LinkRecord::kSocketMessage) {
    return absl::InvalidArgumentError("pool channel: unexpected record");
  }
  MPROC_RETURN_IF_ERROR(c.link->ReadSocketPart(c.end, c.sock, next, [&](bool*) {
    return ReadFrameInto(c.sock, frame, Deadline::After(absl::Seconds(60)), {},
                         FdKind::kStreamSocket);
  }));
  in->kind = frame.kind;
  in->payload = frame.payload();
  in->fds = std::move(frame.fds);
  return absl::OkStatus();
}

void ChannelRelease(const Channel& c, Incoming& in) {
  if (in.held) c.link->Consume(c.end, in.record, nullptr);
  in.held = false;
}

bool SocketAtEof(int sock) {
  char b;
  const ssize_t n = RetryEintr([&] { return ::recv(sock, &b, 1, MSG_PEEK | MSG_DONTWAIT); });
  return n == 0 || (n < 0 && errno != EAGAIN);
}

absl::StatusOr<WorkerChannel> OpenChannel(int sock) {
  Frame f;
  MPROC_RETURN_IF_ERROR(ReadFrameInto(sock, f, Deadline::After(absl::Seconds(60)), {},
                                      FdKind::kStreamSocket));
  if (f.kind != kLink || f.fds.size() != 1) {
    return absl::InvalidArgumentError("pool worker: its channel's rings did not come first");
  }
  MPROC_ASSIGN_OR_RETURN(Segment seg, Segment::FromFd(std::move(f.fds[0])));
  MPROC_ASSIGN_OR_RETURN(std::shared_ptr<RingLink> link, RingLink::FromSegment(std::move(seg)));
  WorkerChannel w;
  w.c = Channel{sock, link.get(), 1};
  w.link = std::move(link);
  return w;
}

}  // namespace mproc::pool_internal
