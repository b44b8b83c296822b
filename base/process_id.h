// base/process_id.h — this process's pid, cached, and correct in fork children.
//
// getpid() is a real system call on glibc >= 2.25. mproc objects remember the pid that
// created them and are inert in other processes (DESIGN.md, Fork children); they check it on
// every destructor, so the value is cached and reset by a pthread_atfork child handler.
// Correct for children made by glibc's fork() (which runs atfork handlers — mproc's fork start
// method uses it); never call it between a raw clone/vfork and execve.
#ifndef MPROC_BASE_PROCESS_ID_H_
#define MPROC_BASE_PROCESS_ID_H_

#include <sys/types.h>

namespace mproc {

pid_t CurrentPid();

}  // namespace mproc

#endif  // MPROC_BASE_PROCESS_ID_H_
