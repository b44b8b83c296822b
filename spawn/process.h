// spawn/process.h — Process: run a function in a child process (CPython's
// multiprocessing.Process), started by fork or spawn.
//
//   int main(int argc, char** argv) {
//     mproc::Init(argc, argv);                  // first line: runs spawned children's targets
//     mproc::Process p(Work, 42, std::string("job"));
//     MPROC_RETURN_IF_ERROR(p.Start());
//     MPROC_RETURN_IF_ERROR(p.Join());
//     std::optional<int> code = p.exitcode();   // 0, the target's code, 1, or -signal
//   }
//
// Start methods (StartMethod; per Process with SetStartMethod, or process-wide with
// mproc::SetStartMethod, once):
//   * kFork: glibc fork() (atfork handlers run), then pidfd_open. Any callable works as the
//     target — the child is a copy of the parent. Copying a threaded parent with fork is as
//     unsafe here as in any C++ program: only the calling thread exists in the child. The
//     child inherits every descriptor but this process's ends of its helpers' channels (a
//     fork Pool's zygote and worker sockets), which every fork child, a plain fork()'s too,
//     finds replaced by a closed socket (base/parent_only_fd.h): a copy kept there would keep
//     the helper from seeing its owner close the channel.
//   * kSpawn: clone3(CLONE_VM|CLONE_VFORK|CLONE_PIDFD), or vfork + pidfd_open where clone3 is
//     missing, then execve of the running executable (SetExecutable to change it) with the
//     parent's argv. The child receives stdio and one SOCK_SEQPACKET bootstrap socket carrying
//     the target, its arguments and any descriptors they hold (SCM_RIGHTS); nothing else. Its
//     main() must call mproc::Init(argc, argv) first: Init runs the target and exits.
//   * kForkServer: a clean single-threaded server, started with spawn on first use, forks each
//     child on request (spawn/internal/forkserver.cc): reached over a 0600 Unix socket with
//     the CPython authkey handshake (a fresh key per server); it sends the child's pidfd back
//     (SCM_RIGHTS) before it can reap it, and the exit status when it does. The child's
//     ParentPid() is the requester, not the server. A dead server is restarted by the next
//     Start. The parent's size and threads do not matter: the server is small.
//   The process-wide default is kForkServer, as CPython 3.14 chose on Linux.
//
// Targets under spawn and forkserver: a function pointer or captureless lambda, sent as a code reference
// (base/code_ref.h), with arguments converted to the target's parameter types and encoded by
// their Codecs (serialize/codec.h); handles (Segment, Lock, Value, ...) arrive working.
// A capturing callable can only run under fork: Start() under spawn or forkserver is
// FAILED_PRECONDITION naming the reason. A parameter type without a Codec is a compile error
// under every start method (the same Process may be started under any of them), whose message
// says how to give the type one.
//
// Exit codes (CPython's): 0 when the target returns (void, or an OK absl::Status), the value
// when it returns an integer, 1 for an uncaught exception or a non-OK Status (printed to
// stderr), the code given to exit()/_exit(), and -N when killed by signal N. A spawned child
// whose bootstrap fails (unreadable socket, unknown target) exits with kBootstrapFailedExit.
//
// Arguments are released after a successful Start (the child has its own copies), so a
// descriptor handed to the child is closed in the parent then.
//
// Lifecycle: Start once (again: FAILED_PRECONDITION); Join(timeout) returns OK when the child
// has ended or the timeout passed (check IsAlive / exitcode); joining an unstarted process,
// closing a running one, or using a closed one is FAILED_PRECONDITION (a second Close is OK).
// Terminate (SIGTERM) and Kill (SIGKILL) go through pidfd_send_signal (kill without a pidfd)
// and do nothing once the child is reaped.
// At exit (atexit), daemon children still running are terminated and every child is joined,
// as CPython's; a daemon process may not start children.
//
// When the parent dies instead (SIGKILL, a crash): a daemon child ends too, within
// milliseconds, whichever thread started it (ExitWhenParentExits: it watches the parent's
// pidfd; PR_SET_PDEATHSIG would fire when the starting *thread* exits). A non-daemon child
// outlives a killed parent and runs to its end, as in CPython (it is reparented to init or a
// subreaper, which reaps it).
//
// Exit handlers: a child runs the std::atexit handlers (and static destructors) registered in
// it when its target returns or it calls exit(), as CPython 3.12+ does (gh-83856). A spawned
// child is a fresh image: all of its handlers are its own. A child forked from its parent, a
// fork server or a Zygote never runs the handlers it inherited (they belong to the parent: a
// handler removing the parent's files must not run twice); those registered after the fork
// run. A child killed by a signal, or calling _exit, runs none. One thing the barrier cannot
// hold back: exit() first destroys the calling thread's thread_local objects, which in a
// forked child are copies of the forking thread's; a thread_local that owns a resource should
// check the pid it was made in, as mproc's own do.
//
// Thread-safety: a Process may be used from several threads (Join/IsAlive/exitcode/Terminate/
// Kill are serialised internally); Start, Close and the setters must not race other calls.
// Fork children: a started Process copied into a fork child is inert there (FAILED_PRECONDITION,
// IsAlive false, exitcode empty); an unstarted one can be started by the child.

#ifndef MPROC_SPAWN_PROCESS_H_
#define MPROC_SPAWN_PROCESS_H_

#include <sys/types.h>

#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "base/status.h"
#include "serialize/buffer.h"
#include "serialize/codec.h"

namespace mproc {

enum class StartMethod { kFork, kSpawn, kForkServer };
MPROC_CODEC_ENUM(StartMethod, kFork, kSpawn, kForkServer)
std::string_view StartMethodName(StartMethod method);

// Sets the process-wide default start method. Once: a second call is FAILED_PRECONDITION
// unless `force`.
absl::Status SetStartMethod(StartMethod method, bool force = false);
StartMethod GetStartMethod();

// The executable that spawn starts (default: this one, /proc/self/exe). Its main() must call
// mproc::Init.
void SetExecutable(std::string path);

// The entry guard. In a child started by spawn (marked through the environment) it runs the
// target and exits the process; everywhere else it returns at once. Call it first in main().
void Init(int argc, char** argv);

// The fork server (kForkServer). SetForkServerPreload names a function the server runs once
// when it starts (before serving), so children forked from it inherit its work (CPython's
// set_forkserver_preload, for a function). ShutdownForkServer stops this process's server
// (the next forkserver Start starts a new one); it also runs at exit. ForkServerPid is its
// pid, 0 when none runs.
void SetForkServerPreload(void (*preload)());
void ShutdownForkServer();
pid_t ForkServerPid();

// CPython's util.register_after_fork: `hook` runs in every child this process starts, before
// the target — under fork, the hooks registered in the parent; under spawn, those the fresh
// image registers while it starts (e.g. from a static initializer); under forkserver, those
// registered in the server (static initializers, or the preload function).
void RegisterAfterFork(std::function<void()> hook);

// The exit code of a spawned child whose bootstrap failed.
inline constexpr int kBootstrapFailedExit = 70;

// The exit code of a child that something else reaped before mproc could (a SIGCHLD handler
// of the program's, or SIGCHLD set to SIG_IGN): its status is lost. Neither an exit status
// (0..255) nor a signal (-1..-64).
inline constexpr int kExitCodeUnknown = 256;

// This process's name ("MainProcess", or the Process name in a child) and its parent's pid
// (0 in the main process).
const std::string& CurrentProcessName();
pid_t ParentPid();

// CPython's module-level functions.
//
// The CPUs this process may use (os.process_cpu_count(): its affinity mask), bounded also by
// its cgroup's CPU quota (cpu.max, rounded up) as a container's limit; at least 1. Pool's
// default size.
int CpuCount();
// The start methods this platform supports, the default first (CPython 3.14's order).
std::vector<StartMethod> GetAllStartMethods();

struct ProcessInfo {
  std::string name;
  pid_t pid = 0;
  bool daemon = false;
  std::string identity;  // CPython's _identity: "" in the main process, "2:1" below Process-2
};
// current_process().
ProcessInfo CurrentProcess();
// parent_process(): the process that started this one (for a pool worker, the pool's
// process), nullopt in the main process. IsAlive() asks the kernel (through the parent's
// pidfd, so a reused pid is never mistaken for it).
struct ParentProcessInfo {
  std::string name;
  pid_t pid = 0;
  // ParentProcessInfo::IsAlive()
  //
  // False once the parent has exited; never blocks. Without a pidfd on the parent (no
  // pidfd_open on this kernel) it asks /proc by pid, where a reused pid passes for the parent.
  bool IsAlive() const;
};
std::optional<ParentProcessInfo> ParentProcess();
// active_children(): the children this process started that are still running (finished
// ones are reaped on the way, as CPython's). identity is not filled in.
std::vector<ProcessInfo> ActiveChildren();

// Ends this process with SIGKILL as soon as its parent (the process whose Start created it)
// ends, however it ends, SIGKILL included: a thread waits on the parent's pidfd, which the
// child received when it started (so a reused pid is never mistaken for the parent). Daemon
// children call it before their target runs; pool workers too. Does nothing in the main
// process. `last_words`, when given, runs on the watching thread just before the SIGKILL
// (the process's other threads still run: keep it to a few system calls, such as removing a
// socket file only this process would remove).
void ExitWhenParentExits(std::function<void()> last_words = nullptr);

class Process;

namespace spawn_internal {

// Runs `fn` at exit, before the children still running are joined (the last added first):
// for the layers above, whose objects own children, as CPython's exit finalizers do (a Pool
// alive at exit is terminated, not waited for by its idle workers for ever). Thread-safe.
void AddExitHook(void (*fn)());

struct ChildRecord;
struct ForkServerChild;
void AdoptChild(Process& p, std::shared_ptr<ChildRecord> rec);

// How a spawned child runs its target: decodes a function pointer and its arguments from `r`
// and calls it. Instantiated per target signature in the parent, found again in the child
// through its code reference.
using Entry = int (*)(DecodeReader& r);

// The identity of the next Process this process creates ("3", or "2:1" in a child): counts
// Processes from construction, as CPython's _counter does.
std::string NextIdentity();

// Turns a target's result into an exit code.
int ExitCodeOfStatus(const absl::Status& s);
// The target runs once per process, so its arguments are moved into it.
template <typename F, typename... A>
int CallForExit(F& f, A&&... a) {
  using R = std::invoke_result_t<F&, A&&...>;
  if constexpr (std::is_void_v<R>) {
    std::invoke(f, std::forward<A>(a)...);
    return 0;
  } else if constexpr (std::is_same_v<R, absl::Status>) {
    return ExitCodeOfStatus(std::invoke(f, std::forward<A>(a)...));
  } else if constexpr (std::is_integral_v<R>) {
    return static_cast<int>(std::invoke(f, std::forward<A>(a)...));
  } else {
    (void)std::invoke(f, std::forward<A>(a)...);
    return 0;
  }
}

void ReportBootstrapError(std::string_view what);
// OK when `fn` can be named to another process (base/code_ref.h).
absl::Status CheckSendable(const void* fn);

// How many children this process started through clone3 and through vfork (tests).
int LaunchCount(bool clone3);

template <typename R, typename... P>
int RunEncoded(DecodeReader& r) {
  R (*fn)(P...) = nullptr;
  std::tuple<std::decay_t<P>...> params;
  if (!Codec<R (*)(P...)>::Decode(r, fn) ||
      !Codec<std::tuple<std::decay_t<P>...>>::Decode(r, params)) {
    ReportBootstrapError(std::string(r.status().message()));
    return kBootstrapFailedExit;
  }
  if (r.remaining() != 0 || r.unclaimed_fds() != 0) {
    ReportBootstrapError("trailing bytes or unclaimed descriptors after the arguments");
    return kBootstrapFailedExit;
  }
  if (fn == nullptr) {
    ReportBootstrapError("null target");
    return kBootstrapFailedExit;
  }
  return std::apply([&](auto&... a) { return CallForExit(fn, std::move(a)...); }, params);
}

template <typename F>
concept FunctionPointerLike = requires(F& f) {
  { +f };
  requires std::is_pointer_v<decltype(+f)>;
  requires std::is_function_v<std::remove_pointer_t<decltype(+f)>>;
};

template <typename Fn>
struct Signature;
template <typename R, typename... P>
struct Signature<R (*)(P...)> {
  static constexpr bool kEncodable = (true && ... && Encodable<std::decay_t<P>>);
  using Params = std::tuple<std::decay_t<P>...>;
  static constexpr Entry kEntry = &RunEncoded<R, P...>;
};

// What a Process runs: a closure for fork, and (when possible) an encoder for spawn.
struct Payload {
  std::function<int()> fork_runner;
  Entry entry = nullptr;
  std::function<absl::Status(EncodeBuffer&)> encode;
  std::string not_spawnable;  // why spawn cannot run it (empty when it can)
};

}  // namespace spawn_internal

class Process {
 public:
  // Process::Process(target, args...)
  //
  // Stores `target` and copies of `args`; starts nothing and never fails (a target only fork
  // can run is refused later, by Start under spawn or forkserver). Takes the next identity of
  // this process ("Process-N"); Processes may be constructed from several threads at once.
  template <typename F, typename... Args>
  explicit Process(F&& target, Args&&... args) {
    using D = std::decay_t<F>;
    auto tuple = std::make_shared<std::tuple<std::decay_t<Args>...>>(std::forward<Args>(args)...);
    if constexpr (spawn_internal::FunctionPointerLike<D>) {
      D copy(target);
      auto fn = +copy;
      using Sig = spawn_internal::Signature<decltype(fn)>;
      if constexpr (Sig::kEncodable) {
        // Arguments become the target's parameter types once, here; fork calls with them and
        // spawn encodes them.
        auto params = std::make_shared<typename Sig::Params>(std::apply(
            [](auto&... a) { return typename Sig::Params(std::move(a)...); }, *tuple));
        payload_.entry = Sig::kEntry;
        payload_.encode = [fn, params](EncodeBuffer& b) {
          MPROC_RETURN_IF_ERROR(spawn_internal::CheckSendable(reinterpret_cast<const void*>(fn)));
          Encode(fn, b);
          Encode(*params, b);
          return absl::OkStatus();
        };
        payload_.fork_runner = [fn, params]() {
          return std::apply(
              [&](auto&... a) { return spawn_internal::CallForExit(fn, std::move(a)...); },
              *params);
        };
        return;
      } else {
        payload_.not_spawnable =
            "a parameter type of the target has no Codec, so its arguments cannot be sent to a "
            "spawned child (use the fork start method, or give the type a Codec)";
      }
    } else {
      payload_.not_spawnable =
          "the target is a capturing callable; under spawn a target must be a function "
          "pointer or captureless lambda (a capturing callable runs only under fork)";
    }
    payload_.fork_runner = [t = std::make_shared<D>(std::forward<F>(target)), tuple]() {
      return std::apply(
          [&](auto&... a) { return spawn_internal::CallForExit(*t, std::move(a)...); }, *tuple);
    };
  }

  // Process::~Process()
  //
  // Neither waits for the child nor signals it: a child still running stays registered and
  // is joined when this process exits (a daemon one is sent SIGTERM first), as CPython's. A
  // finished child's record and pidfd are released. Moving hands the child to the new
  // Process; assigning over a Process first releases its own finished child the same way.
  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  // Process::SetName(name), Process::SetDaemon(daemon), Process::SetStartMethod(method)
  //
  // Settings for Start; each returns *this. Start takes them as they are then: changing one
  // later does not reach a started child. SetStartMethod overrides the process-wide default
  // (mproc::SetStartMethod) for this Process only. A daemon child is sent SIGTERM at this
  // process's exit, ends when this process dies, and may not start children itself. Never
  // fail; not synchronised: they must not race other calls on this Process.
  Process& SetName(std::string name);
  Process& SetDaemon(bool daemon);
  Process& SetStartMethod(StartMethod method);
  // The name, from construction: "Process-N", N counting the Processes created in this
  // process ("Process-2:1" for the first one created in the child Process-2), as CPython's.
  const std::string& name() const { return name_; }
  // CPython's _identity: "3" for the third Process made here, "2:1" in child Process-2.
  const std::string& identity() const { return identity_; }
  // The SetDaemon flag (false by default).
  bool daemon() const { return daemon_; }

  // Process::Start()
  //
  // Starts the child under this Process's start method (else the process-wide one); returns
  // once it exists and, under spawn and forkserver, has been sent its target (forkserver: a
  // round trip to the server, which the first Start launches). It does not wait for the
  // target to run; a spawned child that dies before reading its target is no Start error (its
  // exitcode tells). Errors: FAILED_PRECONDITION (started before; closed; this process is a
  // daemon, or a spawned child whose main() skipped Init; spawn/forkserver cannot send the
  // target), INVALID_ARGUMENT (spawn: a descriptor among the arguments is not open; nothing
  // was started), UNAVAILABLE (the fork server died, stopped answering or could not fork),
  // else the failed system call's code (base/status.h): RESOURCE_EXHAUSTED (descriptors,
  // memory), UNAVAILABLE (EAGAIN: process limit), NOT_FOUND (no spawn executable). A Start
  // that failed started nothing that lives on (a child already launched is killed and
  // reaped) and may be called again. Must not race other calls on this Process; different
  // Processes may start from several threads at once.
  absl::Status Start();
  // Process::StartAll(procs)
  //
  // Starts every process in `procs` (each as its Start would), with one status per process.
  // Those under the forkserver method go to the fork server as one batch: every request is
  // sent before the first reply is read, so starting N of them costs about one round trip
  // plus N forks instead of N round trips (a Pool's workers start this way). When the batch
  // fails, every request left without a reply gets the batch's error (mostly UNAVAILABLE).
  // Must not race other calls on these Processes; list each Process once (a forkserver one
  // listed twice starts two children).
  static std::vector<absl::Status> StartAll(std::span<Process* const> procs);
  // Process::Join(timeout)
  //
  // Waits until the child has ended (and collects its exit status) or `timeout` passes: OK
  // either way, as CPython's join; exitcode() or IsAlive() tells which. Sleeps on the pidfd
  // (a forkserver child: on the server's status channel), or polls every 1 ms without one.
  // Errors: FAILED_PRECONDITION when not started, closed, or started by another process (a
  // fork child's copy); an errno code only if poll itself fails. Thread-safe: several threads
  // may Join at once, and call IsAlive, exitcode, Terminate and Kill meanwhile.
  absl::Status Join(absl::Duration timeout = absl::InfiniteDuration());
  // Process::IsAlive()
  //
  // True while the child runs; reaps it, without blocking, once it has ended (as CPython's).
  // False before Start, after Close, and in a process other than the one that started it.
  // Thread-safe.
  bool IsAlive();
  // Process::exitcode()
  //
  // Empty while running, before Start, after Close, and in a process other than the one that
  // started it; else the exit code (see the top of this file; -N: killed by signal N).
  // kExitCodeUnknown when something else reaped the child; 255 when a forkserver child's
  // server died before reporting it: the child may still run, and Terminate and Kill then do
  // nothing (signal sentinel() directly). Reaps without blocking. Thread-safe.
  std::optional<int> exitcode();
  // The child's pid from Start on (kept after it ends and after Close); 0 before Start.
  pid_t pid() const;
  // The pidfd: readable once the child has exited (a Waitable for ipc's Wait). -1 before
  // Start or after Close, and where no pidfd could be had (kernels before 5.3). Owned by the
  // Process: do not close it.
  int sentinel() const;
  // Process::Terminate(), Process::Kill()
  //
  // Send SIGTERM / SIGKILL to the child (through its pidfd, else by pid) and return at once:
  // Join waits for the end. OK and nothing sent once the child is reaped; OK too when the
  // kernel says it is gone (ESRCH). Errors: FAILED_PRECONDITION when not started, closed, or
  // started by another process; else the signal call's errno code (EPERM: PERMISSION_DENIED).
  // Thread-safe.
  absl::Status Terminate();
  absl::Status Kill();
  // Process::Close()
  //
  // Releases the pidfd (and a forkserver child's status channel) of a child that has ended,
  // reaping it first without blocking. OK when already closed or never started. Errors:
  // FAILED_PRECONDITION while the child runs, or in a process other than the one that started
  // it. Afterwards Start, Join, Terminate and Kill are FAILED_PRECONDITION, IsAlive is false,
  // exitcode empty and sentinel -1. Must not race other calls on this Process.
  absl::Status Close();

 private:
  absl::Status Signal(int sig);
  void DropRecordIfDone();
  absl::Status StartFork();
  absl::Status StartSpawn();
  absl::Status StartForkServer();
  absl::Status CheckStartable();
  void AdoptForkServerChild(spawn_internal::ForkServerChild fc);
  [[nodiscard]] absl::StatusOr<EncodeBuffer> EncodeBootstrap(std::string_view method) const;
  absl::Status CheckUsable(std::string_view what) const;

  std::string identity_ = spawn_internal::NextIdentity();
  std::string name_ = "Process-" + identity_;
  bool daemon_ = false;
  std::optional<StartMethod> method_;
  spawn_internal::Payload payload_;
  std::shared_ptr<spawn_internal::ChildRecord> child_;
  bool closed_ = false;
  pid_t owner_pid_ = 0;

  friend void spawn_internal::AdoptChild(Process& p,
                                         std::shared_ptr<spawn_internal::ChildRecord> rec);
};

}  // namespace mproc

#endif  // MPROC_SPAWN_PROCESS_H_
