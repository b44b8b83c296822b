#include "mpi/internal/engine.h"

#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstdio>
#include <deque>
#include <span>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "base/code_ref.h"
#include "base/cpu_relax.h"
#include "base/deadline.h"
#include "base/mutex.h"
#include "base/spin.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "pool/async_result.h"
#include "pool/internal/orphans.h"
#include "serialize/codec.h"
#include "serialize/remote_error.h"

namespace mproc::mpi_internal {

using pool_internal::TaskDone;
using pool_internal::TaskEntry;

absl::Status MpiStatus(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  return absl::UnavailableError(
      absl::StrCat(what, " failed: ", std::string(text, static_cast<size_t>(len))));
}

namespace {

std::span<const std::byte> AsBytes(const std::vector<std::byte>& v, size_t from = 0) {
  return std::span<const std::byte>(v.data() + from, v.size() - from);
}

int SendBytes(std::span<const std::byte> b, int dest, int tag, MPI_Comm comm) {
  return MPI_Send(b.data(), static_cast<int>(b.size()), MPI_BYTE, dest, tag, comm);
}

// A matched message, received whole when it is within `limit` bytes. `*too_big` (and no
// bytes) when it is not: it is then consumed without being read into memory.
struct Received {
  int source = -1;
  int tag = -1;
  bool too_big = false;
  uint64_t size = 0;
};

absl::Status ReceiveMatched(MPI_Message* msg, const MPI_Status& probed, uint64_t limit,
                            std::vector<std::byte>& buf, Received* got) {
  int count = 0;
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Get_count(&probed, MPI_BYTE, &count), "MPI_Get_count"));
  got->source = probed.MPI_SOURCE;
  got->tag = probed.MPI_TAG;
  got->size = static_cast<uint64_t>(count);
  MPI_Status st;
  if (got->size > limit) {
    got->too_big = true;
    buf.clear();
    // Receiving into no room consumes the message with a truncation error, and nothing is
    // allocated for it.
    (void)MPI_Mrecv(nullptr, 0, MPI_BYTE, msg, &st);
    return absl::OkStatus();
  }
  buf.resize(static_cast<size_t>(count));
  return MpiStatus(MPI_Mrecv(buf.data(), count, MPI_BYTE, msg, &st), "MPI_Mrecv");
}

// Between two polls of MPI, which offers no descriptor to sleep on: a pause for the first 64
// empty polls in a row, then the CPU yielded at each (a peer may share it).
void PausePoll(int& empty_polls) {
  if (++empty_polls < 64) {
    CpuRelax();
  } else {
    ::sched_yield();
  }
}

// Polls for a message from `source` with `tag` until the deadline.
absl::StatusOr<bool> ProbeUntil(MPI_Comm comm, int source, int tag, const Deadline& deadline,
                                MPI_Message* msg, MPI_Status* st) {
  for (int empty_polls = 0;;) {
    int flag = 0;
    MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Improbe(source, tag, comm, &flag, msg, st), "MPI_Improbe"));
    if (flag) return true;
    if (deadline.Expired()) return false;
    PausePoll(empty_polls);
  }
}

// A worker's wait for the root's next message. Serving an executor, it polls without sleeping
// (a task's latency is the point). Between executors (before a hello, after a bye) nothing is
// urgent: after kIdleSpin without a message it sleeps between polls, up to kIdleNapMax, so an
// idle worker rank costs next to no CPU; the next executor's handshake waits that long at
// most.
constexpr int64_t kIdleSpinNs = 10'000'000;
constexpr int64_t kIdleNapMaxNs = 1'000'000;
absl::Status NextMessage(MPI_Comm comm, int root, bool serving, MPI_Message* msg,
                         MPI_Status* st) {
  if (serving) return MpiStatus(MPI_Mprobe(root, MPI_ANY_TAG, comm, msg, st), "MPI_Mprobe");
  const int64_t start = MonotonicNowNs();
  int64_t nap_ns = 20'000;
  for (int empty_polls = 0;;) {
    int flag = 0;
    MPROC_RETURN_IF_ERROR(
        MpiStatus(MPI_Improbe(root, MPI_ANY_TAG, comm, &flag, msg, st), "MPI_Improbe"));
    if (flag) return absl::OkStatus();
    if (MonotonicNowNs() - start < kIdleSpinNs) {
      PausePoll(empty_polls);
      continue;
    }
    const timespec nap = {0, static_cast<long>(nap_ns)};
    ::nanosleep(&nap, nullptr);
    nap_ns = std::min(nap_ns * 2, kIdleNapMaxNs);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Root.

namespace {

// Task ids and handshake sessions are unique in this process, across engines: an answer or a
// handshake reply left over from an earlier executor on a kept communicator (launch a) is
// recognised as stale and dropped, never taken for a new task's.
std::atomic<uint64_t> g_next_id{1};
std::atomic<uint64_t> g_next_session{1};
std::atomic<int> g_live_engines{0};
std::atomic<bool> g_kept_comm_unusable{false};
std::atomic<bool> g_unrecoverable{false};

// Send buffers MPI may still read after an engine gave up on them (Open MPI's ob1 cannot
// cancel a send): kept for the life of the process rather than freed under MPI.
Mutex g_abandoned_mu;
std::vector<std::shared_ptr<void>>& Abandoned() {
  static auto* v = new std::vector<std::shared_ptr<void>>();
  return *v;
}

// How long a broken engine keeps taking the answers of the tasks it had sent before it gives
// up on them (and on its communicator).
constexpr absl::Duration kDrainLimit = absl::Seconds(10);

// The engine whose thread this is (null on any other thread). Thread ids are reused once a
// thread is joined, so "is this the engine's own thread" is asked of this, never of an id.
thread_local const Engine* t_engine_thread_of = nullptr;

}  // namespace

int LiveEngines() { return g_live_engines.load(); }

uint32_t WorkerWireVersion() {
  static const uint32_t v = [] {
    const char* e = std::getenv("MPROC_MPI_WIRE_VERSION_FOR_TEST");
    if (e == nullptr || *e == '\0') return kWireVersion;
    char* end = nullptr;
    const unsigned long v = std::strtoul(e, &end, 10);
    return *end == '\0' && v > 0 && v <= UINT32_MAX ? static_cast<uint32_t>(v) : kWireVersion;
  }();
  return v;
}

bool KeptCommUnusable() { return g_kept_comm_unusable.load(); }
bool MpiUnrecoverable() { return g_unrecoverable.load(); }

absl::Status CheckOptions(const EngineOptions& o) {
  if (o.tasks_per_rank < 1) {
    return absl::InvalidArgumentError("MpiExecutor: tasks_per_rank must be at least 1");
  }
  if (o.max_message_bytes < 64 || o.max_message_bytes > INT_MAX - 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("MpiExecutor: max_message_bytes must be in [64, ", INT_MAX - 64, "]"));
  }
  if (o.handshake_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("MpiExecutor: handshake_timeout must be positive");
  }
  if (o.heartbeat_timeout < absl::Milliseconds(60) || o.task_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "MpiExecutor: heartbeat_timeout must be at least 60ms (workers beat every sixth of it) "
        "and task_timeout positive (either may be infinite)");
  }
  if (o.initializer.size() + 1024 > o.max_message_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("MpiExecutor: the initializer and its arguments are ", o.initializer.size(),
                     " bytes, above max_message_bytes (", o.max_message_bytes, ")"));
  }
  return absl::OkStatus();
}

struct Engine::State {
  EngineOptions o;
  std::vector<WorkerInfo> infos;
  std::thread thread;
  // Orphaned (Engine::Orphan): the thread is detached, frees the engine when Run returns,
  // then runs this. Written before the detach, on the engine thread.
  bool frees_itself = false;
  std::function<void()> after_orphan;
  uint64_t first_id = 0;      // ids below it belong to earlier engines

  // Shared with submitting threads.
  Mutex mu;
  struct Pending {
    EncodeBuffer task;
    TaskDone done;
    std::shared_ptr<void> keepalive;
  };
  std::deque<uint64_t> order ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<uint64_t, Pending> pending ABSL_GUARDED_BY(mu);
  bool closed ABSL_GUARDED_BY(mu) = false;
  bool sleeping ABSL_GUARDED_BY(mu) = false;
  std::atomic<uint64_t> news{0};  // bumped by Submit and Close: the engine spins on it
  std::atomic<size_t> queued{0};  // order.size(), readable without the mutex
  absl::Status broken ABSL_GUARDED_BY(mu);
  // The engine thread sleeps for a waiter that drives (Drive): Submit does not ring then.
  bool parked ABSL_GUARDED_BY(mu) = false;
  // eventfd: rung (only while the thread sleeps or parks) by Submit (while it sleeps), Close,
  // and a waiter handing over callbacks or leaving tasks out.
  UniqueFd bell;
  // A waiter in Drive (0 or 1): while there is one, the engine thread parks and it runs the
  // turns.
  std::atomic<int> drivers{0};
  // Done callbacks of futures a waiter's turns completed, for this thread to run
  // (pool_internal::t_defer_callbacks).
  pool_internal::DeferredCallbacks deferred ABSL_GUARDED_BY(mu);
  std::atomic<bool> has_deferred{false};
  // Tasks sent and not yet answered (out_count), readable without the turn lock.
  std::atomic<size_t> outstanding{0};

  // Held by whoever runs a turn (the engine thread, or a waiter in Drive): every MPI call of
  // the engine after its handshake, and everything below, is made under it, so calls are
  // serialised across threads (MPI_THREAD_SERIALIZED suffices).
  Mutex turn_mu;
  Mutex join_mu;
  bool joined ABSL_GUARDED_BY(join_mu) = false;

  // The engine thread's own.
  struct Out {
    uint64_t id = 0;
    TaskDone done;       // empty once called (a broken engine calls it before the answer comes)
    EncodeBuffer bytes;  // id + task, kept until the send completes
    std::shared_ptr<void> keepalive;
    MPI_Request req = MPI_REQUEST_NULL;
  };
  struct Rank {
    int rank = -1;
    std::deque<Out> held;  // sent, oldest first: the next answer from this rank is front()'s
    const WorkerInfo* info = nullptr;
    int64_t last_heard_ns = 0;   // an answer or a heartbeat, or when it was given work
    int64_t front_since_ns = 0;  // when held.front() became the task it runs
    bool lost = false;           // dead or hung: its tasks failed, nothing more is sent to it
  };
  std::deque<Rank> ranks;  // a deque: a Rank (its deque of Outs) never moves
  absl::flat_hash_map<int, size_t> by_rank;
  size_t out_count = 0;
  bool failed = false;                // FailEverything ran: only draining is left
  bool gave_up = false;               // answers owed will never be taken: the comm is out of step
  bool handshake_incomplete = false;  // some rank did not answer the handshake
  int64_t drain_deadline_ns = 0;      // set when failed
  std::vector<std::byte> buf;
  std::vector<MPI_Request> reqs;
  std::vector<Out*> req_owner;
  std::vector<Rank*> req_rank;  // the rank each owner is held by
  std::vector<int> done_idx;
  uint64_t turns = 0;
  int errors = 0;         // turns on which MPI itself failed
  bool released = false;  // Release ran: no more MPI calls on the communicator

  void Ring() {
    const uint64_t one = 1;
    (void)!::write(bell.get(), &one, sizeof(one));
  }
  absl::Status Handshake();
  absl::Status ReadHandshakeReplies(uint64_t session);
  void Run();
  // One turn, under turn_mu: sends queued tasks, completes sends, takes answers (running
  // their callbacks), minds liveness and the drain; true when anything moved.
  bool Turn();
  // The engine thread's wait while a waiter drives: on the bell, at most kParkMs at a time.
  void Park();
  // A waiter hands the callbacks its turn set aside to the engine thread (and wakes it).
  void HandOver(pool_internal::DeferredCallbacks& callbacks);
  // A waiter stops driving: hands over its callbacks, and wakes the engine thread when
  // tasks are still out or queued.
  void LeaveDrive(pool_internal::DeferredCallbacks& callbacks);
  // On the engine thread: runs the callbacks handed over.
  void RunDeferred();
  bool Dispatch();
  absl::StatusOr<bool> CompleteSends();
  absl::StatusOr<bool> TakeAnswers();
  void FailEverything(const absl::Status& why);
  void CheckLiveness();
  void LoseRank(Rank& rk, const std::string& why);
  void Abandon(Rank& rk);
  void GiveUp();
  void Release();
};

absl::Status Engine::State::Handshake() {
  const uint64_t session = g_next_session.fetch_add(1);
  EncodeBuffer hello;
  Encode(kWireVersion, hello);
  Encode(session, hello);
  Encode(MainObjectId(), hello);
  Encode(o.max_message_bytes, hello);
  const int64_t beat_ns =
      o.heartbeat_timeout == absl::InfiniteDuration()
          ? 0
          : std::max<int64_t>(1, absl::ToInt64Nanoseconds(o.heartbeat_timeout) / 6);
  Encode(beat_ns, hello);
  Encode(o.initializer, hello);
  // Sent without blocking: a hello with a large initializer goes by rendezvous, and a rank
  // that is not serving must cost the handshake timeout, not a send that never returns.
  auto hello_bytes = std::make_shared<EncodeBuffer>(std::move(hello));
  std::vector<MPI_Request> hello_reqs(o.workers.size(), MPI_REQUEST_NULL);
  absl::Status sent;
  for (size_t i = 0; i < o.workers.size() && sent.ok(); ++i) {
    sent = MpiStatus(MPI_Isend(hello_bytes->bytes().data(), static_cast<int>(hello_bytes->size()),
                               MPI_BYTE, o.workers[i], kHello, o.comm, &hello_reqs[i]),
                     "MPI_Isend of the handshake");
  }
  // Whatever happens below, a hello still being sent keeps its buffer: on failure the requests
  // are let go and the buffer kept for the life of the process.
  auto settle_hellos = [&](bool all_answered) {
    if (all_answered) {
      (void)MPI_Waitall(static_cast<int>(hello_reqs.size()), hello_reqs.data(),
                        MPI_STATUSES_IGNORE);
      return;
    }
    for (MPI_Request& r : hello_reqs) {
      if (r != MPI_REQUEST_NULL) (void)MPI_Request_free(&r);
    }
    // A rank that did not answer may still be busy (a slow initializer): the communicator is
    // not freed or disconnected under it (Release), and its late reply is dropped as stale.
    handshake_incomplete = true;
    MutexLock lock(&g_abandoned_mu);
    Abandoned().push_back(hello_bytes);
  };
  if (!sent.ok()) {
    settle_hellos(false);
    return sent;
  }
  absl::Status answered = ReadHandshakeReplies(session);
  settle_hellos(answered.ok() || absl::IsFailedPrecondition(answered));
  return answered;
}

absl::Status Engine::State::ReadHandshakeReplies(uint64_t session) {
  const Deadline deadline = Deadline::After(o.handshake_timeout);
  const std::string mine = MainObjectId();
  absl::Status refused;
  for (int r : o.workers) {
    WorkerInfo info;
    for (;;) {
      MPI_Message msg;
      MPI_Status st;
      // Any tag: a leftover of an earlier executor (a late reply, an answer to a task it gave
      // up on) is taken and dropped here, so that it cannot hold up or pass for this reply.
      MPROC_ASSIGN_OR_RETURN(bool found, ProbeUntil(o.comm, r, MPI_ANY_TAG, deadline, &msg, &st));
      if (!found) {
        return absl::DeadlineExceededError(
            absl::StrCat("MpiExecutor: rank ", r, " did not answer the handshake within ",
                         absl::FormatDuration(o.handshake_timeout),
                         " (is it serving? every worker rank must call MpiInit, or CreateOnComm)"));
      }
      Received got;
      MPROC_RETURN_IF_ERROR(ReceiveMatched(&msg, st, 1 << 16, buf, &got));
      if (got.tag == kWrongVersion) {
        uint64_t echoed = 0;
        uint32_t theirs = 0;
        int64_t pid = 0;
        DecodeReader in(AsBytes(buf));
        if (got.too_big || !Codec<uint64_t>::Decode(in, echoed) ||
            !Codec<uint32_t>::Decode(in, theirs) || !Codec<std::string>::Decode(in, info.host) ||
            !Codec<int64_t>::Decode(in, pid)) {
          return absl::InternalError(absl::StrCat(
              "MpiExecutor: rank ", r, " refused the handshake with a malformed message"));
        }
        if (echoed != session) continue;  // stale
        info.rank = r;
        info.pid = static_cast<pid_t>(pid);
        if (refused.ok()) {
          refused = absl::FailedPreconditionError(absl::StrCat(
              "MpiExecutor: rank ", r, " (host ", info.host, ", pid ", info.pid,
              ") speaks MpiExecutor wire version ", theirs, ", this program ", kWireVersion,
              ": every rank must run the same build of the program"));
        }
        break;
      }
      if (got.tag != kReady) continue;  // stale: an answer to an earlier executor's task
      bool same = false;
      uint64_t echoed = 0;
      int64_t pid = 0;
      DecodeReader in(AsBytes(buf));
      if (got.too_big || !Codec<uint64_t>::Decode(in, echoed) || !Codec<bool>::Decode(in, same) ||
          !Codec<std::string>::Decode(in, info.object) ||
          !Codec<std::string>::Decode(in, info.host) || !Codec<int64_t>::Decode(in, pid) ||
          !Codec<bool>::Decode(in, info.beats) ||
          !Codec<std::string>::Decode(in, info.init_failure)) {
        return absl::InternalError(absl::StrCat("MpiExecutor: rank ", r,
                                                " answered the handshake with a malformed "
                                                "message"));
      }
      if (echoed != session) continue;  // stale: a late reply to an earlier handshake
      info.rank = r;
      info.pid = static_cast<pid_t>(pid);
      if (!same && refused.ok()) {
        refused = absl::FailedPreconditionError(absl::StrCat(
            "MpiExecutor: rank ", r, " (host ", info.host, ", pid ", info.pid,
            ") runs a different program (", info.object, ") from this one (", mine,
            "): tasks name functions by their place in the program, so every rank must run "
            "the same binary"));
      }
      break;
    }
    infos.push_back(std::move(info));
  }
  return refused;
}

// Hands queued tasks to the ranks, least loaded first: every rank gets one before any gets a
// second (a rank holding two while another idles would run them one after the other).
bool Engine::State::Dispatch() {
  bool any = false;
  // Polled on every turn of the engine's loop: nothing queued costs no lock.
  if (queued.load(std::memory_order_acquire) == 0) return false;
  for (size_t level = 1; level <= static_cast<size_t>(o.tasks_per_rank); ++level) {
    for (Rank& rk : ranks) {
      if (rk.lost || rk.held.size() >= level) continue;
      Pending p;
      uint64_t id = 0;
      {
        MutexLock lock(&mu);
        while (!order.empty()) {
          auto it = pending.find(order.front());
          order.pop_front();
          queued.store(order.size(), std::memory_order_relaxed);
          if (it == pending.end()) continue;  // cancelled
          id = it->first;
          p = std::move(it->second);
          pending.erase(it);
          break;
        }
      }
      if (id == 0) return any;
      if (rk.held.empty()) rk.last_heard_ns = rk.front_since_ns = MonotonicNowNs();
      Out& out = rk.held.emplace_back();
      out.id = id;
      out.done = std::move(p.done);
      out.keepalive = std::move(p.keepalive);
      out.bytes = std::move(p.task);
      const int rc = MPI_Isend(out.bytes.bytes().data(), static_cast<int>(out.bytes.size()),
                               MPI_BYTE, rk.rank, kTask, o.comm, &out.req);
      ++out_count;
      any = true;
      if (rc != MPI_SUCCESS) {
        out.req = MPI_REQUEST_NULL;
        FailEverything(MpiStatus(rc, "MPI_Isend of a task"));
        return true;
      }
    }
  }
  return any;
}

absl::StatusOr<bool> Engine::State::CompleteSends() {
  reqs.clear();
  req_owner.clear();
  req_rank.clear();
  for (Rank& rk : ranks) {
    for (Out& out : rk.held) {
      if (out.req != MPI_REQUEST_NULL) {
        reqs.push_back(out.req);
        req_owner.push_back(&out);
        req_rank.push_back(&rk);
      }
    }
  }
  if (reqs.empty()) return false;
  int n = 0;
  done_idx.resize(reqs.size());
  const int rc = MPI_Testsome(static_cast<int>(reqs.size()), reqs.data(), &n, done_idx.data(),
                              MPI_STATUSES_IGNORE);
  // MPI sets each completed request to MPI_REQUEST_NULL, also when it reports an error: the
  // owners take the handles back whatever the outcome, so none is freed twice.
  for (size_t k = 0; k < reqs.size(); ++k) req_owner[k]->req = reqs[k];
  MPROC_RETURN_IF_ERROR(MpiStatus(rc, "MPI_Testsome"));
  if (n == MPI_UNDEFINED || n == 0) return false;
  const int64_t now = MonotonicNowNs();
  for (int k = 0; k < n; ++k) {
    const size_t i = static_cast<size_t>(done_idx[static_cast<size_t>(k)]);
    Out* out = req_owner[i];
    out->bytes = EncodeBuffer();
    out->keepalive.reset();
    // The send of the task its worker runs now completing means the worker is receiving it
    // (a large one takes a while to arrive, before the worker can beat for it): heard from.
    if (&req_rank[i]->held.front() == out) req_rank[i]->last_heard_ns = now;
  }
  return true;
}

absl::StatusOr<bool> Engine::State::TakeAnswers() {
  bool any = false;
  // A failure message is small whatever the limit.
  const uint64_t limit = std::max<uint64_t>(o.max_message_bytes, 1 << 16);
  for (;;) {
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    MPROC_RETURN_IF_ERROR(MpiStatus(
        MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, o.comm, &flag, &msg, &st), "MPI_Improbe"));
    if (!flag) return any;
    any = true;
    Received got;
    MPROC_RETURN_IF_ERROR(ReceiveMatched(&msg, st, limit, buf, &got));
    auto where = by_rank.find(got.source);
    if (where == by_rank.end()) {
      return absl::InternalError(
          absl::StrCat("MpiExecutor: a message from rank ", got.source, ", not a worker"));
    }
    Rank& from = ranks[where->second];
    from.last_heard_ns = MonotonicNowNs();
    if (got.tag == kBeat) continue;
    if (got.tag == kReady) continue;  // a late reply to an earlier executor's handshake
    if (got.tag != kResult && got.tag != kFailed) {
      return absl::InternalError(absl::StrCat("MpiExecutor: rank ", got.source,
                                              " sent a message with the unexpected tag ", got.tag));
    }
    DecodeReader in(AsBytes(buf));
    uint64_t id = 0;
    const bool has_id = !got.too_big && Codec<uint64_t>::Decode(in, id);
    if (has_id && id < first_id) continue;  // an earlier executor's task, given up on
    Rank& rk = from;
    if (rk.held.empty()) {
      return absl::InternalError(absl::StrCat("MpiExecutor: rank ", got.source,
                                              " answered when no answer from it was due"));
    }
    Out out = std::move(rk.held.front());
    rk.held.pop_front();
    --out_count;
    rk.front_since_ns = rk.last_heard_ns;
    if (out.req != MPI_REQUEST_NULL) {
      // Answered, so received: the send completes at once.
      (void)MPI_Wait(&out.req, MPI_STATUS_IGNORE);
    }
    out.bytes = EncodeBuffer();
    out.keepalive.reset();
    absl::Status bad;
    if (got.too_big) {
      // The worker checks its answers against the limit: this one broke the protocol, but it
      // was consumed whole, so the answers that follow are still in step.
      if (out.done) {
        out.done(absl::ResourceExhaustedError(
                     absl::StrCat("MpiExecutor: the answer from rank ", got.source, " is ",
                                  got.size, " bytes, above the limit of ", o.max_message_bytes)),
                 {}, {});
      }
      continue;
    }
    if (!has_id || id != out.id) {
      bad = absl::InternalError(absl::StrCat("MpiExecutor: rank ", got.source, " answered task ",
                                             id, " when task ", out.id, " was due"));
    } else if (got.tag == kResult) {
      if (out.done) out.done(absl::OkStatus(), AsBytes(buf, in.offset()), {});
      continue;
    } else {
      int32_t code = 0;
      std::string message;
      if (!Codec<int32_t>::Decode(in, code) || !Codec<std::string>::Decode(in, message) ||
          code <= 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
        bad = absl::InternalError(
            absl::StrCat("MpiExecutor: rank ", got.source, " sent a malformed failure"));
      } else {
        if (out.done) out.done(absl::Status(static_cast<absl::StatusCode>(code), message), {}, {});
        continue;
      }
    }
    // Out of step with this rank: its task fails with the reason, and the caller breaks the
    // executor.
    if (out.done)
      out.done(absl::AbortedError(absl::StrCat("BrokenExecutor: ", bad.message())), {}, {});
    return bad;
  }
}

// Breaks the executor: every task not yet sent, and every task a worker holds, fails with
// ABORTED "BrokenExecutor: ..."; later Submits fail the same. The tasks sent stay held
// (their buffers alive: MPI may still be reading them) until their answers come or the drain
// limit passes (GiveUp).
void Engine::State::FailEverything(const absl::Status& why) {
  const absl::Status broken_status =
      absl::AbortedError(absl::StrCat("BrokenExecutor: ", why.message()));
  std::vector<Pending> dropped;
  {
    MutexLock lock(&mu);
    if (broken.ok()) broken = broken_status;
    for (auto& [id, p] : pending) dropped.push_back(std::move(p));
    pending.clear();
    order.clear();
    queued.store(0, std::memory_order_relaxed);
  }
  if (!failed) {
    failed = true;
    drain_deadline_ns = MonotonicNowNs() + absl::ToInt64Nanoseconds(kDrainLimit);
  }
  for (Rank& rk : ranks) {
    for (Out& out : rk.held) {
      if (!out.done) continue;
      TaskDone done = std::move(out.done);
      out.done = nullptr;
      done(broken_status, {}, {});
    }
  }
  for (Pending& p : dropped) p.done(broken_status, {}, {});
}

// A worker that holds tasks must be heard from: a silent one (no answer, no heartbeat for
// heartbeat_timeout; or its current task past task_timeout) is lost, as a dead process pool
// worker is: the executor breaks, naming it.
void Engine::State::CheckLiveness() {
  const int64_t now = MonotonicNowNs();
  for (Rank& rk : ranks) {
    if (rk.lost || rk.held.empty()) continue;
    if (rk.info->beats && o.heartbeat_timeout != absl::InfiniteDuration() &&
        now - rk.last_heard_ns > absl::ToInt64Nanoseconds(o.heartbeat_timeout)) {
      LoseRank(rk, absl::StrCat("sent no heartbeat for ", absl::FormatDuration(o.heartbeat_timeout),
                                " while it held a task (dead, or hung)"));
    } else if (o.task_timeout != absl::InfiniteDuration() &&
               now - rk.front_since_ns > absl::ToInt64Nanoseconds(o.task_timeout)) {
      LoseRank(rk, absl::StrCat("did not answer a task within the task timeout of ",
                                absl::FormatDuration(o.task_timeout)));
    }
  }
}

void Engine::State::LoseRank(Rank& rk, const std::string& why) {
  FailEverything(absl::AbortedError(
      absl::StrCat("rank ", rk.rank, " (host ", rk.info->host, ", pid ", rk.info->pid, ") ", why)));
  rk.lost = true;
  // Its answers will not come, and with a rank gone the communicator cannot be used again
  // (nor freed): there is nothing to keep in step, so the other ranks' answers are not waited
  // for either.
  GiveUp();
}

// What `rk` holds is never freed (MPI may still read a send buffer); its Futures fail.
void Engine::State::Abandon(Rank& rk) {
  while (!rk.held.empty()) {
    auto out = std::make_shared<Out>(std::move(rk.held.front()));
    rk.held.pop_front();
    --out_count;
    if (out->done) {
      TaskDone done = std::move(out->done);
      out->done = nullptr;
      done(absl::AbortedError("BrokenExecutor: its worker never answered"), {}, {});
    }
    MutexLock lock(&g_abandoned_mu);
    Abandoned().push_back(std::move(out));
  }
}

// The answers a broken engine waited for did not all come: what it still holds is never
// freed (MPI may read it), and a kept communicator (launch a's) is no longer trusted.
void Engine::State::GiveUp() {
  for (Rank& rk : ranks) Abandon(rk);
  out_count = 0;
  gave_up = true;
  g_unrecoverable.store(true);
  if (o.comm_end == CommEnd::kKeep) g_kept_comm_unusable.store(true);
}

void Engine::State::Release() {
  const int tag = o.exit_workers ? kExit : kBye;
  bool any_lost = false;
  for (Rank& rk : ranks) {
    if (rk.lost || gave_up || handshake_incomplete) {
      // Maybe dead, maybe alive (hung, or slow): told without waiting, since a blocking send
      // to a dead peer may never return, while a live one (a CreateOnComm rank) must still
      // hear that the executor is done.
      any_lost = true;
      // The communicator is left as it is (below): a kExit says so, or a spawned worker
      // would wait for the root's disconnect for ever.
      static const std::byte kAlone[1] = {std::byte{kExitAlone}};
      MPI_Request r = MPI_REQUEST_NULL;
      if (MPI_Isend(tag == kExit ? kAlone : nullptr, tag == kExit ? 1 : 0, MPI_BYTE, rk.rank,
                    tag, o.comm, &r) == MPI_SUCCESS) {
        (void)MPI_Request_free(&r);
      }
      continue;
    }
    (void)MPI_Send(nullptr, 0, MPI_BYTE, rk.rank, tag, o.comm);
  }
  // Disconnecting (or freeing) waits on every rank of the group, one that is gone or out of
  // step too: the communicator is left as it is instead.
  if (any_lost) return;
  if (o.comm_end == CommEnd::kDisconnect) {
    (void)MPI_Comm_disconnect(&o.comm);
  } else if (o.comm_end == CommEnd::kFree) {
    (void)MPI_Comm_free(&o.comm);
  }
}

bool Engine::State::Turn() {
  if (released) return false;
  // Every 256 turns with answers due (a few hundred microseconds at most), look for silent
  // workers.
  if ((++turns & 255) == 0 && out_count > 0 && !failed) CheckLiveness();
  bool progressed = false;
  if (!failed) progressed |= Dispatch();
  absl::StatusOr<bool> sent = CompleteSends();
  absl::StatusOr<bool> answered = sent.ok() ? TakeAnswers() : sent;
  if (!sent.ok() || !answered.ok()) {
    FailEverything(!sent.ok() ? sent.status() : answered.status());
    // MPI itself failing again and again: the answers will not come.
    if (++errors > 100) GiveUp();
  } else {
    progressed |= *sent || *answered;
  }
  if (failed && out_count > 0 && MonotonicNowNs() > drain_deadline_ns) GiveUp();
  outstanding.store(out_count, std::memory_order_release);
  return progressed;
}

// A parked engine thread looks again this often without being rung: a task submitted while
// it is parked, with no waiter to drive it, waits at most this long to be sent.
constexpr int kParkMs = 1;

void Engine::State::HandOver(pool_internal::DeferredCallbacks& callbacks) {
  bool wake = false;
  {
    MutexLock lock(&mu);
    for (auto& f : callbacks) deferred.push_back(std::move(f));
    has_deferred.store(true, std::memory_order_release);
    wake = parked || sleeping;
    sleeping = false;
  }
  callbacks.clear();
  if (wake) Ring();
}

void Engine::State::LeaveDrive(pool_internal::DeferredCallbacks& callbacks) {
  if (!callbacks.empty()) HandOver(callbacks);
  drivers.store(0, std::memory_order_release);
  // What the waiter leaves behind (tasks out or queued) goes back to the engine thread, at
  // once.
  if (outstanding.load(std::memory_order_acquire) == 0 &&
      queued.load(std::memory_order_acquire) == 0) {
    return;
  }
  bool wake = false;
  {
    MutexLock lock(&mu);
    wake = parked || sleeping;
    sleeping = false;
  }
  if (wake) Ring();
}

void Engine::State::RunDeferred() {
  if (!has_deferred.load(std::memory_order_acquire)) return;
  pool_internal::DeferredCallbacks run;
  {
    MutexLock lock(&mu);
    run.swap(deferred);
    has_deferred.store(false, std::memory_order_relaxed);
  }
  for (auto& f : run) pool_internal::RunCallback(f);
}

void Engine::State::Park() {
  {
    MutexLock lock(&mu);
    if (drivers.load(std::memory_order_acquire) == 0 || !deferred.empty()) return;
    parked = true;
  }
  pollfd p{bell.get(), POLLIN, 0};
  (void)::poll(&p, 1, kParkMs);
  uint64_t v = 0;
  (void)!::read(bell.get(), &v, sizeof(v));
  MutexLock lock(&mu);
  parked = false;
}

void Engine::State::Run() {
  int idle = 0;
  for (;;) {
    RunDeferred();
    // A waiter drives (Engine::Drive): stay out of its way, so that it runs every turn on its
    // own thread, with no hand-off to this one.
    if (drivers.load(std::memory_order_acquire) > 0) {
      Park();
      idle = 0;
      continue;
    }
    bool progressed;
    {
      MutexLock turn(&turn_mu);
      progressed = Turn();
    }
    if (progressed) {
      idle = 0;
      continue;
    }
    if (outstanding.load(std::memory_order_acquire) > 0) {
      PausePoll(idle);  // answers are due
      continue;
    }
    // Nothing due: the next task usually follows within microseconds (a caller waiting on
    // each result submits the next at once), so look for news for one spin budget before
    // sleeping (base/spin.h).
    const uint64_t seen = news.load(std::memory_order_acquire);
    // A waiter may be driving, or its turns may have sent tasks meanwhile and left them out
    // (Drive rings only a parked or sleeping thread): they are this thread's again.
    auto more = [&] {
      return drivers.load(std::memory_order_acquire) > 0 ||
             outstanding.load(std::memory_order_acquire) > 0 ||
             has_deferred.load(std::memory_order_acquire);
    };
    {
      MutexLock lock(&mu);
      if (!order.empty() || more()) continue;
      if (closed) break;
    }
    if (SpinUntil([&] { return news.load(std::memory_order_acquire) != seen || more(); })) {
      continue;
    }
    {
      MutexLock lock(&mu);
      if (!order.empty() || more()) continue;
      if (closed) break;
      sleeping = true;
    }
    pollfd p{bell.get(), POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    uint64_t v = 0;
    (void)!::read(bell.get(), &v, sizeof(v));
    MutexLock lock(&mu);
    sleeping = false;
  }
  {
    MutexLock turn(&turn_mu);
    Release();
    released = true;
  }
  g_live_engines.fetch_sub(1);
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Start(EngineOptions options) {
  std::unique_ptr<Engine> e(new Engine());
  e->st_ = std::make_unique<State>();
  State& s = *e->st_;
  s.o = std::move(options);
  // Every failure from here on releases the workers (they would serve for ever otherwise) and
  // the communicator.
  absl::Status st = CheckOptions(s.o);
  if (st.ok() && s.o.workers.empty()) st = absl::InvalidArgumentError("MpiExecutor: no workers");
  if (st.ok()) {
    const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
      st = ErrnoToStatus(errno, "eventfd");
    } else {
      s.bell = UniqueFd(efd);
    }
  }
  if (st.ok()) {
    for (int r : s.o.workers) {
      s.by_rank[r] = s.ranks.size();
      s.ranks.emplace_back().rank = r;
    }
    // The handshake runs on the calling thread, before the engine thread exists: one thread
    // makes MPI calls at a time.
    st = s.Handshake();
  }
  if (st.ok()) {
    for (size_t i = 0; i < s.ranks.size(); ++i) s.ranks[i].info = &s.infos[i];
  }
  if (!st.ok()) {
    s.Release();
    return st;
  }
  for (const WorkerInfo& w : s.infos) {
    if (w.init_failure.empty()) continue;
    MutexLock lock(&s.mu);
    s.broken = absl::AbortedError(absl::StrCat("MpiExecutor initializer failed on rank ", w.rank,
                                               " (host ", w.host, "): ", w.init_failure));
    break;
  }
  s.first_id = g_next_id.load();
  g_live_engines.fetch_add(1);
  Engine* raw = e.get();
  s.thread = std::thread([raw] {
    t_engine_thread_of = raw;
    raw->st_->Run();
    if (!raw->st_->frees_itself) return;
    std::function<void()> after = std::move(raw->st_->after_orphan);
    delete raw;
    if (after) after();
    pool_internal::OrphanDone();
  });
  return e;
}

bool Engine::OnEngineThread() const { return t_engine_thread_of == this; }

void Engine::Drive(const std::function<bool()>& ready, const Deadline& deadline) {
  // On the engine thread (a done callback), or inside a turn: the turn must end first.
  if (t_engine_thread_of != nullptr) return;
  State& s = *st_;
  // One waiter drives; the others wait as before (its turns complete their futures too, and
  // the engine thread takes over when it leaves), so k waiters keep one CPU busy, not k.
  int none = 0;
  if (!s.drivers.compare_exchange_strong(none, 1, std::memory_order_acq_rel)) return;
  // A sleeping engine thread is left asleep: this thread runs the turns.
  pool_internal::DeferredCallbacks callbacks;
  int idle = 0;
  while (!ready() && !deadline.Expired()) {
    bool progressed = false;
    if (s.turn_mu.TryLock()) {
      // What runs in the turn sees the engine's thread (OnEngineThread: an argument's
      // destructor that drops the executor orphans it); done callbacks are set aside for the
      // engine thread.
      t_engine_thread_of = this;
      pool_internal::t_defer_callbacks = &callbacks;
      try {
        progressed = s.Turn();
      } catch (...) {
        // (bad_alloc, a throwing decoder): the engine must not stay locked and parked.
        pool_internal::t_defer_callbacks = nullptr;
        t_engine_thread_of = nullptr;
        s.turn_mu.Unlock();
        s.LeaveDrive(callbacks);
        throw;
      }
      pool_internal::t_defer_callbacks = nullptr;
      t_engine_thread_of = nullptr;
      s.turn_mu.Unlock();
    }
    if (!callbacks.empty()) s.HandOver(callbacks);
    if (progressed) {
      idle = 0;
    } else {
      PausePoll(idle);
    }
  }
  s.LeaveDrive(callbacks);
}

void Engine::Orphan(std::unique_ptr<Engine> engine, std::function<void()> after) {
  engine->Close();
  pool_internal::AdoptOrphan();
  State& s = *engine->st_;
  s.after_orphan = std::move(after);
  s.frees_itself = true;
  s.thread.detach();
  (void)engine.release();  // the engine thread's now
}

Engine::~Engine() {
  CutLink();  // a Future's Cancel racing with this end reaches nothing from here on
  Close();
  (void)Join();
}

absl::StatusOr<uint64_t> Engine::Submit(EncodeBuffer task, TaskDone done,
                                        std::shared_ptr<void> keepalive) {
  State& s = *st_;
  if (!task.fds().empty()) {
    return absl::InvalidArgumentError(
        "MpiExecutor: a task's arguments carry file descriptors, which cannot cross ranks");
  }
  if (task.size() + 16 > s.o.max_message_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("MpiExecutor: the task is ", task.size(),
                                                     " bytes, above the limit of ",
                                                     s.o.max_message_bytes));
  }
  bool wake = false;
  uint64_t id = 0;
  {
    MutexLock lock(&s.mu);
    if (!s.broken.ok()) return s.broken;
    if (s.closed) return absl::FailedPreconditionError("MpiExecutor: submitted after Shutdown");
    id = g_next_id.fetch_add(1);
    EncodeBuffer framed(task.size() + 16);
    Encode(id, framed);
    framed.Append(task.bytes().data(), task.size());
    s.pending.emplace(id, State::Pending{std::move(framed), std::move(done), std::move(keepalive)});
    s.order.push_back(id);
    s.queued.store(s.order.size(), std::memory_order_release);
    wake = s.sleeping;
    s.sleeping = false;
  }
  s.news.fetch_add(1, std::memory_order_release);
  if (wake) s.Ring();
  return id;
}

bool Engine::Cancel(uint64_t id, pool_internal::CancelledTask* removed) {
  MutexLock lock(&st_->mu);
  auto it = st_->pending.find(id);
  if (it == st_->pending.end()) return false;
  // Handed out, not destroyed here: they hold the caller's arguments (CancelledTask).
  removed->task = std::move(it->second.task);
  removed->done = std::move(it->second.done);
  removed->keepalive = std::move(it->second.keepalive);
  st_->pending.erase(it);
  return true;
}

void Engine::CancelPending() {
  std::vector<State::Pending> dropped;
  {
    MutexLock lock(&st_->mu);
    for (auto& [id, p] : st_->pending) dropped.push_back(std::move(p));
    st_->pending.clear();
    st_->order.clear();
    st_->queued.store(0, std::memory_order_relaxed);
  }
  for (State::Pending& p : dropped) p.done(absl::CancelledError("future cancelled"), {}, {});
}

void Engine::Close() {
  bool wake = false;
  {
    MutexLock lock(&st_->mu);
    st_->closed = true;
    wake = st_->sleeping || st_->parked;
    st_->sleeping = false;
  }
  st_->news.fetch_add(1, std::memory_order_release);
  if (wake) st_->Ring();
}

absl::Status Engine::Join() {
  State& s = *st_;
  if (OnEngineThread()) {
    return absl::FailedPreconditionError(
        "MpiExecutor: Shutdown(wait=true) from a done callback cannot wait for its own thread");
  }
  MutexLock lock(&s.join_mu);
  if (!s.joined && s.thread.joinable()) s.thread.join();
  s.joined = true;
  return absl::OkStatus();
}

const std::vector<WorkerInfo>& Engine::workers() const { return st_->infos; }

// ---------------------------------------------------------------------------------------------
// Worker.

namespace {

absl::Status SendFailure(MPI_Comm comm, int root, uint64_t id, const absl::Status& why) {
  EncodeBuffer b;
  Encode(id, b);
  Encode(static_cast<int32_t>(why.code()), b);
  Encode(std::string(why.message()), b);
  return MpiStatus(SendBytes(b.bytes(), root, kFailed, comm), "MPI_Send of a failure");
}

}  // namespace

namespace {

// A worker's heartbeat: a thread that sends the root kBeat every `interval` while the worker
// runs a task (so a long task is not taken for a dead rank). Needs MPI_THREAD_MULTIPLE.
class Heartbeat {
 public:
  Heartbeat(MPI_Comm comm, int root, absl::Duration interval)
      : comm_(comm), root_(root), interval_(interval), thread_([this] { Run(); }) {}
  ~Heartbeat() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.SignalAll();
    thread_.join();
  }
  // Busy(false) returns once no heartbeat is being sent: what the caller sends next comes
  // after every heartbeat.
  void Busy(bool busy) {
    MutexLock lock(&send_mu_);
    busy_.store(busy, std::memory_order_relaxed);
  }

 private:
  void Run() {
    MutexLock lock(&mu_);
    for (;;) {
      cv_.WaitFor(lock, interval_, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; });
      if (stop_) return;
      lock.Unlock();
      {
        MutexLock send(&send_mu_);
        if (busy_.load(std::memory_order_relaxed)) {
          (void)MPI_Send(nullptr, 0, MPI_BYTE, root_, kBeat, comm_);
        }
      }
      lock.Lock();
    }
  }
  const MPI_Comm comm_;
  const int root_;
  const absl::Duration interval_;
  Mutex mu_;
  CondVar cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  Mutex send_mu_;  // held while a heartbeat is sent
  std::atomic<bool> busy_{false};
  std::thread thread_;  // last: started once the rest is set
};

}  // namespace

// Runs an executor's initializer here; why it failed, or "" (it ran, or there is none).
std::string RunInitializer(const std::string& init) {
  if (init.empty()) return "";
  DecodeReader in(init);
  pool_internal::InitEntry entry = nullptr;
  if (!Codec<pool_internal::InitEntry>::Decode(in, entry) || entry == nullptr) {
    return absl::StrCat("the initializer did not decode: ", in.status().message());
  }
  try {
    entry(in);
  } catch (...) {
    RemoteError e = CaptureCurrentException("MpiExecutor worker");
    return absl::StrCat(e.type_name, ": ", e.what);
  }
  std::fflush(stdout);
  return "";
}

absl::Status Serve(MPI_Comm comm, int root, bool one_executor, bool* root_disconnects) {
  int provided = MPI_THREAD_SINGLE;
  (void)MPI_Query_thread(&provided);
  std::unique_ptr<Heartbeat> beat;  // for the executor being served
  std::vector<std::byte> buf;
  EncodeBuffer out;
  // Until a kHello sets the executor's: a hello carries the initializer, which the root
  // checked against its own limit (the root is trusted; a task is not read before a hello).
  constexpr uint64_t kBeforeHello = INT_MAX;
  uint64_t limit = kBeforeHello;
  const std::string mine = MainObjectId();
  char host[MPI_MAX_PROCESSOR_NAME] = {};
  int host_len = 0;
  (void)MPI_Get_processor_name(host, &host_len);
  for (;;) {
    MPI_Message msg;
    MPI_Status st;
    MPROC_RETURN_IF_ERROR(NextMessage(comm, root, /*serving=*/limit != kBeforeHello, &msg, &st));
    Received got;
    MPROC_RETURN_IF_ERROR(ReceiveMatched(&msg, st, limit, buf, &got));
    DecodeReader in(AsBytes(buf));
    switch (got.tag) {
      case kExit:
        if (root_disconnects != nullptr) {
          *root_disconnects = got.too_big || buf.empty() || buf[0] != std::byte{kExitAlone};
        }
        return absl::OkStatus();
      case kBye:
        limit = kBeforeHello;
        beat.reset();
        if (one_executor) return absl::OkStatus();
        continue;
      case kHello: {
        uint32_t version = 0;
        uint64_t session = 0;
        std::string theirs;
        uint64_t their_limit = 0;
        int64_t beat_ns = 0;
        std::string init;
        if (got.too_big || !Codec<uint32_t>::Decode(in, version) ||
            !Codec<uint64_t>::Decode(in, session)) {
          return absl::InternalError("MpiExecutor worker: a malformed handshake from the root");
        }
        if (version != WorkerWireVersion()) {
          // Another build's root: say so (in the form every version keeps) and wait for the
          // next hello, rather than read the rest in a layout it may not have.
          EncodeBuffer b;
          Encode(session, b);
          Encode(WorkerWireVersion(), b);
          Encode(std::string(host, static_cast<size_t>(host_len)), b);
          Encode(static_cast<int64_t>(::getpid()), b);
          MPROC_RETURN_IF_ERROR(MpiStatus(SendBytes(b.bytes(), root, kWrongVersion, comm),
                                          "MPI_Send of the version refusal"));
          continue;
        }
        if (!Codec<std::string>::Decode(in, theirs) ||
            !Codec<uint64_t>::Decode(in, their_limit) || !Codec<int64_t>::Decode(in, beat_ns) ||
            !Codec<std::string>::Decode(in, init)) {
          return absl::InternalError("MpiExecutor worker: a malformed handshake from the root");
        }
        limit = their_limit;
        beat.reset();
        const bool beats = beat_ns > 0 && provided >= MPI_THREAD_MULTIPLE;
        EncodeBuffer b;
        Encode(session, b);
        Encode(theirs == mine, b);
        Encode(mine, b);
        Encode(std::string(host, static_cast<size_t>(host_len)), b);
        Encode(static_cast<int64_t>(::getpid()), b);
        Encode(beats, b);
        std::string init_failure = theirs == mine ? RunInitializer(init) : std::string();
        if (init_failure.size() > 4096) init_failure.resize(4096);  // within the reply's limit
        Encode(init_failure, b);
        MPROC_RETURN_IF_ERROR(
            MpiStatus(SendBytes(b.bytes(), root, kReady, comm), "MPI_Send of the handshake"));
        if (beats) beat = std::make_unique<Heartbeat>(comm, root, absl::Nanoseconds(beat_ns));
        continue;
      }
      case kTask:
        break;
      default:
        return absl::InternalError(
            absl::StrCat("MpiExecutor worker: a message with an unknown tag ", got.tag));
    }
    // From here to the answer this rank is at work on a task: its heartbeat runs.
    if (beat) beat->Busy(true);
    uint64_t id = 0;
    if (got.too_big) {
      // The root checks sizes before sending; a task it let through that is too big here
      // cannot be answered by id.
      return absl::InternalError(absl::StrCat("MpiExecutor worker: a task of ", got.size,
                                              " bytes, above the limit of ", limit));
    }
    if (!Codec<uint64_t>::Decode(in, id)) {
      return absl::InternalError("MpiExecutor worker: a task without an id");
    }
    TaskEntry entry = nullptr;
    if (!Codec<TaskEntry>::Decode(in, entry) || entry == nullptr) {
      if (beat) beat->Busy(false);
      MPROC_RETURN_IF_ERROR(SendFailure(
          comm, root, id,
          absl::InvalidArgumentError(absl::StrCat("MpiExecutor worker: the task's entry did not "
                                                  "decode: ",
                                                  in.status().message()))));
      continue;
    }
    out.Clear();
    Encode(id, out);
    entry(in, out);
    // What the task printed is written before its answer is sent.
    std::fflush(stdout);
    // Every heartbeat goes before the answer (none follows it onto a communicator about to
    // be freed).
    if (beat) beat->Busy(false);
    if (!out.fds().empty()) {
      MPROC_RETURN_IF_ERROR(SendFailure(
          comm, root, id,
          absl::InvalidArgumentError("MpiExecutor: a task's result carries file descriptors, "
                                     "which cannot cross ranks")));
    } else if (out.size() > limit) {
      MPROC_RETURN_IF_ERROR(SendFailure(comm, root, id,
                                        absl::ResourceExhaustedError(absl::StrCat(
                                            "MpiExecutor: the task's result is ", out.size(),
                                            " bytes, above the limit of ", limit))));
    } else {
      MPROC_RETURN_IF_ERROR(
          MpiStatus(SendBytes(out.bytes(), root, kResult, comm), "MPI_Send of a result"));
    }
  }
}

}  // namespace mproc::mpi_internal
