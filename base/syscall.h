// base/syscall.h — EINTR-safe syscalls and full read/write loops.
//
// Conventions (STYLE.md §4): helpers here return the syscall's value on success and -errno on
// failure, like liburing's internal syscall layer; the public layers turn that into a Status
// once. Restartable calls retry EINTR through RetryEintr(); close() is never retried
// (CloseNoInt in unique_fd.h). Short reads and writes loop for framing.
//
//   ssize_t n = ReadFull(fd, buf, len);        // < len only at end of file
//   if (n < 0) return ErrnoToStatus(-n, "read(frame)");
//   MPROC_RETURN_IF_ERROR(WriteAll(fd, bytes, Deadline::After(timeout), "write(frame)"));
//
// Thread-safety: all functions are thread-safe; concurrent readers of one fd interleave.

#ifndef MPROC_BASE_SYSCALL_H_
#define MPROC_BASE_SYSCALL_H_

#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>
#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/deadline.h"
#include "base/spin.h"
#include "base/unique_fd.h"

namespace mproc {

// Calls f() until it returns something other than -1 with errno == EINTR.
template <typename F>
auto RetryEintr(F&& f) -> decltype(f()) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

// Reads until `len` bytes arrived or end of file. Returns the count read (less than `len`
// only at EOF) or -errno. EINTR is retried. For blocking descriptors.
ssize_t ReadFull(int fd, void* buf, size_t len);

// Writes all `len` bytes. Returns `len` or -errno (EPIPE when the reader is gone). EINTR is
// retried. For blocking descriptors.
ssize_t WriteFull(int fd, const void* buf, size_t len);

// Waits until `fd` is readable (or writable) or `deadline` passes. Returns 1 when ready
// (including hang-up and error conditions, which the next read reports), 0 on timeout,
// -errno on failure. EINTR is retried with the same deadline.
int WaitReadable(int fd, const Deadline& deadline);
int WaitWritable(int fd, const Deadline& deadline);

// Polls `fd` for `events` without blocking, yielding between polls (base/spin.h), until it
// is ready (true) or the spin budget or `deadline` is spent (false).
bool SpinUntilReady(int fd, short events, const Deadline& deadline);

// Waits until `fd` is ready for `events` (POLLIN or POLLOUT) before `deadline`, for a transfer
// of `total` bytes of which `done` are through: OK; DEADLINE_EXCEEDED ("<what>: timed out
// after <done> of <total> bytes"); or the errno status naming `what`. The shared wait of
// every deadline-bounded read/write loop (here and in serialize/).
absl::Status AwaitFd(int fd, short events, const Deadline& deadline, std::string_view what,
                     size_t done, size_t total);

// Reads exactly `len` bytes before `deadline`, on a blocking or non-blocking fd.
// OK; OUT_OF_RANGE on end of file (the message says how many bytes arrived);
// DEADLINE_EXCEEDED; otherwise the errno status, each naming `what`.
absl::Status ReadExact(int fd, void* buf, size_t len, const Deadline& deadline,
                       std::string_view what);

// Writes all `len` bytes before `deadline`. OK; OUT_OF_RANGE when the peer is gone (EPIPE,
// ECONNRESET; SIGPIPE is suppressed for sockets by MSG_NOSIGNAL, and for pipes by
// IgnoreSigpipe(), which the first pipe write calls); DEADLINE_EXCEEDED; otherwise the errno
// status. Sockets are found
// by trying send() first (ENOTSOCK: write() from then on), not by an fstat per call.
// `*written` (optional): how many bytes went out, also on an error.
absl::Status WriteAll(int fd, const void* buf, size_t len, const Deadline& deadline,
                      std::string_view what, size_t* written = nullptr);

// Sets or clears O_NONBLOCK. Returns 0 or -errno.
int SetNonBlocking(int fd, bool on);

// SCM_RIGHTS, for every channel that passes descriptors (frames, Connection, Queue).
// Fills `control` (ScmRightsSpace(fds.size()) bytes, aligned for cmsghdr, alive until the
// sendmsg) with one SCM_RIGHTS message carrying `fds` and points `msg` at it; nothing for none.
inline constexpr size_t ScmRightsSpace(size_t n_fds) { return CMSG_SPACE(sizeof(int) * n_fds); }
void AttachScmRights(msghdr* msg, std::span<const int> fds, void* control);
// Takes ownership of every descriptor the kernel installed for a received `msg`.
void CollectScmRights(msghdr* msg, std::vector<UniqueFd>* out);

// mproc's one SIGPIPE policy: a write to a pipe or socket whose reader is gone is an
// OUT_OF_RANGE status, never a dead process. Sockets use MSG_NOSIGNAL; for pipes, the first
// call sets SIGPIPE to SIG_IGN if it is SIG_DFL (as CPython does at startup); a handler the
// program installed is left alone (it runs, and the write still fails with EPIPE). Cheap after
// the first call; async-signal-safe.
void IgnoreSigpipe();

// OK when every descriptor in `fds` is open; else INVALID_ARGUMENT naming the first that is
// not. For senders that announce a message before its descriptors go out (SCM_RIGHTS fails
// the whole sendmsg with EBADF): checked first, a bad descriptor fails that send alone.
absl::Status CheckDescriptorsOpen(std::span<const int> fds);

// A new close-on-exec descriptor for what `fd` refers to (F_DUPFD_CLOEXEC); the errno status
// naming `what` when the process is out of descriptors (EMFILE) or `fd` is not open (EBADF).
[[nodiscard]] absl::StatusOr<UniqueFd> DupCloexec(int fd, std::string_view what);

}  // namespace mproc

#endif  // MPROC_BASE_SYSCALL_H_
