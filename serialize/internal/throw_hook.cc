// Interposes libstdc++'s __cxa_throw to record where each exception is thrown, then calls the
// real one (found with dlsym(RTLD_NEXT)) unchanged. Deliberately does not include <cxxabi.h>:
// the C symbol is matched by name, and the typed declaration there would conflict.
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

#include "absl/debugging/stacktrace.h"
#include "serialize/internal/throw_trace.h"

namespace mproc::serialize_internal {
namespace {
thread_local ThrowTrace t_trace;

bool TracesEnabled() {
  static const bool enabled = [] {
    const char* e = std::getenv("MPROC_THROW_TRACES");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  return enabled;
}
}  // namespace

ThrowTrace& CurrentThrowTrace() { return t_trace; }

}  // namespace mproc::serialize_internal

extern "C" {
using MprocCxaThrowFn = void (*)(void*, void*, void (*)(void*));

[[noreturn]] void __cxa_throw(void* thrown, void* tinfo, void (*dest)(void*)) {
  static MprocCxaThrowFn real = reinterpret_cast<MprocCxaThrowFn>(dlsym(RTLD_NEXT, "__cxa_throw"));
  auto& t = mproc::serialize_internal::t_trace;
  if (mproc::serialize_internal::TracesEnabled()) {
    // absl counts this hook as the frame to skip with skip_count 0: the first recorded frame
    // is the function that threw (checked by remote_error_test).
    t.depth = absl::GetStackTrace(t.frames, mproc::serialize_internal::kMaxThrowFrames, 0);
  } else {
    t.depth = 0;
  }
  real(thrown, tinfo, dest);
  __builtin_unreachable();
}
}
