#include "pool/internal/orphans.h"

#include <pthread.h>

#include <new>

#include "base/mutex.h"

namespace mproc::pool_internal {
namespace {

// Never destroyed: the exit and MPI finalization wait here from exit handlers, after static
// destructors may have run.
struct Orphans {
  Mutex mu;
  CondVar cv;
  int running ABSL_GUARDED_BY(mu) = 0;
};
Orphans& TheOrphans() {
  static auto* o = new Orphans();
  return *o;
}

// This thread is an orphan's (it frees its object once its loop ends).
thread_local bool t_orphan_thread = false;

// A fork child has none of its parent's orphan threads; the lock (which another thread may
// have held during fork) is made anew. No analysis: it re-creates mu.
void ForgetOrphansAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  Orphans& o = TheOrphans();
  new (&o.mu) Mutex;
  new (&o.cv) CondVar;
  o.running = 0;
}
[[maybe_unused]] const int kOrphansAtfork = [] {
  pthread_atfork(nullptr, nullptr, ForgetOrphansAfterFork);
  return 0;
}();

}  // namespace

void AdoptOrphan() {
  t_orphan_thread = true;
  Orphans& o = TheOrphans();
  MutexLock lock(&o.mu);
  ++o.running;
}

void OrphanDone() {
  Orphans& o = TheOrphans();
  MutexLock lock(&o.mu);
  --o.running;
  o.cv.SignalAll();
}

void WaitForOrphans() {
  const int self = t_orphan_thread ? 1 : 0;
  Orphans& o = TheOrphans();
  MutexLock lock(&o.mu);
  o.cv.Wait(lock, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(o.mu) { return o.running <= self; });
}

int RunningOrphans() {
  Orphans& o = TheOrphans();
  MutexLock lock(&o.mu);
  return o.running;
}

}  // namespace mproc::pool_internal
