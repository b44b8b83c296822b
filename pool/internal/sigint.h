// pool/internal/sigint.h — the SIGINT handler of pools in interrupt mode
// (PoolOptions::cancel_on_sigint).
//
// One process-wide handler, installed while any pool is registered (the previous disposition
// is restored when the last one leaves), writes to each registered eventfd: async-signal-safe,
// a few writes long. At most 64 pools at once.

#ifndef MPROC_POOL_INTERNAL_SIGINT_H_
#define MPROC_POOL_INTERNAL_SIGINT_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"

namespace mproc::pool_internal {

// Registers `fd` (an eventfd) to be written on SIGINT. RESOURCE_EXHAUSTED past 64 pools.
absl::Status RegisterSigintFd(int fd);
// Unregisters `fd` and closes it once no handler can still write to it, so its number is
// never given to another descriptor a late handler would write into. A handler is a few
// writes long: this waits for it (yielding) up to kSigintDrainLimit; a handler still running
// then (its thread stopped mid-handler, by a debugger or another signal's handler) leaves the
// descriptor open for the life of the process instead of closing it. Bounded either way.
void ReleaseSigintFd(UniqueFd fd);
inline constexpr absl::Duration kSigintDrainLimit = absl::Milliseconds(200);

// Tests: counts a handler as running (+1) or done (-1), as if one were stopped mid-write.
void SigintHandlerRunningForTest(int delta);

}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_SIGINT_H_
