#include "serialize/frame.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/syscall.h"

namespace mproc {
namespace {

constexpr size_t kInitialChunk = 64 << 10;

template <typename T>
void Put(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}
template <typename T>
T Get(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

union FdControl {
  char buf[CMSG_SPACE(sizeof(int) * kMaxFdsPerFrame)];
  cmsghdr align;
};

void EnsureCapacity(Frame& f, size_t want) {
  if (f.capacity >= want) return;
  std::unique_ptr<std::byte[]> next(new std::byte[want]);
  if (f.size) std::memcpy(next.get(), f.data.get(), f.size);
  f.data = std::move(next);
  f.capacity = want;
}

}  // namespace

FdKind DetectFdKind(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return FdKind::kPipe;
  int domain = 0, type = 0;
  socklen_t len = sizeof(domain);
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX) {
    return FdKind::kOtherSocket;
  }
  len = sizeof(type);
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return FdKind::kOtherSocket;
  if (type == SOCK_SEQPACKET) return FdKind::kSeqpacketSocket;
  if (type == SOCK_STREAM) return FdKind::kStreamSocket;
  return FdKind::kOtherSocket;
}

void EncodeFrameHeader(const FrameHeader& h, std::byte out[kFrameHeaderSize]) {
  Put<uint32_t>(out, kFrameMagic);
  out[4] = static_cast<std::byte>(kFrameVersion);
  out[5] = static_cast<std::byte>(h.kind);
  Put<uint16_t>(out + 6, h.fd_count);
  Put<uint64_t>(out + 8, h.payload_len);
}

absl::StatusOr<FrameHeader> ParseFrameHeader(std::span<const std::byte> b,
                                             const FrameLimits& limits) {
  if (b.size() < kFrameHeaderSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame header: ", b.size(), " bytes, need ", kFrameHeaderSize));
  }
  uint32_t magic = Get<uint32_t>(b.data());
  if (magic != kFrameMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame header: bad magic 0x", absl::Hex(magic), " (not an mproc frame)"));
  }
  uint8_t version = static_cast<uint8_t>(b[4]);
  if (version != kFrameVersion) {
    return absl::InvalidArgumentError(absl::StrCat("frame header: unsupported version ", version,
                                                   " (this build speaks ", kFrameVersion, ")"));
  }
  FrameHeader h;
  h.kind = static_cast<uint8_t>(b[5]);
  h.fd_count = Get<uint16_t>(b.data() + 6);
  h.payload_len = Get<uint64_t>(b.data() + 8);
  if (h.fd_count > kMaxFdsPerFrame) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame header: ", h.fd_count, " fds exceed the kernel's ", kMaxFdsPerFrame));
  }
  if (h.payload_len > limits.max_payload) {
    return absl::ResourceExhaustedError(absl::StrCat("frame of ", h.payload_len,
                                                     " bytes exceeds the limit of ",
                                                     limits.max_payload));
  }
  return h;
}

absl::Status WriteFrame(int fd, uint8_t kind, std::span<const std::byte> payload,
                        std::span<const int> fds, const Deadline& deadline,
                        const FrameLimits& limits, FdKind fd_kind) {
  const std::span<const std::byte> parts[1] = {payload};
  return WriteFrameParts(fd, kind, parts, fds, deadline, limits, fd_kind);
}

absl::Status WriteFrameParts(int fd, uint8_t kind,
                             std::span<const std::span<const std::byte>> parts,
                             std::span<const int> fds, const Deadline& deadline,
                             const FrameLimits& limits, FdKind fd_kind) {
  constexpr size_t kMaxParts = 4;
  if (parts.size() > kMaxParts) {
    return absl::InvalidArgumentError(absl::StrCat("a frame is written from at most ", kMaxParts,
                                                   " parts, not ", parts.size()));
  }
  size_t payload_size = 0;
  for (const auto& part : parts) payload_size += part.size();
  if (fds.size() > kMaxFdsPerFrame) {
    return absl::InvalidArgumentError(absl::StrCat("frame carries ", fds.size(),
                                                   " fds; at most ", kMaxFdsPerFrame, " fit"));
  }
  if (payload_size > limits.max_payload) {
    return absl::InvalidArgumentError(absl::StrCat("frame payload of ", payload_size,
                                                   " bytes exceeds the limit of ",
                                                   limits.max_payload));
  }
  if (fd_kind == FdKind::kDetect) fd_kind = DetectFdKind(fd);
  const bool unix_socket =
      fd_kind == FdKind::kStreamSocket || fd_kind == FdKind::kSeqpacketSocket;
  if (!fds.empty() && !unix_socket) {
    return absl::FailedPreconditionError(
        "frame carries file descriptors, which travel only over AF_UNIX sockets, not a pipe");
  }
  std::byte header[kFrameHeaderSize];
  EncodeFrameHeader({kind, static_cast<uint16_t>(fds.size()), payload_size}, header);
  const size_t total = kFrameHeaderSize + payload_size;

  // Pipes: writev (SIGPIPE ignored: base/syscall.h IgnoreSigpipe); sockets: sendmsg with
  // MSG_NOSIGNAL, the fds riding on the first byte.
  const bool socket = fd_kind != FdKind::kPipe;
  if (!socket) IgnoreSigpipe();
  iovec whole_buf[1 + kMaxParts];
  size_t n_whole = 0;
  whole_buf[n_whole++] = {header, kFrameHeaderSize};
  for (const auto& part : parts) {
    if (!part.empty()) whole_buf[n_whole++] = {const_cast<std::byte*>(part.data()), part.size()};
  }
  const std::span<const iovec> whole(whole_buf, n_whole);
  FdControl control;
  size_t done = 0;
  while (done < total) {
    if (!deadline.infinite()) {
      MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLOUT, deadline, "frame write", done, total));
    }
    // What remains of header + payload after `done` bytes.
    iovec iov[1 + kMaxParts];
    size_t n_iov = 0, skip = done;
    for (const iovec& v : whole) {
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      iov[n_iov++] = {static_cast<char*>(v.iov_base) + skip, v.iov_len - skip};
      skip = 0;
    }
    // With a deadline no call may block past it (base/syscall.h WriteAll): sockets are sent
    // to with MSG_DONTWAIT, and a pipe gets at most PIPE_BUF bytes per writev.
    const bool bounded = !deadline.infinite();
    ssize_t n;
    if (socket) {
      msghdr msg = {};
      msg.msg_iov = iov;
      msg.msg_iovlen = n_iov;
      if (done == 0) AttachScmRights(&msg, fds, control.buf);
      n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | (bounded ? MSG_DONTWAIT : 0));
    } else {
      if (bounded) {
        size_t room = PIPE_BUF, k = 0;
        while (k < n_iov && room > 0) {
          if (iov[k].iov_len > room) iov[k].iov_len = room;
          room -= iov[k].iov_len;
          ++k;
        }
        n_iov = k;
      }
      n = ::writev(fd, iov, static_cast<int>(n_iov));
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLOUT, deadline, "frame write", done, total));
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) {
        return absl::OutOfRangeError(absl::StrCat("frame write: the ", socket ? "peer" : "reader",
                                                  " is gone after ", done, " of ", total, " bytes"));
      }
      if (socket && errno == EMSGSIZE) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "frame of ", total, " bytes is larger than this socket's record limit (EMSGSIZE)"));
      }
      return ErrnoToStatus(errno, socket ? "sendmsg(frame)" : "writev(frame)");
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

namespace {

// Reads into [buf, buf+want) from a stream, collecting fds on sockets. `started` says whether
// any byte of the frame was read before (an EOF then is mid-frame).
absl::Status ReadStream(int fd, bool socket, std::byte* buf, size_t want, const Deadline& d,
                        const char* what, bool started, std::vector<UniqueFd>* fds) {
  size_t done = 0;
  FdControl control;
  while (done < want) {
    if (!d.infinite()) MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLIN, d, what, done, want));
    ssize_t n;
    int flags = 0;
    if (socket) {
      iovec iov = {buf + done, want - done};
      msghdr msg = {};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.buf;
      msg.msg_controllen = sizeof(control.buf);
      n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
      if (n > 0 || (n == 0 && msg.msg_controllen > 0)) {
        CollectScmRights(&msg, fds);
        flags = msg.msg_flags;
      }
    } else {
      n = ::read(fd, buf + done, want - done);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLIN, d, what, done, want));
        continue;
      }
      if (errno == ECONNRESET) {
        return absl::OutOfRangeError(absl::StrCat(what, ": connection reset"));
      }
      return ErrnoToStatus(errno, absl::StrCat(socket ? "recvmsg" : "read", "(", what, ")"));
    }
    if (flags & MSG_CTRUNC) {
      return absl::InvalidArgumentError(
          "frame: file descriptors were truncated (MSG_CTRUNC): too many fds or fd limit reached");
    }
    if (n == 0) {
      if (!started && done == 0) return absl::OutOfRangeError("peer closed the channel");
      return absl::OutOfRangeError(absl::StrCat("peer closed the channel in the middle of a ", what, " (", done, " of ", want, " bytes)"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ReadSeqpacket(int fd, Frame& frame, const Deadline& d, const FrameLimits& limits) {
  // Peek the header without a control buffer (fds are not installed by a peek), then receive
  // the whole record at once.
  std::byte header[kFrameHeaderSize];
  for (;;) {
    if (!d.infinite()) MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLIN, d, "frame header", 0, kFrameHeaderSize));
    ssize_t n = ::recv(fd, header, kFrameHeaderSize, MSG_PEEK | MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLIN, d, "frame header", 0, kFrameHeaderSize));
        continue;
      }
      return ErrnoToStatus(errno, "recv(frame header)");
    }
    if (n == 0) return absl::OutOfRangeError("peer closed the channel");
    if (static_cast<size_t>(n) < kFrameHeaderSize) {
      // Consume the runt record so the channel moves on, and report it.
      ::recv(fd, header, kFrameHeaderSize, MSG_TRUNC);
      return absl::InvalidArgumentError(absl::StrCat("frame record of ", n, " bytes is shorter than a header"));
    }
    absl::StatusOr<FrameHeader> h = ParseFrameHeader(header, limits);
    size_t record = static_cast<size_t>(n);
    if (!h.ok() || h->payload_len != record - kFrameHeaderSize) {
      ::recv(fd, header, kFrameHeaderSize, MSG_TRUNC);  // drop the bad record (and its fds)
      if (!h.ok()) return h.status();
      return absl::InvalidArgumentError(absl::StrCat("frame header claims ", h->payload_len,
                                                     " payload bytes; the record holds ",
                                                     record - kFrameHeaderSize));
    }
    frame.size = 0;
    EnsureCapacity(frame, h->payload_len);
    iovec iov[2] = {{header, kFrameHeaderSize}, {frame.data.get(), h->payload_len}};
    FdControl control;
    msghdr msg = {};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    ssize_t got = RetryEintr([&] { return ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); });
    if (got < 0) return ErrnoToStatus(errno, "recvmsg(frame)");
    CollectScmRights(&msg, &frame.fds);
    if (msg.msg_flags & MSG_CTRUNC) {
      frame.fds.clear();
      return absl::InvalidArgumentError("frame: file descriptors were truncated (MSG_CTRUNC)");
    }
    if (static_cast<size_t>(got) != record || (msg.msg_flags & MSG_TRUNC)) {
      frame.fds.clear();
      return absl::InvalidArgumentError("frame record changed between peek and receive");
    }
    frame.kind = h->kind;
    frame.size = h->payload_len;
    if (frame.fds.size() != h->fd_count) {
      size_t got_fds = frame.fds.size();
      frame.fds.clear();
      return absl::InvalidArgumentError(absl::StrCat("frame header announces ", h->fd_count,
                                                     " fds; ", got_fds, " arrived"));
    }
    return absl::OkStatus();
  }
}

}  // namespace

absl::Status ReadFrameInto(int fd, Frame& frame, const Deadline& deadline,
                           const FrameLimits& limits, FdKind fd_kind) {
  frame.fds.clear();
  frame.size = 0;
  frame.kind = 0;
  if (fd_kind == FdKind::kDetect) fd_kind = DetectFdKind(fd);
  if (fd_kind == FdKind::kSeqpacketSocket) return ReadSeqpacket(fd, frame, deadline, limits);
  const bool socket = fd_kind == FdKind::kStreamSocket;

  std::byte header[kFrameHeaderSize];
  MPROC_RETURN_IF_ERROR(ReadStream(fd, socket, header, kFrameHeaderSize, deadline, "frame header",
                                   /*started=*/false, &frame.fds));
  absl::StatusOr<FrameHeader> h = ParseFrameHeader(header, limits);
  if (!h.ok()) {
    frame.fds.clear();
    return h.status();
  }
  if (frame.fds.size() != h->fd_count) {
    size_t got = frame.fds.size();
    frame.fds.clear();
    return absl::InvalidArgumentError(
        absl::StrCat("frame header announces ", h->fd_count, " fds; ", got, " arrived"));
  }
  // Grow as bytes arrive: a header that lies about its length costs at most what was sent.
  const size_t len = h->payload_len;
  size_t have = 0;
  while (have < len) {
    if (frame.capacity <= have) {
      frame.size = have;
      EnsureCapacity(frame, std::min(len, std::max(kInitialChunk, frame.capacity * 2)));
    }
    size_t chunk = std::min(len, frame.capacity) - have;
    std::vector<UniqueFd> stray;
    absl::Status s = ReadStream(fd, socket, frame.data.get() + have, chunk, deadline, "frame payload",
                                /*started=*/true, &stray);
    if (!s.ok()) {
      frame.fds.clear();
      frame.size = 0;
      return s;
    }
    if (!stray.empty()) {
      frame.fds.clear();
      frame.size = 0;
      return absl::InvalidArgumentError("frame: file descriptors arrived inside a payload");
    }
    have += chunk;
  }
  frame.kind = h->kind;
  frame.size = len;
  return absl::OkStatus();
}

absl::StatusOr<Frame> ReadFrame(int fd, const Deadline& deadline, const FrameLimits& limits,
                                FdKind fd_kind) {
  Frame f;
  absl::Status s = ReadFrameInto(fd, f, deadline, limits, fd_kind);
  if (!s.ok()) return s;
  return f;
}

absl::StatusOr<Frame> ParseFrame(std::span<const std::byte> bytes, const FrameLimits& limits) {
  absl::StatusOr<FrameHeader> h = ParseFrameHeader(bytes, limits);
  if (!h.ok()) return h.status();
  if (h->fd_count != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame header announces ", h->fd_count, " fds; 0 arrived"));
  }
  const size_t body = bytes.size() - kFrameHeaderSize;
  if (h->payload_len != body) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame header claims ", h->payload_len, " payload bytes; ", body, " are present"));
  }
  Frame f;
  f.kind = h->kind;
  EnsureCapacity(f, body);
  if (body) std::memcpy(f.data.get(), bytes.data() + kFrameHeaderSize, body);
  f.size = body;
  return f;
}

}  // namespace mproc
