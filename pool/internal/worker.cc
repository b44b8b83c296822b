#include "pool/internal/worker.h"

#include <signal.h>

#include <cstdio>
#include <span>
#include <utility>

#include "absl/time/time.h"
#include "base/deadline.h"
#include "ipc/internal/ring_link.h"
#include "serialize/codec.h"
#include "serialize/frame.h"
#include "serialize/remote_error.h"
#include "spawn/process.h"

namespace mproc::pool_internal {
namespace {

using ipc_internal::RingLink;

// The worker loop: tasks in, results out, until told to stop (or the parent is gone, or the
// task budget is spent).
int WorkerLoop(const Channel& c, int32_t maxtasks) {
  Frame f;
  std::string scratch;
  EncodeBuffer out;
  Incoming in;
  int32_t done = 0;
  for (;;) {
    // The next task usually follows within microseconds: Peek spins briefly before it sleeps.
    absl::StatusOr<RingLink::Next> next = c.link->Peek(c.end, c.sock, Deadline::Infinite());
    if (!next.ok() || !ChannelTake(c, *next, f, scratch, &in).ok()) return 0;
    if (in.kind == kStop) return 0;
    if (in.kind != kTask) return 2;
    DecodeReader r(in.payload, std::move(in.fds));
    uint64_t id = 0;
    TaskEntry entry = nullptr;
    out.Clear();
    if (!Codec<uint64_t>::Decode(r, id) || !Codec<TaskEntry>::Decode(r, entry) ||
        entry == nullptr) {
      return 3;  // a parent that sends garbage: nothing sensible to answer
    }
    Encode(id, out);
    entry(r, out);
    ChannelRelease(c, in);
    // What the task printed is written before its result is sent: a pool that is terminated
    // (or whose owner exits) right after the result loses none of it, unlike CPython's, whose
    // terminated workers drop what sits in their stdout buffers. An empty buffer costs no
    // syscall.
    std::fflush(stdout);
    if (!ChannelSend(c, kResult, {}, out.bytes(), out.fds(), Deadline::Infinite()).ok()) {
      return 0;
    }
    if (maxtasks > 0 && ++done >= maxtasks) return 0;  // retire; the pool starts a fresh one
  }
}

}  // namespace

bool ReportInitFailure(const Channel& c) {
  RemoteError e = CaptureCurrentException(CurrentProcessName());
  EncodeBuffer b;
  Encode(e, b);
  return ChannelSend(c, kInitFailed, {}, b.bytes(), {}, Deadline::After(absl::Seconds(10))).ok();
}

int WorkerRun(const Channel& c, InitEntry init_entry, const std::string& init_bytes,
              std::vector<UniqueFd> init_fds, int32_t maxtasks) {
  // No orphans: a worker ends when the process that owns its pool dies, even in the middle
  // of a long task (an idle worker would also see its socket close). Its parent, for this
  // purpose, is the owner (the requester, not the fork server or the zygote).
  ExitWhenParentExits();
  if (init_entry != nullptr) {
    try {
      DecodeReader r(std::as_bytes(std::span(init_bytes.data(), init_bytes.size())),
                     std::move(init_fds));
      init_entry(r);
    } catch (...) {
      ReportInitFailure(c);
      return 1;
    }
  }
  return WorkerLoop(c, maxtasks);
}

int WorkerMain(UniqueFd sock, InitEntry init_entry, std::string init_bytes,
               std::vector<UniqueFd> init_fds, int32_t maxtasks, bool ignore_sigint) {
  // Interrupt mode: a terminal's Ctrl-C reaches the whole process group; the owner decides.
  if (ignore_sigint) ::signal(SIGINT, SIG_IGN);
  absl::StatusOr<WorkerChannel> ch = OpenChannel(sock.get());
  if (!ch.ok()) return 1;  // the parent is gone, or is not a pool
  return WorkerRun(ch->c, init_entry, init_bytes, std::move(init_fds), maxtasks);
}

}  // namespace mproc::pool_internal
