// base/io_ring.h — how mproc waits and batches: plain syscalls or io_uring, chosen once.
//
// Every blocking wait in mproc (a Connection read with a deadline, a Queue Get, Wait(), a full
// Queue's Put) and every batched send (Queue::PutMany) goes through the functions here, which
// work in one of three modes:
//
//   kPlain       poll(2), sendmmsg(2), futex(2). Needs nothing; the fallback everywhere.
//   kUringBasic  io_uring for the waits (IORING_OP_POLL_ADD) and the batched sends (linked
//                IORING_OP_SENDMSG, one io_uring_enter per batch); futex waits stay syscalls.
//                For kernels without the futex opcodes, such as Debian 12's stock 6.1.
//   kUring       kUringBasic plus IORING_OP_FUTEX_WAIT, so a futex word and descriptors are
//                waited on in one completion wait (Linux 6.7+).
//
// The mode comes from the environment variable MPROC_IO_MODE ("plain", "uring_basic", "uring"
// or "auto"; unset means auto), or from SetIoMode(). auto is kDefaultIoMode: plain, because
// plain won every row of the report where the two differ (bench/rows/ipc_rows.cc measures each
// workload in each mode; see README). A mode the kernel cannot give (io_uring_setup failing with
// ENOSYS, EPERM or EOPNOTSUPP; no futex opcodes) is lowered to the best one it can: the answer
// of ActiveIoMode() is what runs. GetIoRingCounters() proves it: the submission counters stay
// zero in plain mode.
//
// Rings: one per thread, created on the thread's first io_uring wait, set up with
// IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them (completions are then
// run only in the waiting thread, which is the only submitter: no lock on any path). A ring is
// keyed to the pid that made it: a fork child never touches its parent's ring (it unmaps its
// copy and makes its own). A thread's ring closes when the thread exits. The ring descriptor is
// close-on-exec.
//
// Thread-safety: all functions are thread-safe.
#ifndef MPROC_BASE_IO_RING_H_
#define MPROC_BASE_IO_RING_H_

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "base/deadline.h"

namespace mproc {

enum class IoMode : int {
  kPlain = 0,
  kUringBasic = 1,
  kUring = 2,
};

inline constexpr IoMode kDefaultIoMode = IoMode::kPlain;

// "plain", "uring_basic", "uring".
const char* IoModeName(IoMode mode);
// Accepts the names above; nullopt for anything else ("auto" is not a mode: see SetIoMode).
std::optional<IoMode> ParseIoMode(std::string_view name);

// The mode in use, resolved on first call from MPROC_IO_MODE and the kernel.
IoMode ActiveIoMode();
// The best mode this kernel and process allow.
IoMode BestIoMode();
// True when the mode was chosen (MPROC_IO_MODE names one, or SetIoMode ran) rather than left
// to auto. Auto is the mode that measured fastest for each use: plain for the waits and sends
// above; the manager server's event loop takes io_uring (manager/manager.h, ManagerOptions).
bool IoModeChosen();
// Asks for `requested` from now on in this process (lowered to BestIoMode() when the kernel
// cannot give it) and exports it in MPROC_IO_MODE so children started later follow. Returns
// the mode now active.
IoMode SetIoMode(IoMode requested);

struct IoRingCounters {
  uint64_t submissions = 0;  // SQEs submitted by this process (0 in plain mode)
  uint64_t futex_waits = 0;  // IORING_OP_FUTEX_WAIT SQEs among them (kUring only)
  uint64_t batches = 0;      // SendMessages calls that sent more than one message at once
};
IoRingCounters GetIoRingCounters();

// poll(2) through the active mode: waits until an entry of `fds` is ready or `deadline`
// passes, fills revents, returns the count of ready entries, 0 once the deadline passed, or
// -errno. EINTR is retried with the same deadline. A closed descriptor reports POLLNVAL.
int WaitEvents(std::span<pollfd> fds, const Deadline& deadline);

// True in kUring mode: WaitEventsOrFutex may be called.
bool CanWaitFutexWithFds();
// As WaitEvents, but also returns once `*word` differs from `expected` or a FutexWake on it
// arrives (*futex_woken = true; the count then includes it). Only in kUring mode.
int WaitEventsOrFutex(std::span<pollfd> fds, const std::atomic<uint32_t>* word, uint32_t expected,
                      const Deadline& deadline, bool* futex_woken);

// Sends msgs[0..] in order on socket `fd` with MSG_DONTWAIT | MSG_NOSIGNAL, stopping at the
// first that fails: one linked io_uring submission, or one sendmmsg(2) in plain mode. Returns
// how many were sent (at least 1), or -errno of the first message (EAGAIN when the socket
// buffer is full). A later failure is the next call's first: the caller waits and resumes.
int SendMessages(int fd, std::span<msghdr> msgs);

}  // namespace mproc

#endif  // MPROC_BASE_IO_RING_H_
