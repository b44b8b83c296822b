// base/seccomp_for_testing.h — make one syscall fail with a chosen errno in this process.
//
// Reproduces, without root, the kernels and container profiles where a feature is missing:
// io_uring_setup failing with ENOSYS, EPERM or EOPNOTSUPP, clone3 with ENOSYS (BUILD-NOTES.md).
// The filter is irrevocable and inherited by children: install it in a forked child.
//
//   pid_t pid = fork();
//   if (pid == 0) {
//     if (InstallSeccompErrno(__NR_clone3, ENOSYS) != 0) _exit(99);
//     ... exercise the fallback ..., _exit(0);
//   }

#ifndef MPROC_BASE_SECCOMP_FOR_TESTING_H_
#define MPROC_BASE_SECCOMP_FOR_TESTING_H_

namespace mproc {

// Installs a seccomp filter (after PR_SET_NO_NEW_PRIVS) that makes `syscall_nr` fail with
// `err` and allows everything else. Returns 0 or -errno.
int InstallSeccompErrno(long syscall_nr, int err);

}  // namespace mproc

#endif  // MPROC_BASE_SECCOMP_FOR_TESTING_H_
