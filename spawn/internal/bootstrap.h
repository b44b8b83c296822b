// spawn/internal/bootstrap.h — what a spawned or fork-server child receives, and the pieces of
// process.cc that the fork server (forkserver.cc) shares.
//
// A child's bootstrap is one mproc frame (serialize/frame.h): kind kBootstrapInline carries
// Bootstrap + the target's encoded arguments, with their fds; past 32 KiB the bytes go in a
// sealed memfd (kind kBootstrapInMemfd, payload = length, first fd = the memfd). A fork
// server's own bootstrap is kind kBootstrapForkServer (ForkServerConfig, the listening socket).
#ifndef MPROC_SPAWN_INTERNAL_BOOTSTRAP_H_
#define MPROC_SPAWN_INTERNAL_BOOTSTRAP_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/deadline.h"
#include "base/mutex.h"
#include "base/unique_fd.h"
#include "serialize/buffer.h"
#include "serialize/codec.h"
#include "serialize/frame.h"
#include "spawn/internal/launch.h"
#include "spawn/process.h"

namespace mproc::spawn_internal {

inline constexpr uint8_t kBootstrapInline = 1;
inline constexpr uint8_t kBootstrapInMemfd = 2;
inline constexpr uint8_t kBootstrapForkServer = 3;
inline constexpr size_t kInlineLimit = 32 << 10;

struct Bootstrap {
  std::string name;
  std::string identity;  // CPython's _identity, "2:1" (names the child's own children)
  int32_t parent_pid = 0;
  bool daemon = false;
  Entry entry = nullptr;
  std::optional<UniqueFd> parent_pidfd;  // the parent's pidfd (absent without pidfd support)
  std::string parent_name;               // for ParentProcess()
};
MPROC_CODEC_FIELDS(Bootstrap, name, identity, parent_pid, daemon, entry, parent_pidfd,
                   parent_name)

// The state of one started child, shared by its Process and the at-exit registry.
//
// Only exitcode is guarded by mu. The other fields are set before the record is shared
// (RegisterChild) and read without mu afterwards: Join polls pidfd / status_conn unlocked
// while another thread may reap under mu, and pid() / sentinel() read them unlocked; Close
// resets pidfd and status_conn under mu, but Close must not race other calls on the Process.
struct ChildRecord {
  pid_t pid = 0;
  UniqueFd pidfd;
  // Fork-server children only: the connection on which the server reports the exit status.
  UniqueFd status_conn;
  bool daemon = false;
  std::string name;  // for ActiveChildren()
  Mutex mu;
  std::optional<int> exitcode ABSL_GUARDED_BY(mu);  // set once reaped
};

// process.cc
// Ends a child with `code`: its exit handlers run (CPython 3.12+) once BeginChild ran, never
// the ones a forked child inherited; before that (or in any other forked process) _exit.
[[noreturn]] void FinishChild(int code);
// Called in every child before its target (after SetIdentity): `fresh_image` for a spawned
// child, false for one forked from its parent, a fork server or a Zygote. Installs the exit
// handler barrier (forked children) and makes a daemon child end with its parent.
void BeginChild(bool fresh_image);
// This process's own pidfd, opened once and kept (-1 without pidfd support). Sent to children
// as their parent's.
int SelfPidfd();
void SetParentPidfd(int fd);
// Prints CPython 3.12's warning once per process when `what` is about to fork a process that
// runs more than one thread; true when it printed it.
bool WarnIfForkingThreads(const char* what);
int CountThreads();
void SetProcessIdentity(std::string identity);
// Terminates daemon children and joins every child (the at-exit rule).
void JoinChildrenForExit();
int RunGuarded(const std::function<int()>& body);
// `parent_name` empty: the name this process had until now (a forked child's parent's).
void SetIdentity(std::string name, pid_t parent_pid, bool daemon, std::string parent_name = "");
// Decodes a child bootstrap frame and runs its target; returns the exit code. `fresh_image`:
// the child was spawned (not forked from a fork server).
int RunBootstrapFrame(Frame frame, bool fresh_image);
absl::Status SendBootstrap(int fd, const EncodeBuffer& buf, FdKind fd_kind,
                           const Deadline& deadline);
// Tests: the next spawn Start's bootstrap send fails (UNAVAILABLE) after its child started.
extern std::atomic<bool> g_fail_bootstrap_send_for_testing;
// Starts this executable (or SetExecutable's) with `child_fd` as its bootstrap socket.
absl::StatusOr<Launched> LaunchSelf(int child_fd);

// Replies of the fork server and of a Zygote (spawn/zygote.h), and the exit code of a child
// whose server is gone (CPython's forkserver convention).
inline constexpr uint8_t kReplyStarted = 10;
inline constexpr uint8_t kReplyExited = 11;
inline constexpr uint8_t kReplyError = 12;
inline constexpr int kServerGoneExit = 255;

// forkserver.cc
struct ForkServerChild {
  pid_t pid = 0;
  UniqueFd pidfd;
  UniqueFd status_conn;
};
// Asks this process's fork server (starting it, or restarting a dead one) to fork a child
// running the bootstrap in `buf` (to which it attaches the child's status channel).
absl::StatusOr<ForkServerChild> ForkServerStart(EncodeBuffer& buf);
// The same for several children: every request is sent before the first reply is read, so
// the round trips overlap. One result per request, in order.
std::vector<absl::StatusOr<ForkServerChild>> ForkServerStartMany(
    std::span<EncodeBuffer* const> bufs);
// Server side (fork server, Zygote): reaps child `pid` and writes its exit status on its
// status channel.
void ReportChildExit(pid_t pid, int status_conn);
// Reads the exit status the server sends once it reaps the child; 255 when the server is
// gone (CPython's forkserver convention), DEADLINE_EXCEEDED when it has not arrived yet.
absl::StatusOr<int> ReadExitStatus(int status_conn, const Deadline& deadline);
// The fork server's main loop (in the server process, from Init). Never returns.
[[noreturn]] void RunForkServer(Frame bootstrap, UniqueFd owner);

// process.cc: makes `p` the handle of an already running child (a Zygote's), as Start would.
void AdoptChild(Process& p, std::shared_ptr<ChildRecord> rec);

}  // namespace mproc::spawn_internal

#endif  // MPROC_SPAWN_INTERNAL_BOOTSTRAP_H_
