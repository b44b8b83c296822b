#include "ipc/connection.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/syscall.h"
#include "serialize/cpython_framing.h"

namespace mproc {
namespace {

constexpr size_t kMaxFds = 253;  // SCM_MAX_FD

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
  if (for_read && !readable_) return absl::FailedPreconditionError("connection is write-only");
  if (!for_read && !writable_) return absl::FailedPreconditionError("connection is read-only");
  return absl::OkStatus();
}

absl::Status Connection::SendEncoded(const EncodeBuffer& buf, const Deadline& deadline) {
  MPROC_RETURN_IF_ERROR(CheckOpen(false));
  if (!buf.fds().empty()) MPROC_RETURN_IF_ERROR(SendFds(buf.fds(), deadline));
  return WriteCPythonMessage(fd_.get(), buf.bytes(), deadline);
}

absl::Status Connection::SendBytes(std::string_view data, absl::Duration timeout) {
  MPROC_RETURN_IF_ERROR(CheckOpen(false));
  return WriteCPythonMessage(fd_.get(), data, Deadline::After(timeout));
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
  return WriteCPythonMessage(fd_.get(), data.subspan(offset, n), Deadline::After(timeout));
}

absl::Status Connection::RecvMessage(std::optional<uint64_t> max_length, const Deadline& deadline,
                                     std::string* out) {
  MPROC_RETURN_IF_ERROR(CheckOpen(true));
  absl::Status s = ReadCPythonMessage(fd_.get(), max_length.value_or(UINT64_MAX), deadline, out);
  if (!s.ok() && !absl::IsOutOfRange(s) && !absl::IsDeadlineExceeded(s)) {
    // The stream is desynchronised (bad length, or an error mid-message): no more reading,
    // as CPython marks the connection unreadable.
    readable_ = false;
    if (!writable_) fd_.Reset();
  }
  return s;
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
    ssize_t n = RetryEintr([&] { return ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL); });
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

absl::Status Connection::RecvFds(const Deadline& deadline, std::vector<UniqueFd>* out) {
  MPROC_RETURN_IF_ERROR(CheckOpen(true));
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
  if (out->empty()) {
    // The stream now holds data that was not a descriptor message: unusable for reading.
    readable_ = false;
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
  return SendFds(fds, Deadline::After(timeout));
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
    return std::make_pair(*Connection::FromFd(UniqueFd(fds[0]), true, true),
                          *Connection::FromFd(UniqueFd(fds[1]), true, true));
  }
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe2(Pipe)");
  IgnoreSigpipe();
  return std::make_pair(*Connection::FromFd(UniqueFd(fds[0]), true, false),
                        *Connection::FromFd(UniqueFd(fds[1]), false, true));
}

}  // namespace mproc
