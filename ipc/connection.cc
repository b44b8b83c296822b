#include "ipc/connection.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/syscall.h"
#include "ipc/internal/ring_link.h"
#include "serialize/cpython_framing.h"

namespace mproc {
namespace {

constexpr size_t kMaxFds = 253;  // SCM_MAX_FD

using ipc_internal::LinkRecord;
using ipc_internal::RingLink;

// Holds a direction's writer or reader turn for one call.
class Turn {
 public:
  Turn(RingLink* link, int end, int sock, bool reader)
      : link_(link), end_(end), sock_(sock), reader_(reader) {}
  absl::Status Take(const Deadline& deadline) {
    absl::Status s = reader_ ? link_->LockReader(end_, sock_, deadline)
                             : link_->LockWriter(end_, sock_, deadline);
    held_ = s.ok();
    return s;
  }
  ~Turn() {
    if (!held_) return;
    if (reader_) {
      link_->UnlockReader(end_);
    } else {
      link_->UnlockWriter(end_);
    }
  }
  Turn(const Turn&) = delete;
  Turn& operator=(const Turn&) = delete;

 private:
  RingLink* link_;
  int end_;
  int sock_;
  bool reader_;
  bool held_ = false;
};

// A send or receive cut off partway through a message: the same error, saying that this
// direction is closed now.
absl::Status Partway(const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(s.message(), " (partway through a message: this "
                                             "direction of the connection is closed)"));
}

}  // namespace

absl::StatusOr<Connection> Connection::FromFd(UniqueFd fd, bool readable, bool writable) {
  if (!fd.ok() || ::fcntl(fd.get(), F_GETFD) < 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid descriptor for a Connection: ",
                                                   fd.get()));
  }
  if (!readable && !writable) {
    return absl::InvalidArgumentError("a Connection must be readable or writable");
  }
  return Connection(std::move(fd), readable, writable);
}

absl::Status Connection::CheckOpen(bool for_read) const {
  if (!fd_.ok()) return absl::FailedPreconditionError("connection is closed");
  if (for_read && !readable_) {
    if (!read_lost_.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the read direction of this connection was closed because the stream lost its "
          "framing (", read_lost_, "); no more messages can be read from it"));
    }
    return absl::FailedPreconditionError("connection is write-only");
  }
  if (!for_read && write_torn_) {
    return absl::FailedPreconditionError(
        "an earlier Send failed partway through its message: this end can no longer be written");
  }
  if (!for_read && !writable_) return absl::FailedPreconditionError("connection is read-only");
  return absl::OkStatus();
}

void Connection::Close() {
  fd_.Reset();
  link_.reset();
  poll_fd_.Reset();
  local_ready_.Reset();
}

absl::Status Connection::SendParts(std::span<const int> fds,
                                   const std::span<const std::byte>* bytes,
                                   const Deadline& deadline, bool announce) {
  if (link_ == nullptr) {
    // As on a duplex Pipe: a descriptor that is not open is INVALID_ARGUMENT, nothing sent.
    MPROC_RETURN_IF_ERROR(CheckDescriptorsOpen(fds));
    if (!fds.empty() || announce) MPROC_RETURN_IF_ERROR(SendFds(fds, deadline));
    if (bytes == nullptr) return absl::OkStatus();
    bool started = false;
    absl::Status s = WriteCPythonMessage(fd_.get(), *bytes, deadline, &started);
    if (s.ok() || absl::IsOutOfRange(s) || !started) return s;  // sent, peer gone, or nothing sent
    // Cut off partway: the peer would read our next message as the rest of this one. Our
    // side stops writing, and the peer sees end of file where the message breaks off.
    write_torn_ = true;
    ::shutdown(fd_.get(), SHUT_WR);
    return Partway(s);
  }
  if (fds.size() > kMaxFds) return SendFds(fds, deadline);  // its error, before any record
  // A descriptor that is not open would fail the sendmsg after its record was announced, and
  // the receiver would wait for it: refuse it first.
  MPROC_RETURN_IF_ERROR(CheckDescriptorsOpen(fds));
  Turn turn(link_.get(), end_, fd_.get(), /*reader=*/false);
  MPROC_RETURN_IF_ERROR(turn.Take(deadline));
  MPROC_RETURN_IF_ERROR(link_->CheckPeer(end_, fd_.get()));
  // Socket bytes that an announced record promises go through RingLink::WriteSocketPart
  // (the direction marked busy around them; torn when cut off partway).
  auto socket_part = [&](LinkRecord kind, auto write) -> absl::Status {
    bool announced = false;
    absl::Status s = link_->WriteSocketPart(end_, fd_.get(), kind, deadline, write, &announced);
    if (!announced) return s;  // nothing announced: nothing cut off
    return s.ok() || absl::IsOutOfRange(s) ? s : Partway(s);
  };
  if (!fds.empty()) {
    MPROC_RETURN_IF_ERROR(socket_part(LinkRecord::kHandle, [&] { return SendFds(fds, deadline); }));
  }
  if (bytes == nullptr) return absl::OkStatus();
  if (bytes->size() <= ipc_internal::kLinkInlineMax) {
    return link_->Append(end_, fd_.get(), LinkRecord::kData, *bytes, deadline);
  }
  // A long message keeps the socket's buffering: a Send of it may complete before the peer
  // reads, as on a plain socket, which pieces streamed through the ring could not promise.
  return socket_part(LinkRecord::kSocketMessage,
                     [&] { return WriteCPythonMessage(fd_.get(), *bytes, deadline); });
}

absl::Status Connection::SendEncoded(const EncodeBuffer& buf, const Deadline& deadline,
                                     bool announce) {
  MPROC_RETURN_IF_ERROR(CheckOpen(false));
  const std::span<const std::byte> bytes = buf.bytes();
  return SendParts(buf.fds(), &bytes, deadline, announce);
}

absl::Status Connection::SendBytes(std::string_view data, absl::Duration timeout) {
  MPROC_RETURN_IF_ERROR(CheckOpen(false));
  const std::span<const std::byte> bytes = std::as_bytes(std::span(data.data(), data.size()));
  return SendParts({}, &bytes, Deadline::After(timeout));
}

absl::Status Connection::SendBytes(std::span<const std::byte> data, size_t offset,
                                   std::optional<size_t> size, absl::Duration timeout) {
  MPROC_RETURN_IF_ERROR(CheckOpen(false));
  if (offset > data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("offset ", offset, " is beyond the buffer of ", data.size(), " bytes"));
  }
  size_t n = size.value_or(data.size() - offset);
  if (n > data.size() - offset) {
    return absl::InvalidArgumentError(absl::StrCat("offset ", offset, " + size ", n,
                                                   " is beyond the buffer of ", data.size(),
                                                   " bytes"));
  }
  const std::span<const std::byte> bytes = data.subspan(offset, n);
  return SendParts({}, &bytes, Deadline::After(timeout));
}

absl::Status Connection::RecvMessage(std::optional<uint64_t> max_length, const Deadline& deadline,
                                     std::string* out, void* ctx, Visitor visit) {
  MPROC_RETURN_IF_ERROR(CheckOpen(true));
  absl::Status s;
  bool started = false;  // a byte of a socket message was consumed
  if (link_ != nullptr) {
    s = RingRecv(max_length.value_or(UINT64_MAX), deadline, out, ctx, visit, &started);
  } else {
    s = ReadCPythonMessage(fd_.get(), max_length.value_or(UINT64_MAX), deadline, out, &started);
    if (s.ok() && visit != nullptr) visit(ctx, std::as_bytes(std::span(out->data(), out->size())));
  }
  if (absl::IsDeadlineExceeded(s) && started) {
    // Timed out partway through a message: the rest would be read as the next message.
    s = absl::DeadlineExceededError(absl::StrCat(
        s.message(), " (partway through a message: the connection can no longer be read)"));
  } else if (s.ok() || absl::IsOutOfRange(s) || absl::IsDeadlineExceeded(s)) {
    return s;
  }
  // The stream is desynchronised (bad length, or an error or timeout mid-message): no more
  // reading, as CPython marks the connection unreadable.
  LoseReadFraming(std::string(s.message()));
  if (!writable_) fd_.Reset();
  return s;
}

void Connection::LoseReadFraming(std::string_view why) {
  readable_ = false;
  read_lost_ = std::string(why);
}

absl::Status Connection::RingRecv(uint64_t max_length, const Deadline& deadline,
                                  std::string* out, void* ctx, Visitor visit, bool* started) {
  Turn turn(link_.get(), end_, fd_.get(), /*reader=*/true);
  MPROC_RETURN_IF_ERROR(turn.Take(deadline));
  MPROC_ASSIGN_OR_RETURN(RingLink::Next next, link_->Peek(end_, fd_.get(), deadline));
  switch (next.kind) {
    case LinkRecord::kData:
      if (next.len > max_length) {
        link_->Consume(end_, next, nullptr);
        return absl::ResourceExhaustedError(
            absl::StrCat("bad message length: ", next.len, " exceeds the limit of ", max_length));
      }
      if (visit != nullptr) {
        if (std::span<const std::byte> view = link_->View(end_, next); !view.empty() || next.len == 0) {
          visit(ctx, view);
          link_->Consume(end_, next, nullptr);
          break;
        }
      }
      link_->Consume(end_, next, out);
      if (visit != nullptr) visit(ctx, std::as_bytes(std::span(out->data(), out->size())));
      break;
    case LinkRecord::kSocketMessage: {
      // RingLink::ReadSocketPart: the record stays until the message is read (a timeout
      // before its first byte leaves everything where it was, for the next Recv), reading is
      // marked busy, and a read cut off (end of file: the sender's side tore it) or left
      // partway here (a timeout, a bad length) tears the direction: no later byte of the
      // socket lines up.
      MPROC_RETURN_IF_ERROR(link_->ReadSocketPart(end_, fd_.get(), next, [&](bool* any) {
        absl::Status s = ReadCPythonMessage(fd_.get(), max_length, deadline, out, started);
        *any = *started;
        return s;
      }));
      if (visit != nullptr) visit(ctx, std::as_bytes(std::span(out->data(), out->size())));
      break;
    }
    case LinkRecord::kHandle:
      return absl::InvalidArgumentError(
          "a descriptor arrived where a message was expected (RecvHandle takes it)");
    default:
      return absl::InvalidArgumentError("a record a Pipe does not send, in its ring");
  }
  AfterRingTake();
  return absl::OkStatus();
}

void Connection::AfterRingTake() {
  if (!local_ready_.ok()) return;
  link_->ConsumeBells(end_, fd_.get());
  if (link_->Empty(end_)) {
    uint64_t v;
    (void)!::read(local_ready_.get(), &v, sizeof(v));
  }
}

absl::StatusOr<std::string> Connection::RecvBytes(std::optional<uint64_t> max_length,
                                                  absl::Duration timeout) {
  std::string out;
  MPROC_RETURN_IF_ERROR(RecvMessage(max_length, Deadline::After(timeout), &out));
  return out;
}

absl::StatusOr<size_t> Connection::RecvBytesInto(std::span<std::byte> buffer, size_t offset,
                                                 absl::Duration timeout) {
  if (offset > buffer.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("offset ", offset, " is beyond the buffer of ", buffer.size(), " bytes"));
  }
  MPROC_RETURN_IF_ERROR(RecvMessage(std::nullopt, Deadline::After(timeout), &scratch_));
  if (scratch_.size() > buffer.size() - offset) {
    absl::Status s = absl::ResourceExhaustedError(
        absl::StrCat("buffer too short: the message has ", scratch_.size(), " bytes, the buffer ",
                     buffer.size() - offset, " after offset ", offset));
    s.SetPayload(kMessagePayloadUrl, absl::Cord(scratch_));
    return s;
  }
  std::memcpy(buffer.data() + offset, scratch_.data(), scratch_.size());
  return scratch_.size();
}

absl::StatusOr<bool> Connection::Poll(absl::Duration timeout) {
  MPROC_RETURN_IF_ERROR(CheckOpen(true));
  Deadline deadline = timeout < absl::ZeroDuration() ? Deadline::After(absl::ZeroDuration())
                                                     : Deadline::After(timeout);
  if (link_ != nullptr) {
    Turn turn(link_.get(), end_, fd_.get(), /*reader=*/true);
    absl::Status s = turn.Take(deadline);
    if (absl::IsDeadlineExceeded(s)) return false;
    MPROC_RETURN_IF_ERROR(s);
    absl::StatusOr<RingLink::Next> next = link_->Peek(end_, fd_.get(), deadline);
    if (absl::IsDeadlineExceeded(next.status())) return false;
    return true;  // a message, end of file, or an error the next Recv reports
  }
  int r = WaitReadable(fd_.get(), deadline);
  if (r < 0) return ErrnoToStatus(-r, "poll(connection)");
  return r > 0;
}

absl::Status Connection::SendFds(std::span<const int> fds, const Deadline& deadline) {
  if (fds.size() > kMaxFds) {
    return absl::InvalidArgumentError(absl::StrCat("cannot send ", fds.size(),
                                                   " descriptors in one message (max 253)"));
  }
  // CPython's reduction.sendfds: one byte (the count mod 256) carrying SCM_RIGHTS.
  unsigned char count = static_cast<unsigned char>(fds.size() % 256);
  iovec iov = {&count, 1};
  std::vector<char> control(ScmRightsSpace(fds.size()));
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  AttachScmRights(&msg, fds, control.data());
  for (;;) {
    // Non-blocking when bounded, so a full socket buffer waits in AwaitFd, up to the deadline.
    const int flags = MSG_NOSIGNAL | (deadline.infinite() ? 0 : MSG_DONTWAIT);
    ssize_t n = RetryEintr([&] { return ::sendmsg(fd_.get(), &msg, flags); });
    if (n == 1) return absl::OkStatus();
    if (n < 0 && errno == EAGAIN) {
      MPROC_RETURN_IF_ERROR(AwaitFd(fd_.get(), POLLOUT, deadline, "sendmsg(handle)", 0, 1));
      continue;
    }
    if (n < 0 && errno == ENOTSOCK) {
      return absl::FailedPreconditionError(
          "descriptors travel only over a socket connection (a duplex Pipe or a Listener/Client "
          "connection), not over a simplex pipe");
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      return absl::OutOfRangeError("peer closed the connection");
    }
    return ErrnoToStatus(errno, "sendmsg(handle)");
  }
}

absl::Status Connection::RecvFds(const Deadline& deadline, std::vector<UniqueFd>* out,
                                 bool none_ok) {
  MPROC_RETURN_IF_ERROR(CheckOpen(true));
  if (link_ == nullptr) return RecvFdsOnSocket(deadline, out, none_ok);
  Turn turn(link_.get(), end_, fd_.get(), /*reader=*/true);
  MPROC_RETURN_IF_ERROR(turn.Take(deadline));
  MPROC_ASSIGN_OR_RETURN(RingLink::Next next, link_->Peek(end_, fd_.get(), deadline));
  if (next.kind != LinkRecord::kHandle && none_ok) return absl::OkStatus();  // the message next
  if (next.kind != LinkRecord::kHandle) {
    LoseReadFraming("received data where a descriptor was due");
    return absl::InvalidArgumentError("received data without a descriptor");
  }
  MPROC_RETURN_IF_ERROR(link_->ReadSocketPart(
      end_, fd_.get(), next, [&](bool*) { return RecvFdsOnSocket(deadline, out); }));
  AfterRingTake();
  return absl::OkStatus();
}

absl::Status Connection::RecvFdsOnSocket(const Deadline& deadline, std::vector<UniqueFd>* out,
                                         bool none_ok) {
  unsigned char count = 0;
  iovec iov = {&count, 1};
  std::vector<char> control(ScmRightsSpace(kMaxFds), 0);
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  for (;;) {
    if (!deadline.infinite()) {
      MPROC_RETURN_IF_ERROR(AwaitFd(fd_.get(), POLLIN, deadline, "recvmsg(handle)", 0, 1));
    }
    n = RetryEintr([&] { return ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC); });
    if (n < 0 && errno == EAGAIN) {
      MPROC_RETURN_IF_ERROR(AwaitFd(fd_.get(), POLLIN, deadline, "recvmsg(handle)", 0, 1));
      continue;
    }
    break;
  }
  if (n < 0) {
    if (errno == ENOTSOCK) {
      return absl::FailedPreconditionError("descriptors travel only over a socket connection");
    }
    return ErrnoToStatus(errno, "recvmsg(handle)");
  }
  CollectScmRights(&msg, out);
  if (n == 0) return absl::OutOfRangeError("peer closed the connection");
  if (msg.msg_flags & MSG_CTRUNC) {
    out->clear();
    return absl::InvalidArgumentError("descriptors were truncated in transit (MSG_CTRUNC)");
  }
  if (out->empty() && none_ok && count == 0) return absl::OkStatus();  // an announcement
  if (out->empty()) {
    // The stream now holds data that was not a descriptor message: unusable for reading.
    LoseReadFraming("received data where a descriptor was due");
    return absl::InvalidArgumentError("received data without a descriptor");
  }
  if (out->size() % 256 != count) {
    out->clear();
    return absl::InvalidArgumentError("descriptor count does not match its announcement");
  }
  return absl::OkStatus();
}

absl::Status Connection::SendHandle(int fd, absl::Duration timeout) {
  MPROC_RETURN_IF_ERROR(CheckOpen(false));
  const int fds[1] = {fd};
  return SendParts(fds, nullptr, Deadline::After(timeout));
}

absl::StatusOr<UniqueFd> Connection::RecvHandle(absl::Duration timeout) {
  std::vector<UniqueFd> fds;
  MPROC_RETURN_IF_ERROR(RecvFds(Deadline::After(timeout), &fds));
  if (fds.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("expected one descriptor, got ", fds.size()));
  }
  return std::move(fds[0]);
}

absl::StatusOr<std::pair<Connection, Connection>> Pipe(bool duplex) {
  int fds[2];
  if (duplex) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      return ErrnoToStatus(errno, "socketpair(Pipe)");
    }
    UniqueFd a(fds[0]);
    UniqueFd b(fds[1]);
    MPROC_ASSIGN_OR_RETURN(std::shared_ptr<RingLink> link, RingLink::Create());
    auto pair = std::make_pair(*Connection::FromFd(std::move(a), true, true),
                               *Connection::FromFd(std::move(b), true, true));
    pair.first.link_ = link;
    pair.first.end_ = 0;
    pair.second.link_ = std::move(link);
    pair.second.end_ = 1;
    return pair;
  }
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe2(Pipe)");
  IgnoreSigpipe();
  return std::make_pair(*Connection::FromFd(UniqueFd(fds[0]), true, false),
                        *Connection::FromFd(UniqueFd(fds[1]), false, true));
}

int Connection::fileno() const {
  if (!fd_.ok()) return -1;
  if (link_ == nullptr || !readable_) return fd_.get();
  if (poll_fd_.ok()) return poll_fd_.get();
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  UniqueFd ready(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  epoll_event ev = {};
  ev.events = EPOLLIN;
  if (!ep.ok() || !ready.ok() || ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd_.get(), &ev) != 0 ||
      ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, ready.get(), &ev) != 0) {
    // Out of descriptors: the socket, which shows end of file and descriptors but not
    // messages already in the ring. Wait() and Poll() are exact either way.
    return fd_.get();
  }
  if (link_->ArmBells(end_)) {
    const uint64_t one = 1;
    (void)!::write(ready.get(), &one, sizeof(one));
  }
  poll_fd_ = std::move(ep);
  local_ready_ = std::move(ready);
  return poll_fd_.get();
}

void Connection::EncodeTo(EncodeBuffer& b) const {
  const bool ring = fd_.ok() && link_ != nullptr;
  uint8_t flags = (readable_ ? 1 : 0) | (writable_ ? 2 : 0) | (fd_.ok() ? 4 : 0) | (ring ? 8 : 0);
  b.Append(&flags, 1);
  if (!fd_.ok()) return;
  b.PutVarint(b.AttachFd(fd_.get()));
  if (!ring) return;
  b.PutVarint(b.AttachFd(link_->segment().fd()));
  const uint8_t end = static_cast<uint8_t>(end_);
  b.Append(&end, 1);
}

bool Connection::DecodeFrom(DecodeReader& r) {
  uint8_t flags;
  if (!r.Read(&flags, 1)) return false;
  if (flags > 15 || ((flags & 8) && !(flags & 4))) return r.Fail("bad Connection flags");
  UniqueFd fd;
  std::shared_ptr<RingLink> link;
  uint8_t end = 0;
  if (flags & 4) {
    uint64_t index;
    if (!r.ReadVarint(&index) || !r.TakeFd(index, &fd)) return false;
  }
  if (flags & 8) {
    uint64_t index;
    UniqueFd seg_fd;
    if (!r.ReadVarint(&index) || !r.TakeFd(index, &seg_fd) || !r.Read(&end, 1)) return false;
    if (end > 1) return r.Fail("bad Connection end");
    absl::StatusOr<Segment> seg = Segment::FromFd(std::move(seg_fd));
    if (!seg.ok()) return r.Fail(std::string(seg.status().message()));
    absl::StatusOr<std::shared_ptr<RingLink>> l = RingLink::FromSegment(*std::move(seg));
    if (!l.ok()) return r.Fail(std::string(l.status().message()));
    link = *std::move(l);
  }
  *this = Connection(std::move(fd), (flags & 1) != 0, (flags & 2) != 0);
  link_ = std::move(link);
  end_ = end;
  return true;
}

}  // namespace mproc
