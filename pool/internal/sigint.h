// pool/internal/sigint.h — the SIGINT handler of pools in interrupt mode
// (PoolOptions::cancel_on_sigint).
//
// One process-wide handler, installed while any pool is registered (the previous disposition
// is restored when the last one leaves), writes to each registered eventfd: async-signal-safe,
// a few writes long. At most 64 pools at once.

#ifndef MPROC_POOL_INTERNAL_SIGINT_H_
#define MPROC_POOL_INTERNAL_SIGINT_H_

#include "absl/status/status.h"

namespace mproc::pool_internal {

// Registers `fd` (an eventfd) to be written on SIGINT. RESOURCE_EXHAUSTED past 64 pools.
absl::Status RegisterSigintFd(int fd);
// Unregisters `fd`; returns once no handler can still write to it, so the caller may close it.
void UnregisterSigintFd(int fd);

}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_SIGINT_H_
