// base/thread_scratch.h — a per-thread scratch object (an encode buffer, a receive buffer, a
// cache) that exit handlers can still use.
//
// glibc destroys the exiting thread's thread_local objects before it runs the atexit handlers
// and static destructors, and those may still Put on a Queue or Send on a Pipe (a logger's
// last record, a Pool or Manager shut down from a static destructor, a Process joined at
// exit). A plain `thread_local EncodeBuffer buf;` is then used after its destructor freed its
// memory. ThreadScratch<T, Tag>() returns this thread's T while the thread's thread_locals
// live, and after they were destroyed a T of its own for the rest of the exit (one per thread
// that gets that far; the process is ending, and it stays reachable, so leak checkers do not
// report it). `Tag` keeps call sites apart: two sites with one Tag share one T.
//
//   EncodeBuffer& buf = ThreadScratch<EncodeBuffer, struct SendTag>();
//
// Cost: a thread_local pointer load and a test on the fast path.
//
// Thread-safety: each thread has its own T. A T from here must not be used re-entrantly (a
// call that holds it must not reach code that takes the same <T, Tag>).
#ifndef MPROC_BASE_THREAD_SCRATCH_H_
#define MPROC_BASE_THREAD_SCRATCH_H_

namespace mproc {

template <typename T, typename Tag>
T& ThreadScratch() {
  // Trivially destructible, so usable until the thread itself ends.
  thread_local T* live = nullptr;
  thread_local bool torn_down = false;
  thread_local T* leftover = nullptr;
  if (live != nullptr) [[likely]] return *live;
  if (!torn_down) {
    struct Owner {
      T value;
      ~Owner() {
        live = nullptr;
        torn_down = true;
      }
    };
    thread_local Owner owner;  // destroyed with the thread's other thread_locals
    live = &owner.value;
    return *live;
  }
  if (leftover == nullptr) leftover = new T();
  return *leftover;
}

}  // namespace mproc

#endif  // MPROC_BASE_THREAD_SCRATCH_H_
