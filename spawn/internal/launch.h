// spawn/internal/launch.h — start a fresh image of an executable: clone3(CLONE_VM |
// CLONE_VFORK | CLONE_PIDFD) or vfork, then execve. The only code of mproc that runs between
// clone and exec lives in launch.cc (STYLE.md §6).
//
// The child keeps stdio (0, 1, 2) and gets `child_fd` as descriptor 3 (CLOEXEC cleared); every
// other descriptor is closed before execve, so the new image holds exactly what it was given.
// Signal handlers are reset to SIG_DFL (ignored signals stay ignored, as exec keeps them) and
// the caller's signal mask is restored just before execve.
#ifndef MPROC_SPAWN_INTERNAL_LAUNCH_H_
#define MPROC_SPAWN_INTERNAL_LAUNCH_H_

#include <sys/types.h>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace mproc::spawn_internal {

struct LaunchRequest {
  const char* path = nullptr;          // executable
  char* const* argv = nullptr;         // NULL-terminated
  char* const* envp = nullptr;         // NULL-terminated
  int child_fd = -1;                   // becomes fd 3 in the child
};

struct Launched {
  pid_t pid = 0;
  UniqueFd pidfd;
  bool used_clone3 = false;
};

// Starts the child. When execve fails the child is reaped and the error names the path and
// errno. Uses clone3 when base/features says it works, else vfork + pidfd_open.
absl::StatusOr<Launched> Launch(const LaunchRequest& request);

// How many children Launch started through clone3 / through vfork.
int LaunchCount(bool clone3);

}  // namespace mproc::spawn_internal

#endif  // MPROC_SPAWN_INTERNAL_LAUNCH_H_
