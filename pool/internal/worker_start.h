// pool/internal/worker_start.h — the parent's side of starting Pool workers: each worker's
// channel (a socket pair and its rings, pool/internal/channel.h), then the process under the
// pool's start method (fork directly or through the zygote; spawn and forkserver through
// Process::StartAll), then the rings' segment as the channel's first frame.
#ifndef MPROC_POOL_INTERNAL_WORKER_START_H_
#define MPROC_POOL_INTERNAL_WORKER_START_H_

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "base/parent_only_fd.h"
#include "base/unique_fd.h"
#include "ipc/internal/ring_link.h"
#include "pool/internal/channel.h"
#include "pool/internal/ledger.h"
#include "pool/internal/pool_core.h"
#include "spawn/process.h"
#include "spawn/zygote.h"

namespace mproc::pool_internal {

// A started worker, as the pool thread holds it.
// Its socket and its rings' segment are kept from every fork child (base/parent_only_fd.h):
// this worker's later siblings, another fork Pool's zygote and workers, a fork Process.
struct PoolWorker {
  PoolWorker() = default;
  PoolWorker(PoolWorker&&) noexcept = default;
  // As the default, but the segment is unlisted before `link` may let it go (the default
  // assigns in declaration order, `link` first).
  PoolWorker& operator=(PoolWorker&& o) noexcept {
    if (this == &o) return *this;
    listed_segment.Reset();
    proc = std::move(o.proc);
    sock = std::move(o.sock);
    link = std::move(o.link);
    listed_segment = std::move(o.listed_segment);
    ledger = std::move(o.ledger);
    return *this;
  }

  std::unique_ptr<Process> proc;
  ParentOnlyFd sock;
  std::shared_ptr<ipc_internal::RingLink> link;  // the channel's rings (this side is end 0)
  ParentOnlyListing listed_segment;  // link's segment; after `link`: unlisted before it closes
  TaskLedger ledger;  // the tasks sent to this worker (pool/internal/ledger.h)
  Channel channel() const { return Channel{sock.get(), link.get(), 0}; }
};

// Starts `count` workers with the pool's start method (`zygote`: where fork replacements come
// from; null for the first fork workers, forked from the owner itself). All or nothing: on an
// error the workers already started are killed and joined.
absl::StatusOr<std::vector<PoolWorker>> StartWorkers(const CoreOptions& o, Zygote* zygote,
                                                     int count);
// One worker (a replacement).
absl::StatusOr<PoolWorker> StartWorker(const CoreOptions& o, Zygote* zygote);

// The body of a fork-method worker (the zygote's children run it): the initializer (any
// callable), then the task loop.
std::function<int(UniqueFd)> ForkWorkerBody(const CoreOptions& o);

}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_WORKER_START_H_
