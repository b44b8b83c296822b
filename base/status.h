// base/status.h — errno -> absl::Status, and early-return macros.
//
// One mapping for the whole project (DESIGN.md, Errors). ErrnoToStatus names the syscall and
// the object it acted on, e.g. ErrnoToStatus(ENOENT, "shm_open(/mproc-x)").
//
//   MPROC_RETURN_IF_ERROR(DoThing());
//   MPROC_ASSIGN_OR_RETURN(UniqueFd fd, OpenThing());
//
// Abseil 20220623 (Debian 12) has neither macro, so base/ provides them.

#ifndef MPROC_BASE_STATUS_H_
#define MPROC_BASE_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mproc {

// Debian's Abseil is built with its std aliases off: absl::string_view is not std::string_view.
// Public mproc APIs use std types; this converts for absl calls such as StrCat.
inline absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The absl::StatusCode for an errno value, following absl's own errno mapping with one
// mproc-specific change: EPIPE/ECONNRESET (peer closed) map to OUT_OF_RANGE, ETIMEDOUT to
// DEADLINE_EXCEEDED.
absl::StatusCode ErrnoToCode(int err);

// A Status whose message is "<what>: <strerror> (errno <name>)". `err` must be nonzero.
absl::Status ErrnoToStatus(int err, std::string_view what);

// The symbolic name of an errno value ("EINTR"), or "E<number>" when unknown.
const char* ErrnoName(int err);

namespace base_internal {
inline absl::Status AsStatus(const absl::Status& s) { return s; }
template <typename T>
absl::Status AsStatus(const absl::StatusOr<T>& s) {
  return s.status();
}
}  // namespace base_internal

}  // namespace mproc

#define MPROC_STATUS_CONCAT_INNER_(a, b) a##b
#define MPROC_STATUS_CONCAT_(a, b) MPROC_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (a Status or StatusOr); returns its status from the enclosing function
// when it is not OK.
#define MPROC_RETURN_IF_ERROR(expr)                                                  \
  do {                                                                               \
    ::absl::Status mproc_status_ = ::mproc::base_internal::AsStatus((expr));        \
    if (!mproc_status_.ok()) return mproc_status_;                                   \
  } while (0)

// `MPROC_ASSIGN_OR_RETURN(lhs, expr)`: evaluates `expr` (a StatusOr<T>); on error returns
// its status, otherwise moves the value into `lhs` (which may declare a variable).
#define MPROC_ASSIGN_OR_RETURN(lhs, expr) \
  MPROC_ASSIGN_OR_RETURN_IMPL_(MPROC_STATUS_CONCAT_(mproc_statusor_, __LINE__), lhs, expr)
#define MPROC_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

#endif  // MPROC_BASE_STATUS_H_
