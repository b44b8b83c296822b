// serialize/remote_error.h — exceptions thrown in another process, carried home as a Status.
//
// A worker that runs user code catches what it throws and sends a RemoteError: the exception's
// type, what(), the symbolized stack where it was *thrown* (captured by a hook on __cxa_throw,
// before unwinding destroys it), the pid and the process name. The caller gets an absl::Status
// with code ABORTED whose payload is the RemoteError; ThrowIfRemoteError() rethrows it as a
// RemoteException for callers who prefer exceptions.
//
//   try { RunUserTask(); }
//   catch (...) { return RemoteErrorToStatus(CaptureCurrentException("Worker-1")); }
//   ...
//   if (std::optional<RemoteError> e = RemoteErrorFromStatus(status)) Log(e->Describe());
//
// Throw-site traces cost one stack walk per throw (about a microsecond) in processes that link
// this library; set MPROC_THROW_TRACES=0 to turn them off.

#ifndef MPROC_SERIALIZE_REMOTE_ERROR_H_
#define MPROC_SERIALIZE_REMOTE_ERROR_H_

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "serialize/codec.h"

namespace mproc {

struct RemoteError {
  std::string type_name;
  std::string what;
  std::vector<std::string> trace;  // innermost frame first
  int64_t pid = 0;
  std::string process_name;

  // "Process Worker-1 (pid 123): std::runtime_error: boom\n  at Fn()\n  at ..."
  std::string Describe() const;
};
MPROC_CODEC_FIELDS(RemoteError, type_name, what, trace, pid, process_name)

// Builds a RemoteError from the exception being handled (call inside a catch block).
RemoteError CaptureCurrentException(std::string process_name);

// The status ABORTED carrying `e` (message: e.Describe()'s first line).
absl::Status RemoteErrorToStatus(const RemoteError& e);

// The RemoteError a status carries, if any.
std::optional<RemoteError> RemoteErrorFromStatus(const absl::Status& s);

// Python's str(exc) for a failed call: the remote exception's what(), or the status's own
// message when it carries no RemoteError.
std::string ExceptionMessage(const absl::Status& s);
// Python's type(exc).__name__: the remote exception's type ("std::runtime_error"), or "" when
// the status carries no RemoteError.
std::string ExceptionType(const absl::Status& s);

// Thrown by ThrowIfRemoteError.
class RemoteException : public std::runtime_error {
 public:
  explicit RemoteException(RemoteError e);
  const RemoteError& error() const { return error_; }

 private:
  RemoteError error_;
};

// Throws RemoteException when `s` carries a RemoteError; otherwise does nothing.
void ThrowIfRemoteError(const absl::Status& s);

// The payload type URL under which the RemoteError travels in a Status.
inline constexpr char kRemoteErrorPayloadUrl[] = "type.mproc/mproc.RemoteError";

}  // namespace mproc

#endif  // MPROC_SERIALIZE_REMOTE_ERROR_H_
