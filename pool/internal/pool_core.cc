#include "pool/internal/pool_core.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/deadline.h"
#include "base/io_ring.h"
#include "base/mutex.h"
#include "base/status.h"
#include "base/spin.h"
#include "base/syscall.h"
#include "ipc/internal/ring_link.h"
#include "pool/internal/channel.h"
#include "pool/internal/ledger.h"
#include "pool/internal/orphans.h"
#include "pool/internal/sigint.h"
#include "pool/internal/worker_start.h"
#include "serialize/frame.h"
#include "serialize/remote_error.h"
#include "spawn/zygote.h"

namespace mproc::pool_internal {
namespace {

using ipc_internal::RingLink;

// "signal 9 (Killed)", "exit code 3", or "an unknown way" for a Process exit code.
std::string DescribeExit(std::optional<int> code) {
  if (!code) return "an unknown way";
  if (*code < 0) return absl::StrCat("signal ", -*code, " (", strsignal(-*code), ")");
  return absl::StrCat("exit code ", *code);
}

}  // namespace

struct PoolCore::State {
  CoreOptions opts;  // fixed at Create (read without a lock)
  Mutex mu;
  struct PendingTask {
    uint64_t id;
    EncodeBuffer task;
    std::shared_ptr<void> keepalive;  // owns the descriptors the task's bytes borrow
  };
  std::deque<PendingTask> pending ABSL_GUARDED_BY(mu);
  std::map<uint64_t, TaskDone> callbacks ABSL_GUARDED_BY(mu);  // every submitted, unfinished task
  bool closed ABSL_GUARDED_BY(mu) = false;
  bool terminated ABSL_GUARDED_BY(mu) = false;
  bool kill_workers ABSL_GUARDED_BY(mu) = false;  // terminated by Kill: SIGKILL, not SIGTERM
  // The initializer failed: the pool serves no more.
  std::optional<absl::Status> broken ABSL_GUARDED_BY(mu);
  uint64_t next_id ABSL_GUARDED_BY(mu) = 1;
  UniqueFd wake;    // fixed at Create (read without a lock)
  UniqueFd sigint;  // interrupt mode: readable after a SIGINT (see RegisterSigintFd)
  // Fork start method: replacement workers come from this single-threaded copy of the owner,
  // made before the pool thread existed (never from fork() of the threaded owner).
  std::unique_ptr<Zygote> zygote;
  // Started by Create before the pool is shared, joined under join_mu (not annotated: Create
  // sets it without the lock).
  std::thread thread;
  // Orphaned (CoreDeleter): the thread is detached and frees the core when its loop ends.
  // Written and read only on the pool thread.
  bool frees_itself = false;
  Mutex join_mu;              // Join: one joiner at a time

  using Worker = PoolWorker;  // pool/internal/worker_start.h
  std::vector<Worker> workers;  // owned by the pool thread (and Create before it starts)
  // Workers that retired (maxtasksperchild) and closed their channel, not yet reaped: their
  // exit is awaited apart and never counted as a death.
  std::vector<std::unique_ptr<Process>> retiring;
  std::vector<pid_t> pids ABSL_GUARDED_BY(mu);  // for WorkerPids

  // Something for the pool thread (a task, a close, ...): it spins on `news`, and only a
  // sleeping pool thread needs the eventfd (a Dekker pair with its sleep in Run).
  std::atomic<uint64_t> news{0};
  std::atomic<uint32_t> sleeping{0};
  // Why no task may be submitted now; OK when one may.
  absl::Status RefusalLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (broken) return *broken;
    if (terminated) return absl::FailedPreconditionError("Pool is terminated");
    if (closed) return absl::FailedPreconditionError("Pool is closed (no new tasks)");
    return absl::OkStatus();
  }
  // Queues a task; returns its id.
  uint64_t QueueLocked(EncodeBuffer task, TaskDone done, std::shared_ptr<void> keepalive)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const uint64_t id = next_id++;
    callbacks.emplace(id, std::move(done));
    pending.push_back({id, std::move(task), std::move(keepalive)});
    return id;
  }
  void Wake() {
    news.fetch_add(1, std::memory_order_seq_cst);
    if (sleeping.load(std::memory_order_seq_cst) == 0) return;
    uint64_t one = 1;
    (void)!::write(wake.get(), &one, sizeof(one));
  }
};

namespace {

void RefreshPids(PoolCore::State& st) {
  MutexLock lock(&st.mu);
  st.pids.clear();
  for (auto& w : st.workers) st.pids.push_back(w.proc->pid());
}

}  // namespace

namespace {

// The core whose pool thread this is (null on any other thread). Thread ids are reused once a
// thread is joined, so "is this the pool's own thread" is asked of this, never of an id.
thread_local PoolCore* t_pool_thread_of = nullptr;

// The pools and executors alive in this process, ended at exit before the children are
// joined (spawn's exit hook): a Pool still alive then (a global, a leaked one) would otherwise
// hang the exit, its idle workers waiting for tasks while the exit waits for them. CPython
// ends them the same way, before it joins children: executors finish their work first, then
// pools are terminated, the newest first.
struct LiveCores {
  struct Entry {
    PoolCore* core = nullptr;
    bool executor = false;
    bool ending = false;  // the exit hook is ending it: its destructor waits
    bool ended = false;
    bool orphaned = false;  // dropped from its own thread while ending: the hook deletes it
  };
  Mutex mu;
  CondVar cv;
  std::vector<Entry> cores ABSL_GUARDED_BY(mu);
};
LiveCores& Live() {
  static auto* l = new LiveCores();
  return *l;
}

// A fork child's pools are its own: the parent's entries are dropped, and the lock (which
// another thread may have held during fork) is made anew. No analysis: it re-creates mu.
void ForgetCoresAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  LiveCores& l = Live();
  new (&l.mu) Mutex;
  new (&l.cv) CondVar;
  l.cores.clear();
}

void EndLiveCoresAtExit() {
  LiveCores& l = Live();
  // Orphans end by themselves (closed or terminated already): their work and their workers'
  // exits come before the children are joined.
  WaitForOrphans();
  for (const bool executors : {true, false}) {
    for (;;) {
      PoolCore* core = nullptr;
      {
        MutexLock lock(&l.mu);
        for (auto it = l.cores.rbegin(); it != l.cores.rend(); ++it) {
          if (it->executor != executors || it->ending || it->ended) continue;
          it->ending = true;
          core = it->core;
          break;
        }
      }
      if (core == nullptr) break;
      // Not under the lock: an executor's remaining done callbacks may create or destroy
      // pools meanwhile.
      core->EndAtExit();
      bool orphaned = false;
      {
        MutexLock lock(&l.mu);
        for (auto& e : l.cores) {
          if (e.core != core) continue;
          e.ending = false;
          e.ended = true;
          orphaned = e.orphaned;
        }
        if (orphaned) std::erase_if(l.cores, [&](const auto& e) { return e.core == core; });
        l.cv.SignalAll();
      }
      if (orphaned) delete core;  // its thread is joined; its owner is gone
    }
  }
  WaitForOrphans();  // cores dropped from their callbacks meanwhile
}

}  // namespace

void PoolCore::EndAtExit() {
  if (st_->opts.break_on_worker_death) {
    (void)Close();  // an executor: its submitted work runs to its end first
  } else {
    (void)Terminate();
  }
  (void)Join();
}

absl::StatusOr<CorePtr> PoolCore::Create(CoreOptions options) {
  if (options.processes < 0) return absl::InvalidArgumentError("processes must be >= 1");
  if (options.maxtasksperchild < 0) {
    return absl::InvalidArgumentError("maxtasksperchild must be a positive integer (or 0: none)");
  }
  CorePtr core(new PoolCore());
  core->processes_ = options.processes == 0 ? CpuCount() : options.processes;
  core->st_ = std::make_unique<State>();
  State& st = *core->st_;
  st.opts = std::move(options);
  st.wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!st.wake.ok()) return ErrnoToStatus(errno, "eventfd(pool)");
  if (st.opts.cancel_on_sigint) {
    st.sigint = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!st.sigint.ok()) return ErrnoToStatus(errno, "eventfd(pool sigint)");
  }
  // The zygote and the first workers before the pool thread exists (so fork workers copy no
  // thread of the pool's), and the zygote before any worker socket (it holds none of them).
  // They are forked from the caller: a caller that already runs other threads is warned
  // (Process::Start and Zygote::Start do), as CPython 3.12 warns at fork().
  if (st.opts.start_method.value_or(GetStartMethod()) == StartMethod::kFork) {
    MPROC_ASSIGN_OR_RETURN(st.zygote, Zygote::Start(ForkWorkerBody(st.opts)));
  }
  MPROC_ASSIGN_OR_RETURN(st.workers, StartWorkers(st.opts, nullptr, core->processes_));
  RefreshPids(st);
  if (st.sigint.ok()) {
    absl::Status r = RegisterSigintFd(st.sigint.get());
    if (!r.ok()) {
      for (auto& x : st.workers) {
        (void)x.proc->Kill();
        (void)x.proc->Join();
      }
      return r;
    }
  }
  PoolCore* raw = core.get();
  st.thread = std::thread([raw] {
    t_pool_thread_of = raw;
    raw->Run();
    if (!raw->st_->frees_itself) return;
    delete raw;
    OrphanDone();
  });
  {
    LiveCores& l = Live();
    MutexLock lock(&l.mu);
    static bool hooked = false;
    if (!hooked) {
      hooked = true;
      spawn_internal::AddExitHook(EndLiveCoresAtExit);
      pthread_atfork(nullptr, nullptr, ForgetCoresAfterFork);
    }
    LiveCores::Entry e;
    e.core = raw;
    e.executor = st.opts.break_on_worker_death;
    l.cores.push_back(e);
  }
  return core;
}

void CoreDeleter::operator()(PoolCore* core) const {
  if (t_pool_thread_of == core) {
    core->Orphan();
  } else {
    delete core;
  }
}

void PoolCore::Orphan() {
  {
    MutexLock lock(&st_->mu);
    // A Pool dropped is terminated, as its destructor would; an executor dropped (closed by
    // its Shutdown) finishes what was submitted, as at exit. The loop sees either after this
    // callback returns.
    if (!st_->opts.break_on_worker_death) st_->terminated = true;
    st_->closed = true;
  }
  LiveCores& l = Live();
  MutexLock lock(&l.mu);
  for (auto& e : l.cores) {
    if (e.core != this || !e.ending) continue;
    // The exit hook is joining this thread: it deletes the core once the join returns.
    e.orphaned = true;
    return;
  }
  // Counted before it leaves the registry, so the exit hook always sees it one way or the
  // other.
  AdoptOrphan();
  std::erase_if(l.cores, [this](const auto& e) { return e.core == this; });
  st_->thread.detach();
  st_->frees_itself = true;
}

PoolCore::~PoolCore() {
  CutLink();  // a Future's Cancel racing with this end reaches nothing from here on
  if (st_ == nullptr) return;
  {
    LiveCores& l = Live();
    MutexLock lock(&l.mu);
    // The exit hook may be ending this very core on another thread: wait for it.
    l.cv.Wait(lock, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(l.mu) {
      for (const auto& e : l.cores) {
        if (e.core == this && e.ending) return false;
      }
      return true;
    });
    std::erase_if(l.cores, [this](const auto& e) { return e.core == this; });
  }
  (void)Terminate();
  (void)Join();
  if (st_->sigint.ok()) ReleaseSigintFd(std::move(st_->sigint));
}

absl::StatusOr<uint64_t> PoolCore::Submit(EncodeBuffer task, TaskDone done,
                                          std::shared_ptr<void> keepalive) {
  State& st = *st_;
  uint64_t id;
  {
    MutexLock lock(&st.mu);
    MPROC_RETURN_IF_ERROR(st.RefusalLocked());
    id = st.QueueLocked(std::move(task), std::move(done), std::move(keepalive));
  }
  st.Wake();
  return id;
}

absl::Status PoolCore::SubmitMany(std::vector<Submission>& batch) {
  State& st = *st_;
  {
    MutexLock lock(&st.mu);
    MPROC_RETURN_IF_ERROR(st.RefusalLocked());
    for (Submission& sub : batch) {
      st.QueueLocked(std::move(sub.task), std::move(sub.done), std::move(sub.keepalive));
    }
  }
  st.Wake();
  return absl::OkStatus();
}

bool PoolCore::Cancel(uint64_t id, CancelledTask* removed) {
  State& st = *st_;
  MutexLock lock(&st.mu);
  for (auto it = st.pending.begin(); it != st.pending.end(); ++it) {
    if (it->id != id) continue;
    // Handed out, not destroyed here: they hold the caller's arguments (CancelledTask).
    removed->task = std::move(it->task);
    removed->keepalive = std::move(it->keepalive);
    st.pending.erase(it);
    if (auto cb = st.callbacks.find(id); cb != st.callbacks.end()) {
      removed->done = std::move(cb->second);
      st.callbacks.erase(cb);
    }
    return true;
  }
  return false;
}

std::vector<uint64_t> PoolCore::CancelPending() {
  State& st = *st_;
  std::vector<uint64_t> ids;
  std::vector<TaskDone> cbs;
  {
    MutexLock lock(&st.mu);
    for (auto& pt : st.pending) {
      uint64_t id = pt.id;
      ids.push_back(id);
      auto it = st.callbacks.find(id);
      if (it != st.callbacks.end()) {
        cbs.push_back(std::move(it->second));
        st.callbacks.erase(it);
      }
    }
    st.pending.clear();
  }
  for (TaskDone& cb : cbs) cb(absl::CancelledError("cancelled before it started"), {}, {});
  st.Wake();
  return ids;
}

absl::Status PoolCore::Close() {
  {
    MutexLock lock(&st_->mu);
    st_->closed = true;
  }
  st_->Wake();
  return absl::OkStatus();
}

absl::Status PoolCore::Terminate() {
  {
    MutexLock lock(&st_->mu);
    st_->closed = true;
    st_->terminated = true;
  }
  st_->Wake();
  return absl::OkStatus();
}

absl::Status PoolCore::Kill() {
  {
    MutexLock lock(&st_->mu);
    st_->closed = true;
    st_->terminated = true;
    st_->kill_workers = true;
  }
  st_->Wake();
  return absl::OkStatus();
}

absl::Status PoolCore::Join() {
  {
    MutexLock lock(&st_->mu);
    if (!st_->closed) {
      return absl::FailedPreconditionError("Pool is still running: Close or Terminate it first");
    }
  }
  // A callback that runs on the pool thread (a Future's done callback) and shuts down the
  // executor must not wait for its own thread; two joiners must not join one thread.
  if (t_pool_thread_of == this) {
    return absl::FailedPreconditionError(
        "Join on the pool's own thread (from a done callback) would wait for itself; the pool "
        "shuts down once its work is done");
  }
  MutexLock join(&st_->join_mu);
  if (st_->thread.joinable()) st_->thread.join();
  return absl::OkStatus();
}

std::vector<pid_t> PoolCore::WorkerPids() {
  MutexLock lock(&st_->mu);
  return st_->pids;
}

namespace {

// The pool thread (PoolCore::Run): a loop of assign (pending tasks to workers' ledgers), send,
// wait (spin on the rings, then sleep on the sockets, pidfds and the wake eventfd), and reap
// (results, then deaths: fail what a dead worker held, replace it), until the pool is closed
// and idle or terminated; then shut down.
class PoolLoop {
 public:
  explicit PoolLoop(PoolCore::State& st) : st_(st) {}

  void Run() {
    for (;;) {
      const uint64_t seen_news = st_.news.load(std::memory_order_seq_cst);
      const bool stop = Assign();
      Send();
      if (stop) break;
      if (!Wait(seen_news)) break;
      Reap();
    }
    ShutDown();
  }

 private:
  using Worker = PoolCore::State::Worker;
  using PendingTask = PoolCore::State::PendingTask;

  // Removes a task's callback (empty when the task already ended, e.g. cancelled), to be
  // called outside the lock.
  TaskDone TakeCallback(uint64_t id) {
    MutexLock lock(&st_.mu);
    auto it = st_.callbacks.find(id);
    if (it == st_.callbacks.end()) return nullptr;
    TaskDone cb = std::move(it->second);
    st_.callbacks.erase(it);
    return cb;
  }
  void Fail(uint64_t id, const absl::Status& why) {
    if (TaskDone cb = TakeCallback(id)) cb(why, {}, {});
  }
  void Finish(uint64_t id, std::span<const std::byte> out, std::vector<UniqueFd> fds) {
    if (TaskDone cb = TakeCallback(id)) cb(absl::OkStatus(), out, std::move(fds));
  }

  // Handles one message from worker `w`; false when the worker's channel is finished.
  bool Handle(Worker& w, uint8_t kind, std::span<const std::byte> payload,
              std::vector<UniqueFd> fds) {
    if (kind == kResult) {
      DecodeReader r(payload);
      uint64_t id = 0;
      if (!Codec<uint64_t>::Decode(r, id)) return false;
      const std::span<const std::byte> out = payload.subspan(r.offset());
      w.ledger.Complete(id);
      Finish(id, out, std::move(fds));
      return true;
    }
    if (kind == kInitFailed) {
      RemoteError e;
      absl::Status s = DecodeInto(payload, e);
      absl::Status why = s.ok() ? RemoteErrorToStatus(e) : s;
      why = absl::Status(why.code(), absl::StrCat("pool initializer failed: ", why.message()));
      if (s.ok()) why.SetPayload(kRemoteErrorPayloadUrl, *RemoteErrorToStatus(e).GetPayload(kRemoteErrorPayloadUrl));
      MutexLock lock(&st_.mu);
      if (!st_.broken) st_.broken = why;
    }
    return false;
  }
  // Handles every message the worker has published, without waiting (a socket message
  // announced in the ring is read whole). False when the worker's channel is broken.
  bool Drain(Worker& w) {
    const Channel c = w.channel();
    for (;;) {
      absl::StatusOr<std::optional<RingLink::Next>> next =
          c.link->TryPeek(c.end, c.sock, Deadline::After(absl::Seconds(10)));
      if (!next.ok()) return false;
      if (!next->has_value()) return true;
      if (!ChannelTake(c, **next, frame_, scratch_, &in_).ok()) return false;
      const bool ok = Handle(w, in_.kind, in_.payload, std::move(in_.fds));
      ChannelRelease(c, in_);
      if (!ok) return false;
    }
  }

  // 1. Hands pending tasks to workers (ledger.h's rules), to be sent after the lock; fails
  // what a broken pool cannot run. True when the loop is done (terminated, or closed with
  // nothing pending or running).
  bool Assign() {
    bool terminate = false;
    MutexLock lock(&st_.mu);
    if (st_.broken) {
      while (!st_.pending.empty()) {
        to_fail_.emplace_back(st_.pending.front().id, *st_.broken);
        st_.pending.pop_front();
      }
    }
    terminate = st_.terminated;
    if (!terminate) {
      // The assignments are made under the lock and sent after it, all at once: a thread
      // submitting tasks meanwhile waits for one short section, not one per task.
      ledgers_.clear();
      for (auto& w : st_.workers) ledgers_.push_back(&w.ledger);
      AssignRoundRobin(
          st_.pending, std::span<TaskLedger* const>(ledgers_), st_.opts.maxtasksperchild,
          [](const PendingTask& t) { return t.id; },
          [](const PendingTask& t) { return t.task.size(); },
          [&](size_t wi, PendingTask t) { sends_.emplace_back(wi, std::move(t)); });
    }
    bool busy = false;
    for (auto& w : st_.workers) busy |= !w.ledger.empty();
    return terminate || (st_.closed && st_.pending.empty() && !busy);
  }

  // Sends what Assign gave out, then fails what could not be sent (and what Assign failed).
  void Send() {
    for (auto& [wi, pt] : sends_) {
      Worker& w = st_.workers[wi];
      EncodeBuffer idbuf;
      Encode(pt.id, idbuf);
      absl::Status s = ChannelSend(w.channel(), kTask, idbuf.bytes(), pt.task.bytes(),
                                   pt.task.fds(), Deadline::After(absl::Seconds(60)));
      // A worker that is dying (OUT_OF_RANGE) keeps the task in its ledger: its death fails it.
      if (s.ok() || absl::IsOutOfRange(s)) continue;
      // Anything else (a descriptor the task names is not open, say): this task fails, the
      // worker never saw it whole. If part of it was sent, the worker's channel is torn: the
      // worker is killed, and its death fails what it held and replaces it.
      if (ChannelTorn(w.channel())) (void)w.proc->Kill();
      w.ledger.Unassign(pt.id);
      to_fail_.emplace_back(pt.id, absl::Status(s.code(), absl::StrCat(
                                       "pool could not send the task: ", s.message())));
    }
    sends_.clear();
    for (auto& [id, why] : to_fail_) Fail(id, why);
    to_fail_.clear();
  }

  // 2. Waits for results, deaths or news (and handles a SIGINT in interrupt mode). False
  // when waiting failed (the loop ends).
  bool Wait(uint64_t seen_news) {
    PoolCore::State& st = st_;
    pfds_.clear();
    pfds_.push_back({st.wake.get(), POLLIN, 0});
    pfds_.push_back({st.sigint.ok() ? st.sigint.get() : -1, POLLIN, 0});  // -1: ignored by poll
    for (auto& w : st.workers) {
      pfds_.push_back({w.sock.get(), POLLIN, 0});
      pfds_.push_back({w.proc->sentinel(), POLLIN, 0});
    }
    // Results arrive in the rings and tasks through `news`: spin on memory first (a result or a
    // new task usually comes within microseconds, and a blocking wake-up on another CPU costs
    // 45-150 us here). Then one wait over the sockets (bells, socket messages, end of file),
    // the pidfds and the wake eventfd (poll(2) or io_uring), with every ring asking for a bell
    // and Wake() for the eventfd. A pool thread kept busy looks at the descriptors (deaths,
    // SIGINT) at least every millisecond without sleeping.
    auto work_waits = [&] {
      if (st.news.load(std::memory_order_acquire) != seen_news) return true;
      for (auto& w : st.workers) {
        if (!w.link->Empty(0)) return true;
      }
      return false;
    };
    int n = 0;
    if (!SpinUntil(work_waits)) {
      st.sleeping.store(1, std::memory_order_seq_cst);
      bool ready = false;
      for (auto& w : st.workers) ready |= !w.link->PrepareSleep(0);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      ready |= st.news.load(std::memory_order_seq_cst) != seen_news;
      n = ready ? RetryEintr([&] { return ::poll(pfds_.data(), pfds_.size(), 0); })
                : WaitEvents(std::span<pollfd>(pfds_), Deadline::After(absl::Seconds(1)));
      st.sleeping.store(0, std::memory_order_relaxed);
      for (auto& w : st.workers) w.link->EndSleep(0);
      last_look_ = MonotonicNowNs();
    } else if (MonotonicNowNs() - last_look_ > 1'000'000) {
      n = RetryEintr([&] { return ::poll(pfds_.data(), pfds_.size(), 0); });
      last_look_ = MonotonicNowNs();
    } else {
      for (pollfd& p : pfds_) p.revents = 0;
    }
    if (n < 0) return false;
    if (pfds_[0].revents) {
      uint64_t v;
      (void)!::read(st.wake.get(), &v, sizeof(v));
    }
    if (pfds_[1].revents & POLLIN) {
      // Interrupt mode, SIGINT: every unfinished task fails with CANCELLED, so whatever waits
      // on them returns. Tasks already with a worker run on; their results are dropped. The
      // pool stays usable.
      uint64_t v;
      (void)!::read(st.sigint.get(), &v, sizeof(v));
      std::vector<uint64_t> ids;
      {
        MutexLock lock(&st.mu);
        for (auto& [id, cb] : st.callbacks) ids.push_back(id);
        st.pending.clear();
      }
      for (uint64_t id : ids) Fail(id, absl::CancelledError("interrupted by SIGINT"));
    }
    return true;
  }

  // 3. Results first, then deaths (a retiring worker's last result precedes its exit): a
  // dead worker's ledger fails, and it is replaced while the pool serves.
  void Reap() {
    PoolCore::State& st = st_;
    std::vector<size_t> dead;
    for (size_t i = 0; i < st.workers.size(); ++i) {
      Worker& w = st.workers[i];
      short sock_ev = pfds_[2 + 2 * i].revents;
      short pid_ev = pfds_[3 + 2 * i].revents;
      bool alive = Drain(w);
      // A readable socket with nothing announced in the ring: the worker's end is closed.
      if (alive && sock_ev != 0 && w.link->Empty(0) && SocketAtEof(w.sock.get())) alive = false;
      if (pid_ev || !alive) {
        Drain(w);
        dead.push_back(i);
      }
    }
    for (size_t k = dead.size(); k-- > 0;) {
      size_t i = dead[k];
      Worker w = std::move(st.workers[i]);
      st.workers.erase(st.workers.begin() + static_cast<ptrdiff_t>(i));
      // A worker that did its maxtasksperchild tasks closes its channel and exits; it may
      // still be running (its exit handlers, say) when the channel reads end of file. That is
      // a retirement, never a death: it is replaced at once and its exit awaited apart.
      const bool retired = w.ledger.Retired(st.opts.maxtasksperchild);
      std::optional<int> code;
      if (retired) {
        code = 0;
        if (w.proc->IsAlive()) st.retiring.push_back(std::move(w.proc));
      } else {
        if (w.proc->IsAlive()) (void)w.proc->Kill();  // a broken channel: finish it
        (void)w.proc->Join(absl::Seconds(30));
        code = w.proc->exitcode();
      }
      std::optional<absl::Status> broken;
      {
        MutexLock lock(&st.mu);
        broken = st.broken;
      }
      const bool abrupt = !code.has_value() || *code != 0;
      if (st.opts.break_on_worker_death && abrupt && !broken.has_value()) {
        std::string how = DescribeExit(code);
        MutexLock lock(&st.mu);
        if (!st.terminated) {
          st.broken = absl::AbortedError(absl::StrCat(
              "BrokenProcessPool: a process in the pool (pid ", w.proc->pid(), ") was terminated "
              "abruptly (", how, ") while the future was running or pending"));
          broken = st.broken;
          // CPython's executor: the other workers are stopped and every unfinished future
          // fails with the same error (below, at shutdown).
          st.closed = true;
          st.terminated = true;
        }
      }
      if (!w.ledger.empty() && broken.has_value()) {
        w.ledger.ForEachHeld([&](uint64_t id) { Fail(id, *broken); });  // its initializer failed
      } else if (!w.ledger.empty()) {
        std::string how = DescribeExit(code);
        absl::Status why = absl::AbortedError(absl::StrCat(
            "pool worker pid ", w.proc->pid(), " died (", how, ") holding this task"));
        w.ledger.ForEachHeld([&](uint64_t id) { Fail(id, why); });
      }
      bool replace;
      {
        MutexLock lock(&st.mu);
        replace = !st.terminated && !st.broken && !(st.closed && st.pending.empty());
      }
      if (replace) {
        absl::StatusOr<Worker> nw = StartWorker(st.opts, st.zygote.get());
        if (nw.ok()) {
          st.workers.push_back(*std::move(nw));
        } else {
          MutexLock lock(&st.mu);
          if (!st.broken) {
            st.broken = absl::UnavailableError(
                absl::StrCat("pool could not replace a worker: ", nw.status().message()));
          }
        }
      }
    }
    if (!dead.empty()) RefreshPids(st);
    // Retired workers that have exited by now are reaped (IsAlive reaps).
    std::erase_if(st.retiring, [](const std::unique_ptr<Process>& p) { return !p->IsAlive(); });
    {
      MutexLock lock(&st.mu);
      if (st.workers.empty() && !st.broken && !st.terminated && !st.pending.empty()) {
        st.broken = absl::UnavailableError("pool has no workers left");
      }
    }
  }

  // Stops (or kills) every worker and fails what is left.
  void ShutDown() {
    PoolCore::State& st = st_;
    bool terminated;
    bool kill;
    {
      MutexLock lock(&st.mu);
      terminated = st.terminated;
      kill = st.kill_workers;
    }
    for (auto& w : st.workers) {
      if (kill) {
        (void)w.proc->Kill();
      } else if (terminated) {
        (void)w.proc->Terminate();
      } else {
        (void)ChannelSend(w.channel(), kStop, {}, {}, {}, Deadline::After(absl::Seconds(5)));
      }
    }
    for (auto& w : st.workers) {
      (void)w.proc->Join(absl::Seconds(terminated ? 2 : 60));
      if (w.proc->IsAlive()) {
        (void)w.proc->Kill();
        (void)w.proc->Join();
      }
    }
    st.workers.clear();
    for (auto& p : st.retiring) {
      (void)p->Join(absl::Seconds(terminated ? 2 : 60));
      if (p->IsAlive()) {
        (void)p->Kill();
        (void)p->Join();
      }
    }
    st.retiring.clear();
    st.zygote.reset();  // its children are all joined: it may go
    RefreshPids(st);
    std::vector<uint64_t> left;
    absl::Status why = absl::AbortedError("pool terminated before the task finished");
    {
      MutexLock lock(&st.mu);
      for (auto& [id, cb] : st.callbacks) left.push_back(id);
      st.pending.clear();
      if (st.broken) why = *st.broken;
    }
    for (uint64_t id : left) Fail(id, why);
  }

  PoolCore::State& st_;
  std::vector<std::pair<size_t, PendingTask>> sends_;  // assigned, to send
  std::vector<std::pair<uint64_t, absl::Status>> to_fail_;
  std::vector<TaskLedger*> ledgers_;
  std::vector<pollfd> pfds_;
  int64_t last_look_ = 0;
  Frame frame_;
  std::string scratch_;
  Incoming in_;
};

}  // namespace

void PoolCore::Run() { PoolLoop(*st_).Run(); }

}  // namespace mproc::pool_internal
