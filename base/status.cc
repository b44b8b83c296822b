#include "base/status.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace mproc {

absl::StatusCode ErrnoToCode(int err) {
  switch (err) {
    case 0:
      return absl::StatusCode::kOk;
    case EPIPE:
    case ECONNRESET:
      return absl::StatusCode::kOutOfRange;
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    case EAGAIN:
      return absl::StatusCode::kUnavailable;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case EDQUOT:
    case EFBIG:
    case EMSGSIZE:
      return absl::StatusCode::kResourceExhausted;
    case EINTR:
      return absl::StatusCode::kCancelled;
    default:
      return absl::ErrnoToStatusCode(err);
  }
}

const char* ErrnoName(int err) {
  switch (err) {
#define MPROC_E(x) \
  case x:          \
    return #x;
    MPROC_E(EPERM) MPROC_E(ENOENT) MPROC_E(ESRCH) MPROC_E(EINTR) MPROC_E(EIO)
    MPROC_E(ENXIO) MPROC_E(E2BIG) MPROC_E(ENOEXEC) MPROC_E(EBADF) MPROC_E(ECHILD)
    MPROC_E(EAGAIN) MPROC_E(ENOMEM) MPROC_E(EACCES) MPROC_E(EFAULT) MPROC_E(EBUSY)
    MPROC_E(EEXIST) MPROC_E(EXDEV) MPROC_E(ENODEV) MPROC_E(ENOTDIR) MPROC_E(EISDIR)
    MPROC_E(EINVAL) MPROC_E(ENFILE) MPROC_E(EMFILE) MPROC_E(ENOTTY) MPROC_E(EFBIG)
    MPROC_E(ENOSPC) MPROC_E(ESPIPE) MPROC_E(EROFS) MPROC_E(EMLINK) MPROC_E(EPIPE)
    MPROC_E(ERANGE) MPROC_E(EDEADLK) MPROC_E(ENAMETOOLONG) MPROC_E(ENOSYS)
    MPROC_E(ENOTEMPTY) MPROC_E(ELOOP) MPROC_E(EOVERFLOW) MPROC_E(EMSGSIZE)
    MPROC_E(ENOTSOCK) MPROC_E(EPROTO) MPROC_E(EOPNOTSUPP) MPROC_E(EADDRINUSE)
    MPROC_E(EADDRNOTAVAIL) MPROC_E(ECONNRESET) MPROC_E(ECONNREFUSED) MPROC_E(ETIMEDOUT)
    MPROC_E(ENOTCONN) MPROC_E(EDQUOT) MPROC_E(EOWNERDEAD) MPROC_E(ENOTRECOVERABLE)
    MPROC_E(ECANCELED) MPROC_E(EBADMSG) MPROC_E(ETXTBSY)
#undef MPROC_E
    default: {
      static thread_local char buf[16];
      std::snprintf(buf, sizeof(buf), "E%d", err);
      return buf;
    }
  }
}

absl::Status ErrnoToStatus(int err, std::string_view what) {
  char buf[128];
  const char* msg = ::strerror_r(err, buf, sizeof(buf));  // GNU strerror_r
  return absl::Status(ErrnoToCode(err),
                      absl::StrCat(AbslView(what), ": ", msg, " (", ErrnoName(err), ")"));
}

}  // namespace mproc
