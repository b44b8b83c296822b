#include "base/syscall.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/io_ring.h"
#include "base/status.h"

namespace mproc {

ssize_t ReadFull(int fd, void* buf, size_t len) {
  char* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < len) {
    ssize_t n = RetryEintr([&] { return ::read(fd, p + done, len - done); });
    if (n < 0) return -errno;
    if (n == 0) break;  // end of file
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

ssize_t WriteFull(int fd, const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  size_t done = 0;
  while (done < len) {
    ssize_t n = RetryEintr([&] { return ::write(fd, p + done, len - done); });
    if (n < 0) return -errno;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

namespace {

// Through the active I/O mode (base/io_ring.h): poll(2) or an io_uring poll.
int WaitFor(int fd, short events, const Deadline& deadline) {
  pollfd p{fd, events, 0};
  int r = WaitEvents(std::span<pollfd>(&p, 1), deadline);
  if (r > 0 && (p.revents & POLLNVAL)) return -EBADF;
  return r > 0 ? 1 : r;
}

}  // namespace

bool SpinUntilReady(int fd, short events, const Deadline& deadline) {
  return SpinUntil(
      [&] {
        pollfd p{fd, events, 0};
        return ::poll(&p, 1, 0) > 0;
      },
      deadline);
}

int WaitReadable(int fd, const Deadline& deadline) { return WaitFor(fd, POLLIN, deadline); }
int WaitWritable(int fd, const Deadline& deadline) { return WaitFor(fd, POLLOUT, deadline); }

absl::Status AwaitFd(int fd, short events, const Deadline& deadline, std::string_view what,
                     size_t done, size_t total) {
  int w = WaitFor(fd, events, deadline);
  if (w == 0) {
    return absl::DeadlineExceededError(
        absl::StrCat(AbslView(what), ": timed out after ", done, " of ", total, " bytes"));
  }
  if (w < 0) return ErrnoToStatus(-w, what);
  return absl::OkStatus();
}

absl::Status ReadExact(int fd, void* buf, size_t len, const Deadline& deadline,
                       std::string_view what) {
  char* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < len) {
    if (!deadline.infinite()) MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLIN, deadline, what, done, len));
    ssize_t n = RetryEintr([&] { return ::read(fd, p + done, len - done); });
    if (n < 0) {
      if (errno == EAGAIN) {
        MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLIN, deadline, what, done, len));
        continue;
      }
      if (errno == ECONNRESET) {
        return absl::OutOfRangeError(absl::StrCat(
            AbslView(what), ": peer reset the connection after ", done, " of ", len, " bytes"));
      }
      return ErrnoToStatus(errno, what);
    }
    if (n == 0) {
      return absl::OutOfRangeError(
          absl::StrCat(AbslView(what), ": end of file after ", done, " of ", len, " bytes"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, const void* buf, size_t len, const Deadline& deadline,
                      std::string_view what, size_t* written) {
  const char* p = static_cast<const char*>(buf);
  size_t done = 0;
  size_t unused;
  if (written == nullptr) written = &unused;
  *written = 0;
  bool sock = true;  // until send() says ENOTSOCK
  // With a deadline no call may block past it: a blocking send() of more than the socket takes
  // waits until it all went, whatever poll() said. Sockets are sent to with MSG_DONTWAIT;
  // pipes, which have no per-call flag, get at most PIPE_BUF bytes per write after poll() said
  // writable (a pipe is writable while a PIPE_BUF write fits).
  const bool bounded = !deadline.infinite();
  const int send_flags = MSG_NOSIGNAL | (bounded ? MSG_DONTWAIT : 0);
  while (done < len) {
    if (bounded) MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLOUT, deadline, what, done, len));
    ssize_t n = RetryEintr([&] {
      if (sock) return ::send(fd, p + done, len - done, send_flags);
      return ::write(fd, p + done, bounded ? std::min<size_t>(len - done, PIPE_BUF) : len - done);
    });
    if (n < 0) {
      if (sock && errno == ENOTSOCK) {
        sock = false;
        IgnoreSigpipe();
        continue;
      }
      if (errno == EAGAIN) {
        MPROC_RETURN_IF_ERROR(AwaitFd(fd, POLLOUT, deadline, what, done, len));
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) {
        return absl::OutOfRangeError(
            absl::StrCat(AbslView(what), ": peer closed after ", done, " of ", len, " bytes"));
      }
      return ErrnoToStatus(errno, what);
    }
    done += static_cast<size_t>(n);
    *written = done;
  }
  return absl::OkStatus();
}

void AttachScmRights(msghdr* msg, std::span<const int> fds, void* control) {
  if (fds.empty()) return;
  msg->msg_control = control;
  msg->msg_controllen = ScmRightsSpace(fds.size());
  std::memset(control, 0, msg->msg_controllen);
  cmsghdr* c = CMSG_FIRSTHDR(msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
}

void CollectScmRights(msghdr* msg, std::vector<UniqueFd>* out) {
  for (cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      out->emplace_back(fd);
    }
  }
}

void IgnoreSigpipe() {
  static std::atomic<bool> done{false};
  if (done.load(std::memory_order_relaxed)) return;
  struct sigaction old;
  if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL &&
      !(old.sa_flags & SA_SIGINFO)) {
    struct sigaction ign = {};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ign, nullptr);
  }
  done.store(true, std::memory_order_relaxed);
}

int SetNonBlocking(int fd, bool on) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  int nfl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (nfl != fl && ::fcntl(fd, F_SETFL, nfl) < 0) return -errno;
  return 0;
}

absl::Status CheckDescriptorsOpen(std::span<const int> fds) {
  for (int fd : fds) {
    if (::fcntl(fd, F_GETFD) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("descriptor ", fd, " in the message is not open"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> DupCloexec(int fd, std::string_view what) {
  UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!dup.ok()) return ErrnoToStatus(errno, absl::StrCat("fcntl(F_DUPFD_CLOEXEC, ", AbslView(what), ")"));
  return dup;
}

}  // namespace mproc
