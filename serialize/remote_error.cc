#include "serialize/remote_error.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <typeinfo>

#include "absl/debugging/symbolize.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "serialize/internal/throw_trace.h"

namespace mproc {
namespace {

std::string Demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = (status == 0 && d) ? d : name;
  std::free(d);
  return out;
}

}  // namespace

std::string RemoteError::Describe() const {
  std::string out = absl::StrCat("Process ", process_name, " (pid ", pid, "): ", type_name, ": ", what);
  for (const std::string& f : trace) absl::StrAppend(&out, "\n  at ", f);
  return out;
}

RemoteError CaptureCurrentException(std::string process_name) {
  RemoteError e;
  e.pid = ::getpid();
  e.process_name = std::move(process_name);
  std::type_info* t = abi::__cxa_current_exception_type();
  e.type_name = t ? Demangle(t->name()) : "unknown";
  std::exception_ptr p = std::current_exception();
  try {
    if (p) std::rethrow_exception(p);
  } catch (const std::exception& ex) {
    e.what = ex.what();
  } catch (...) {
    e.what = "(not a std::exception)";
  }
  // rethrow_exception does not pass through __cxa_throw, so the trace still belongs to the
  // original throw.
  const serialize_internal::ThrowTrace& tr = serialize_internal::CurrentThrowTrace();
  for (int i = 0; i < tr.depth; ++i) {
    char name[1024];
    // Each recorded address is a return address: symbolize the call instruction before it
    // (a call to a noreturn function such as __cxa_throw can be the last instruction of its
    // function, so the return address may already belong to the next one).
    void* call_site = static_cast<char*>(tr.frames[i]) - 1;
    if (absl::Symbolize(call_site, name, sizeof(name))) {
      e.trace.emplace_back(name);
    } else {
      e.trace.push_back(absl::StrCat("0x", absl::Hex(reinterpret_cast<uintptr_t>(tr.frames[i]))));
    }
  }
  return e;
}

absl::Status RemoteErrorToStatus(const RemoteError& e) {
  absl::Status s = absl::AbortedError(absl::StrCat("Process ", e.process_name, " (pid ", e.pid,
                                                   "): ", e.type_name, ": ", e.what));
  EncodeBuffer b;
  Encode(e, b);
  s.SetPayload(kRemoteErrorPayloadUrl, absl::Cord(absl::string_view(b.view().data(), b.size())));
  return s;
}

std::optional<RemoteError> RemoteErrorFromStatus(const absl::Status& s) {
  absl::optional<absl::Cord> payload = s.GetPayload(kRemoteErrorPayloadUrl);
  if (!payload) return std::nullopt;
  std::string bytes(*payload);
  absl::StatusOr<RemoteError> e = Decode<RemoteError>(AsBytes(bytes));
  if (!e.ok()) return std::nullopt;
  return *std::move(e);
}

std::string ExceptionMessage(const absl::Status& s) {
  if (std::optional<RemoteError> e = RemoteErrorFromStatus(s)) return e->what;
  return std::string(s.message());
}

std::string ExceptionType(const absl::Status& s) {
  if (std::optional<RemoteError> e = RemoteErrorFromStatus(s)) return e->type_name;
  return "";
}

RemoteException::RemoteException(RemoteError e)
    : std::runtime_error(e.Describe()), error_(std::move(e)) {}

void ThrowIfRemoteError(const absl::Status& s) {
  if (std::optional<RemoteError> e = RemoteErrorFromStatus(s)) throw RemoteException(*std::move(e));
}

}  // namespace mproc
