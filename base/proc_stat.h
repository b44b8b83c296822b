// base/proc_stat.h — what /proc/<id>/stat says of a task: the one reader of that file.
//
// Used for liveness (base/owner.h: a zombie is dead, a process whose main thread exited is
// not), for a process's start time (which tells a reused pid apart), and by the test-time
// leak check (a child's parent and state). Never allocates except for `comm`, reads at most
// 1 KiB, and is async-signal-unsafe only through that string.

#ifndef MPROC_BASE_PROC_STAT_H_
#define MPROC_BASE_PROC_STAT_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace mproc {

struct TaskStat {
  enum Found {
    kGone,     // no such task (or it vanished while being read)
    kUnknown,  // /proc could not be read (not mounted, out of descriptors): assume it lives
    kFound,
  };
  Found found = kGone;
  char state = '?';        // R, S, D, Z, X, T, ...
  pid_t ppid = -1;         // field 4
  long threads = 0;        // field 20
  uint64_t start_time = 0; // field 22: clock ticks after boot
  std::string comm;        // field 2, without its parentheses (may hold spaces and parentheses)
};

// Reads /proc/<id>/stat for a process or thread id.
TaskStat ReadTaskStat(pid_t id);

// Z (zombie) or X (dead): the task exited and only its entry is left.
inline bool ZombieState(char state) { return state == 'Z' || state == 'X' || state == 'x'; }

}  // namespace mproc

#endif  // MPROC_BASE_PROC_STAT_H_
