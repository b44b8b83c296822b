// pool/internal/task_sink.h — what runs pool tasks, seen from the code that submits them: the
// task entry types, the completion callback, and the interface a Future cancels through.
//
// Two engines implement TaskSink: the process pool's core (pool/internal/pool_core.h) and the
// MPI executor's (mpi/executor.h). Pool, ProcessPoolExecutor, MpiExecutor and Future are
// written against it, so one Future type serves both executors.
#ifndef MPROC_POOL_INTERNAL_TASK_SINK_H_
#define MPROC_POOL_INTERNAL_TASK_SINK_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/deadline.h"
#include "base/mutex.h"
#include "base/unique_fd.h"
#include "serialize/buffer.h"

namespace mproc::pool_internal {

// Runs a task in a worker: reads the user function and its arguments from `in`, writes the
// results to `out`. Instantiated per signature in the submitter; found in the worker through
// its code reference.
using TaskEntry = void (*)(DecodeReader& in, EncodeBuffer& out);
// Runs the initializer in a worker (reads the function and its arguments from `in`).
using InitEntry = void (*)(DecodeReader& in);

// Called on the engine's thread: OK with the entry's output (bytes and descriptors), or the
// failure of the whole task (its worker died, the pool was terminated, ...). The output bytes
// are borrowed (often straight from a worker's ring): valid only during the call.
using TaskDone = std::function<void(absl::Status status, std::span<const std::byte> output,
                                    std::vector<UniqueFd> fds)>;

// Item-result tags inside a task's output.
inline constexpr uint8_t kItemOk = 0;
inline constexpr uint8_t kItemError = 1;

class TaskSink;

// What a Cancel took out of its engine: the task's bytes, its callback and whatever owns the
// task's descriptors (the caller's arguments). Handed out so that it is destroyed after every
// lock is released: those destructors may do anything (a manager proxy's sends a message, the
// last reference to an executor ends it).
struct CancelledTask {
  EncodeBuffer task;
  TaskDone done;
  std::shared_ptr<void> keepalive;
};

// The link to an engine that outlives it: what a Future cancels through, and what a lazy
// Pool::IMap feeds through. The engine cuts it before it is freed (its destructor, or an
// orphaned engine's own thread: pool/internal/orphans.h), so a call that raced with the
// engine's end finds no engine, where a bare pointer would reach a freed one; the engine
// cannot be freed while a call runs through the link (the cut waits for it).
class EngineLink {
 public:
  explicit EngineLink(TaskSink* sink) : sink_(sink) {}
  // The engine's Submit; FAILED_PRECONDITION once the link is cut.
  absl::StatusOr<uint64_t> Submit(EncodeBuffer task, TaskDone done,
                                  std::shared_ptr<void> keepalive);
  // The engine's Cancel(id); false once the link is cut. What it took out is destroyed after
  // the link's lock.
  bool Cancel(uint64_t id);
  // The engine's Drive (a waiter lends its thread until `ready` or `deadline`); returns at
  // once once the link is cut. Not under the link's lock (a drive lasts as long as a wait):
  // counted, and Cut waits for it.
  void Drive(const std::function<bool()>& ready, const Deadline& deadline);
  // Called by the engine before it is freed; waits for a call under way, and for drives
  // under way to return. Idempotent.
  void Cut() {
    MutexLock lock(&mu_);
    sink_ = nullptr;
    while (driving_ > 0) cv_.Wait(lock);
  }

 private:
  Mutex mu_;
  CondVar cv_;  // a drive returned
  TaskSink* sink_ ABSL_GUARDED_BY(mu_);
  int driving_ ABSL_GUARDED_BY(mu_) = 0;
};

class TaskSink {
 public:
  virtual ~TaskSink() { link_->Cut(); }
  // Queues a task (bytes: a TaskEntry, then what it reads); returns its id, never 0. Errors:
  // FAILED_PRECONDITION once closed (`done` is not called then), the broken status once the
  // engine is broken. `keepalive` owns whatever the task's descriptors belong to. Must not
  // block, free the engine or wait for its thread (EngineLink calls it under its lock).
  virtual absl::StatusOr<uint64_t> Submit(EncodeBuffer task, TaskDone done,
                                          std::shared_ptr<void> keepalive) = 0;
  // Removes a task that no worker has received yet; true when it did, with what it removed
  // moved to `*removed` (its callback is dropped uncalled, by the caller, after its locks).
  // Must not block, free the engine or wait for its thread.
  virtual bool Cancel(uint64_t id, CancelledTask* removed) = 0;
  // Lends the calling thread, a waiter on one of this engine's tasks, to the engine until
  // `ready()` or `deadline`: an engine whose progress is polled (MPI's) runs its turns on the
  // waiter's thread instead of handing each result over from its own (a thread switch per
  // hand-off when they share a CPU). Engines that wake their waiters anyway return at once.
  // Done callbacks of the futures completed meanwhile do not run on this thread
  // (pool_internal::t_defer_callbacks).
  virtual void Drive(const std::function<bool()>& ready, const Deadline& deadline) {
    (void)ready;
    (void)deadline;
  }
  // The link that outlives this engine (see EngineLink).
  const std::shared_ptr<EngineLink>& link() const { return link_; }

 protected:
  // Every engine calls this first in its destructor, before anything Submit or Cancel uses is
  // torn down (~TaskSink runs too late for that: the engine's members are gone by then).
  void CutLink() { link_->Cut(); }

 private:
  const std::shared_ptr<EngineLink> link_ = std::make_shared<EngineLink>(this);
};

inline absl::StatusOr<uint64_t> EngineLink::Submit(EncodeBuffer task, TaskDone done,
                                                   std::shared_ptr<void> keepalive) {
  MutexLock lock(&mu_);
  if (sink_ == nullptr) return absl::FailedPreconditionError("the pool or executor is gone");
  return sink_->Submit(std::move(task), std::move(done), std::move(keepalive));
}

inline void EngineLink::Drive(const std::function<bool()>& ready, const Deadline& deadline) {
  TaskSink* sink;
  {
    MutexLock lock(&mu_);
    if (sink_ == nullptr) return;
    sink = sink_;
    ++driving_;
  }
  sink->Drive(ready, deadline);
  MutexLock lock(&mu_);
  if (--driving_ == 0) cv_.SignalAll();
}

inline bool EngineLink::Cancel(uint64_t id) {
  CancelledTask removed;  // destroyed after the lock below
  MutexLock lock(&mu_);
  return sink_ != nullptr && sink_->Cancel(id, &removed);
}

}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_TASK_SINK_H_
