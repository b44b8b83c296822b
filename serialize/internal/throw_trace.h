// serialize/internal/throw_trace.h — the stack recorded at the most recent throw on this thread
// (by the __cxa_throw hook in throw_hook.cc).
#ifndef MPROC_SERIALIZE_INTERNAL_THROW_TRACE_H_
#define MPROC_SERIALIZE_INTERNAL_THROW_TRACE_H_

namespace mproc::serialize_internal {

inline constexpr int kMaxThrowFrames = 32;

struct ThrowTrace {
  void* frames[kMaxThrowFrames];
  int depth = 0;
};

// This thread's trace of its latest throw.
ThrowTrace& CurrentThrowTrace();

}  // namespace mproc::serialize_internal

#endif  // MPROC_SERIALIZE_INTERNAL_THROW_TRACE_H_
