// pool/internal/worker.h — the worker process's side of a Pool: open the channel, run the
// initializer, then the task loop (tasks in, results out) until told to stop, the parent is
// gone, or the task budget (maxtasksperchild) is spent. The parent's side is
// pool/internal/worker_start.h (starting workers) and pool_core.cc (the pool thread).
#ifndef MPROC_POOL_INTERNAL_WORKER_H_
#define MPROC_POOL_INTERNAL_WORKER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "pool/internal/channel.h"
#include "pool/internal/pool_core.h"

namespace mproc::pool_internal {

// The worker process's target (spawn and forkserver workers): `sock` is its end of the
// channel's socket; the initializer is `init_entry` over `init_bytes` and `init_fds`.
int WorkerMain(UniqueFd sock, InitEntry init_entry, std::string init_bytes,
               std::vector<UniqueFd> init_fds, int32_t maxtasks, bool ignore_sigint);

// A worker after its channel is open: the initializer (a function pointer and its
// arguments; none when null), then the task loop. Returns the worker's exit code.
int WorkerRun(const Channel& c, InitEntry init_entry, const std::string& init_bytes,
              std::vector<UniqueFd> init_fds, int32_t maxtasks);

// Tells the parent the initializer threw (the exception being handled, as a RemoteError).
bool ReportInitFailure(const Channel& c);

}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_WORKER_H_
