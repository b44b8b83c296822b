// pool/internal/ledger.h — which tasks each worker holds, and which worker takes the next.
//
// The pool thread keeps one TaskLedger per worker: the tasks sent to it, in the order sent
// (a worker runs them in that order and answers in that order), with their encoded sizes.
// Every task is in exactly one place: the pool's pending queue, one worker's ledger, or done.
// A worker that dies fails exactly what its ledger holds; one that did its maxtasksperchild
// tasks and holds none retired instead.
//
// AssignRoundRobin hands pending tasks to workers: round r gives each worker holding at most
// r tasks one more, for up to kWindow rounds (so a worker never idles on a round trip between
// tasks), never past a worker's maxtasksperchild budget, and never a task behind others when
// the worker's queued bytes would pass kWindowBytes (an idle worker reads a task whole, so a
// task of any size may go to it; behind others, the pool thread must never block writing to a
// worker that is itself blocked writing back).
//
// No processes, no locks: the pool thread owns every ledger (pool/internal/pool_core.cc).

#ifndef MPROC_POOL_INTERNAL_LEDGER_H_
#define MPROC_POOL_INTERNAL_LEDGER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <utility>

namespace mproc::pool_internal {

// Tasks queued per worker, and the bytes queued behind a busy one.
inline constexpr size_t kWindow = 4;
inline constexpr size_t kWindowBytes = 32 << 10;

class TaskLedger {
 public:
  // Task `id`, `bytes` long, goes to this worker (recorded before it is sent, so a death in
  // between still fails it).
  void Assign(uint64_t id, size_t bytes) {
    tasks_.push_back({id, bytes});
    queued_bytes_ += bytes;
    ++assigned_;
  }
  // The worker answered task `id`: it leaves the ledger (answers come in order, so it is the
  // oldest; an answer for a task not held, a cancelled one say, changes nothing but the
  // count). Returns whether it was held.
  bool Complete(uint64_t id) {
    ++done_;
    if (tasks_.empty() || tasks_.front().id != id) return false;
    queued_bytes_ -= tasks_.front().bytes;
    tasks_.pop_front();
    return true;
  }
  // Sending task `id` failed before the worker could have it whole: it leaves the ledger and
  // does not count against the worker's budget. Returns whether it was held.
  bool Unassign(uint64_t id) {
    for (size_t k = tasks_.size(); k-- > 0;) {
      if (tasks_[k].id != id) continue;
      queued_bytes_ -= tasks_[k].bytes;
      tasks_.erase(tasks_.begin() + static_cast<std::ptrdiff_t>(k));
      --assigned_;
      return true;
    }
    return false;
  }

  // Whether, in assignment round `round`, one more task of `bytes` may go to this worker.
  bool Accepts(size_t round, size_t bytes, int maxtasksperchild) const {
    if (tasks_.size() > round) return false;
    if (maxtasksperchild > 0 && assigned_ >= maxtasksperchild) return false;
    return tasks_.empty() || queued_bytes_ + bytes <= kWindowBytes;
  }
  // The worker ended having done its maxtasksperchild tasks and holding none: a retirement,
  // not a death.
  bool Retired(int maxtasksperchild) const {
    return maxtasksperchild > 0 && tasks_.empty() && done_ >= maxtasksperchild;
  }

  bool empty() const { return tasks_.empty(); }
  size_t held() const { return tasks_.size(); }
  // The tasks held, oldest first.
  template <typename Fn>
  void ForEachHeld(Fn fn) const {
    for (const Entry& e : tasks_) fn(e.id);
  }
  size_t queued_bytes() const { return queued_bytes_; }
  int assigned() const { return assigned_; }
  int done() const { return done_; }

 private:
  struct Entry {
    uint64_t id;
    size_t bytes;
  };
  std::deque<Entry> tasks_;
  size_t queued_bytes_ = 0;
  int assigned_ = 0;  // tasks ever assigned (the maxtasksperchild budget)
  int done_ = 0;      // answers received
};

// Moves tasks from the front of `pending` to the workers' ledgers by the rules above, calling
// `sent(worker_index, task)` for each in assignment order. `id_of(task)` and `size_of(task)`
// read a task's id and encoded size.
template <typename Task, typename IdOf, typename SizeOf, typename Sent>
void AssignRoundRobin(std::deque<Task>& pending, std::span<TaskLedger* const> ledgers,
                      int maxtasksperchild, IdOf id_of, SizeOf size_of, Sent sent) {
  for (size_t round = 0; round < kWindow && !pending.empty(); ++round) {
    for (size_t wi = 0; wi < ledgers.size() && !pending.empty(); ++wi) {
      TaskLedger& l = *ledgers[wi];
      if (!l.Accepts(round, size_of(pending.front()), maxtasksperchild)) continue;
      Task t = std::move(pending.front());
      pending.pop_front();
      l.Assign(id_of(t), size_of(t));
      sent(wi, std::move(t));
    }
  }
}

}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_LEDGER_H_
