// pool/internal/orphans.h — loop threads that outlive their owner. A pool core's or an MPI
// engine's thread runs its owner's done callbacks; an owner dropped from one of them cannot
// join that thread, so the object is orphaned: the thread frees it once its loop ends. These
// threads are counted here, so that the exit (before children are joined) and MPI
// finalization can wait for them.
//
// Thread-safety: every function is thread-safe. A fork child starts with none (the parent's
// orphan threads do not exist there).
#ifndef MPROC_POOL_INTERNAL_ORPHANS_H_
#define MPROC_POOL_INTERNAL_ORPHANS_H_

namespace mproc::pool_internal {

// On the orphan's own thread, when its owner drops it: counts the thread until OrphanDone.
void AdoptOrphan();
// On that thread, once it has freed its object (it touches nothing of it afterwards).
void OrphanDone();
// Returns once no orphan thread runs, the caller's own excepted (a callback that exits the
// process does not wait for itself).
void WaitForOrphans();
// Orphan threads running now (tests: wait for it to reach 0).
int RunningOrphans();

}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_ORPHANS_H_
