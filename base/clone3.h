// base/clone3.h — the raw clone3() system call with a child entry function.
//
// glibc has no clone3 wrapper. A child created with its own stack (CLONE_VM, or any clone3 with
// `stack` set) cannot return through a C function, so Clone3() is a small assembly trampoline:
// in the child it calls fn(arg) on the new stack and passes its result to the exit syscall.
//
//   alignas(16) static char stack[64 << 10];
//   int pidfd = -1;
//   clone_args args = {};
//   args.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD;
//   args.pidfd = reinterpret_cast<uintptr_t>(&pidfd);
//   args.exit_signal = SIGCHLD;
//   args.stack = reinterpret_cast<uintptr_t>(stack);
//   args.stack_size = sizeof(stack);
//   long pid = Clone3(&args, ChildMain, &ctx);   // -errno on failure
//
// The child runs between clone and exec (or _exit): only async-signal-safe code, no malloc, no
// locks (STYLE.md §6). Under CLONE_VM it shares the parent's memory; under CLONE_VFORK the
// parent is suspended until the child execs or exits. Falls back on nothing: callers check
// HasFeature(Feature::kClone3) (base/features.h) and use vfork where it is missing.

#ifndef MPROC_BASE_CLONE3_H_
#define MPROC_BASE_CLONE3_H_

#include <linux/sched.h>  // struct clone_args, CLONE_* flags

namespace mproc {

// Calls clone3(args, sizeof(*args)). In the parent returns the child's pid or -errno. The
// child starts on args->stack (which must be set, 16-byte aligned at its top), runs fn(arg) and
// exits the thread with its return value; it never returns here.
long Clone3(clone_args* args, int (*fn)(void*), void* arg);

}  // namespace mproc

#endif  // MPROC_BASE_CLONE3_H_
