#include "sync/internal/spin.h"

namespace mproc::sync_internal {

// Spinning decisions live in spin.h; this file keeps the target non-empty for future
// adaptive state (spin success rates).

}  // namespace mproc::sync_internal
