#include "pool/internal/worker_start.h"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <span>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "base/deadline.h"
#include "base/status.h"
#include "base/syscall.h"
#include "pool/internal/worker.h"
#include "serialize/frame.h"

namespace mproc::pool_internal {

using ipc_internal::RingLink;

std::function<int(UniqueFd)> ForkWorkerBody(const CoreOptions& o) {
  return [init = o.fork_initializer, init_entry = o.init_entry, init_bytes = o.init_bytes,
          init_fds = o.init_fds,
          maxtasks = static_cast<int32_t>(o.maxtasksperchild),
          ignore_sigint = o.cancel_on_sigint](UniqueFd fd) -> int {
    if (ignore_sigint) ::signal(SIGINT, SIG_IGN);  // before the initializer runs
    absl::StatusOr<WorkerChannel> ch = OpenChannel(fd.get());
    if (!ch.ok()) return 1;
    if (init) {
      try {
        init();
      } catch (...) {
        ReportInitFailure(ch->c);
        return 1;
      }
    }
    // A fork worker's copy of the descriptors is its own (fork duplicated them): its decoder
    // takes them as they are, nothing to duplicate.
    std::vector<UniqueFd> fds;
    if (init_fds != nullptr) fds = std::move(*init_fds);
    return WorkerRun(ch->c, init_entry, init_bytes, std::move(fds), maxtasks);
  };
}

namespace {

// Copies of the initializer's descriptors, for one spawn or forkserver worker (each worker's
// decoder takes its own, and Start sends and then closes them).
absl::StatusOr<std::vector<UniqueFd>> DupAll(const std::shared_ptr<std::vector<UniqueFd>>& fds) {
  std::vector<UniqueFd> out;
  if (fds == nullptr) return out;
  for (const UniqueFd& f : *fds) {
    MPROC_ASSIGN_OR_RETURN(UniqueFd dup, DupCloexec(f.get(), "a Pool initializer argument"));
    out.push_back(std::move(dup));
  }
  return out;
}

// The worker's first message: its rings' segment.
absl::Status SendLink(PoolWorker& w) {
  const int seg = w.link->segment().fd();
  return WriteFrame(w.sock.get(), kLink, {}, std::span<const int>(&seg, 1),
                    Deadline::After(absl::Seconds(30)), {}, FdKind::kStreamSocket);
}

// A new worker's channel: its rings (`w.link`), the pool's end of its socket pair (`w.sock`),
// both listed as parent-only, and the worker's end (returned).
absl::StatusOr<UniqueFd> NewChannel(PoolWorker& w) {
  MPROC_ASSIGN_OR_RETURN(w.link, RingLink::Create());
  w.listed_segment = ParentOnlyListing(w.link->segment().fd());
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoToStatus(errno, "socketpair(pool worker)");
  }
  w.sock = ParentOnlyFd(UniqueFd(sv[0]));
  return UniqueFd(sv[1]);
}

// Starts a fork worker: directly (the first ones, from the owner before the pool thread
// exists) or through the zygote (replacements). The pool's ends of its siblings' channels and
// of its own, which fork copies into a direct one, are listed (PoolWorker): fork lets go of
// them in the child (base/parent_only_fd.h); a zygote's children never had them. The worker's
// end is closed here as soon as the worker has it, so that no other fork keeps it long.
absl::StatusOr<PoolWorker> StartForkWorker(const CoreOptions& o, Zygote* zygote) {
  PoolWorker w;
  MPROC_ASSIGN_OR_RETURN(UniqueFd theirs, NewChannel(w));
  if (zygote != nullptr) {
    MPROC_ASSIGN_OR_RETURN(w.proc, zygote->Fork(std::move(theirs), "PoolWorker",
                                                    /*numbered=*/true));
  } else {
    // Any callable may initialise a fork worker.
    int fd = theirs.get();
    w.proc = std::make_unique<Process>(
        [fd, body = ForkWorkerBody(o)]() { return body(UniqueFd(fd)); });
    w.proc->SetStartMethod(StartMethod::kFork).SetName("PoolWorker-" + w.proc->identity());
    MPROC_RETURN_IF_ERROR(w.proc->Start());
    theirs.Reset();
  }
  absl::Status s = SendLink(w);
  if (!s.ok()) {
    (void)w.proc->Kill();
    (void)w.proc->Join();
    return s;
  }
  return w;
}

}  // namespace

// Spawn and forkserver workers go through Process::StartAll, which batches the forkserver ones
// (the server gets every request before it answers the first) and starts spawn ones one by
// one; either way the children get only what they are sent.
absl::StatusOr<std::vector<PoolWorker>> StartWorkers(const CoreOptions& o,
                                                                  Zygote* zygote, int count) {
  std::vector<PoolWorker> ws;
  auto undo = [&](absl::Status why) {
    for (auto& w : ws) {
      if (w.proc == nullptr || w.proc->pid() <= 0) continue;
      (void)w.proc->Kill();
      (void)w.proc->Join();
    }
    return why;
  };
  const StartMethod method = o.start_method.value_or(GetStartMethod());
  if (method == StartMethod::kFork) {
    for (int i = 0; i < count; ++i) {
      absl::StatusOr<PoolWorker> w = StartForkWorker(o, zygote);
      if (!w.ok()) return undo(w.status());
      ws.push_back(*std::move(w));
    }
    return ws;
  }
  if (o.fork_initializer) {
    return absl::FailedPreconditionError(
        "a capturing initializer runs only under the fork start method; pass a function "
        "pointer (and arguments) for spawn and forkserver");
  }
  std::vector<Process*> batch;
  for (int i = 0; i < count; ++i) {
    PoolWorker w;
    absl::StatusOr<UniqueFd> theirs = NewChannel(w);
    if (!theirs.ok()) return undo(theirs.status());
    absl::StatusOr<std::vector<UniqueFd>> init_fds = DupAll(o.init_fds);
    if (!init_fds.ok()) return undo(init_fds.status());
    w.proc = std::make_unique<Process>(WorkerMain, *std::move(theirs), o.init_entry,
                                       o.init_bytes, *std::move(init_fds),
                                       static_cast<int32_t>(o.maxtasksperchild),
                                       o.cancel_on_sigint);
    w.proc->SetStartMethod(method).SetName("PoolWorker-" + w.proc->identity());
    ws.push_back(std::move(w));
    batch.push_back(ws.back().proc.get());
  }
  for (const absl::Status& st : Process::StartAll(batch)) {
    if (!st.ok()) return undo(st);
  }
  for (int i = 0; i < count; ++i) {
    absl::Status s = SendLink(ws[i]);
    if (!s.ok()) return undo(s);
  }
  return ws;
}

absl::StatusOr<PoolWorker> StartWorker(const CoreOptions& o, Zygote* zygote) {
  MPROC_ASSIGN_OR_RETURN(std::vector<PoolWorker> ws, StartWorkers(o, zygote, 1));
  return std::move(ws.front());
}

}  // namespace mproc::pool_internal
