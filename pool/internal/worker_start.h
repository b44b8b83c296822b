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
struct PoolWorker {
  std::unique_ptr<Process> proc;
  UniqueFd sock;
  std::shared_ptr<ipc_internal::RingLink> link;  // the channel's rings (this side is end 0)
  // sock and the rings' segment, kept from every later fork child (base/parent_only_fd.h):
  // this worker's siblings, another fork Pool's zygote and workers, a fork Process. Declared
  // after sock and link, so unlisted before they close.
  ParentOnlyListing listed_sock;
  ParentOnlyListing listed_segment;
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
