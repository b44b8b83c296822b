#include "pool/async_result.h"

namespace mproc::pool_internal {

thread_local DeferredCallbacks* t_defer_callbacks = nullptr;

}  // namespace mproc::pool_internal
