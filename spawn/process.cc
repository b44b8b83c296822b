#include "spawn/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cxxabi.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>  // std::call_once
#include <thread>
#include <typeinfo>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/deadline.h"
#include "base/features.h"
#include "base/mutex.h"
#include "base/owner.h"
#include "base/process_id.h"
#include "base/status.h"
#include "base/syscall.h"
#include "base/code_ref.h"
#include "base/unique_fd.h"
#include "serialize/frame.h"
#include "shm/segment.h"
#include "spawn/internal/bootstrap.h"
#include "spawn/internal/launch.h"

extern char** environ;

namespace mproc {
namespace spawn_internal {

namespace {

constexpr char kSpawnEnv[] = "MPROC_SPAWN_FD";
struct Globals {
  Mutex mu;
  std::optional<StartMethod> method ABSL_GUARDED_BY(mu);
  std::string executable ABSL_GUARDED_BY(mu);
  std::vector<std::string> argv;  // this process's argv, for spawned children (argv_once)
  std::once_flag argv_once;
  std::vector<std::shared_ptr<ChildRecord>> children ABSL_GUARDED_BY(mu);
  bool atexit_registered ABSL_GUARDED_BY(mu) = false;
  // Not guarded (name through daemon): this process's identity, set while it starts (in a
  // child before its target runs: SetIdentity, SetProcessIdentity, SetParentPidfd) and read
  // without a lock from then on.
  std::string name = "MainProcess";
  // CPython's _identity: "" in the main process, "2" in its second child, "2:1" below that.
  std::string identity;
  pid_t parent_pid = 0;
  std::string parent_name;
  // A pidfd on the parent (the process that asked for this one), -1 when none: watched by
  // daemon children, which end with their parent.
  int parent_pidfd = -1;
  bool daemon = false;
  std::atomic<int> counter{0};
  // Appended to under mu (RegisterAfterFork), but not guarded: RunAfterForkHooks reads it
  // without the lock, in a child before its target, and a hook may itself take mu (start a
  // process, register a hook).
  std::vector<std::function<void()>> after_fork;
};

Globals& G() {
  static auto* g = new Globals;  // never destroyed: used by the at-exit handler
  return *g;
}

// Set before main() when the environment marks this process as a spawned child; cleared by
// Init. A Start() while it is set means main() forgot to call Init.
bool g_bootstrap_pending = false;

[[maybe_unused]] const int kDetectSpawnChild = [] {
  const char* v = std::getenv(kSpawnEnv);
  g_bootstrap_pending = v != nullptr && v[0] != '\0';
  return 0;
}();

// The layers above's exit hooks (AddExitHook), run once, before the children are joined.
Mutex g_exit_hooks_mu;
std::atomic<bool> g_exit_hooks_ran{false};
std::vector<void (*)()>& ExitHooks() {
  static auto* hooks = new std::vector<void (*)()>();
  return *hooks;
}

// Runs in the fork child (pthread_atfork), where only the forking thread exists and mu is
// re-created rather than taken: the analysis cannot see that, hence no analysis here.
void ForgetChildrenAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  // A fork child's children are its own: the parent's records stay with the parent, and so
  // does the count that names them.
  auto& g = G();
  new (&g.mu) Mutex;  // the parent may have held it during fork
  new (&g_exit_hooks_mu) Mutex;
  g.children.clear();
  g.counter.store(0, std::memory_order_relaxed);
  // The parent's at-exit join sits below the child's exit barrier and never runs here: the
  // child registers its own when it starts children.
  g.atexit_registered = false;
}

// How a child ends (FinishChild). CPython 3.12+ runs the exit handlers a child registered
// (gh-83856); a fork child must not run the ones it inherited, which belong to the parent (a
// handler that removes the parent's files would run twice). So a forked child registers this
// barrier first thing: handlers run last-registered first, so the child's own run, then the
// barrier ends the process before any inherited one. A spawned child is a fresh image: every
// handler is its own.
std::atomic<bool> g_exit_handlers_safe{false};  // a fresh image, or the barrier is in place

void ChildExitBarrier(int status, void*) {
  std::fflush(nullptr);
  ::_exit(status);
}

[[maybe_unused]] const int kAtfork = [] {
  pthread_atfork(nullptr, nullptr, ForgetChildrenAfterFork);
  return 0;
}();

// Reaps the child if it has exited (or waits for it when `block`). Caller holds c.mu.
void ReapLocked(ChildRecord& c, bool block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu) {
  if (c.exitcode.has_value()) return;
  if (c.status_conn.ok()) {  // a fork-server child: the server reaps it and reports
    absl::StatusOr<int> code = ReadExitStatus(
        c.status_conn.get(), block ? Deadline::Infinite() : Deadline::AtMonotonicNs(0));
    // The connection stays open until Close: Join may be polling it without the lock.
    if (code.ok()) c.exitcode = *code;
    return;
  }
  int status = 0;
  pid_t r = RetryEintr([&] { return ::waitpid(c.pid, &status, block ? 0 : WNOHANG); });
  if (r == c.pid) {
    c.exitcode = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  } else if (r < 0 && errno == ECHILD) {
    c.exitcode = kExitCodeUnknown;  // reaped behind our back (a SIGCHLD handler or SIG_IGN)
  }
}

void JoinChildrenAtExit() {
  JoinChildrenForExit();
  ShutdownForkServer();
}

}  // namespace

void AddExitHook(void (*fn)()) {
  MutexLock lock(&g_exit_hooks_mu);
  ExitHooks().push_back(fn);
}

void JoinChildrenForExit() {
  // Whichever exit handler gets here first (this file's, or the fork server's) runs the
  // hooks: objects that own children end them before they are joined.
  if (!g_exit_hooks_ran.exchange(true)) {
    std::vector<void (*)()> hooks;
    {
      MutexLock lock(&g_exit_hooks_mu);
      hooks = ExitHooks();
    }
    for (auto it = hooks.rbegin(); it != hooks.rend(); ++it) (*it)();
  }
  auto& g = G();
  std::vector<std::shared_ptr<ChildRecord>> children;
  {
    MutexLock lock(&g.mu);
    children.swap(g.children);
  }
  for (auto& c : children) {
    MutexLock lock(&c->mu);
    if (c->exitcode.has_value()) continue;
    if (c->daemon) {
      if (c->pidfd.ok()) {
        ::syscall(SYS_pidfd_send_signal, c->pidfd.get(), SIGTERM, nullptr, 0);
      } else {
        ::kill(c->pid, SIGTERM);
      }
    }
    ReapLocked(*c, /*block=*/true);
  }
}

namespace {

void RegisterChild(const std::shared_ptr<ChildRecord>& c) {
  auto& g = G();
  MutexLock lock(&g.mu);
  // Drop records of reaped children so the registry stays small.
  std::erase_if(g.children, [](const std::shared_ptr<ChildRecord>& r) {
    MutexLock l(&r->mu);
    return r->exitcode.has_value();
  });
  g.children.push_back(c);
  if (!g.atexit_registered) {
    g.atexit_registered = true;
    std::atexit(JoinChildrenAtExit);
  }
}

void UnregisterChild(const std::shared_ptr<ChildRecord>& c) {
  auto& g = G();
  MutexLock lock(&g.mu);
  std::erase(g.children, c);
}

// Read once, by whichever thread starts the first spawn child.
const std::vector<std::string>& ThisArgv() {
  auto& g = G();
  std::call_once(g.argv_once, [&g] {
    UniqueFd fd(::open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC));
    std::string all;
    char buf[4096];
    ssize_t n;
    while (fd.ok() && (n = RetryEintr([&] { return ::read(fd.get(), buf, sizeof(buf)); })) > 0) {
      all.append(buf, static_cast<size_t>(n));
    }
    size_t start = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      if (all[i] == '\0') {
        g.argv.emplace_back(all, start, i - start);
        start = i + 1;
      }
    }
    if (g.argv.empty()) g.argv.push_back("mproc-child");
  });
  return g.argv;
}

}  // namespace

[[noreturn]] void FinishChild(int code) {
  std::fflush(nullptr);
  // Without the barrier a forked process would run its parent's handlers: never.
  if (g_exit_handlers_safe.load(std::memory_order_relaxed)) std::exit(code);
  ::_exit(code);
}

void BeginChild(bool fresh_image) {
  // on_exit, not atexit: the barrier needs the status given to exit() (the target's own
  // exit(3) as much as FinishChild's). glibc keeps both kinds in one list.
  if (!fresh_image) ::on_exit(ChildExitBarrier, nullptr);
  g_exit_handlers_safe.store(true, std::memory_order_relaxed);
  if (G().daemon) ExitWhenParentExits();
}

int SelfPidfd() {
  static std::atomic<int64_t> cached{-1};  // pid << 32 | fd
  const pid_t pid = CurrentPid();
  int64_t v = cached.load(std::memory_order_acquire);
  if (v >= 0 && static_cast<pid_t>(v >> 32) == pid) return static_cast<int>(v & 0xffffffff);
  static Mutex mu;
  MutexLock lock(&mu);
  v = cached.load(std::memory_order_acquire);
  if (v >= 0 && static_cast<pid_t>(v >> 32) == pid) return static_cast<int>(v & 0xffffffff);
  // Opened once per process and kept (CLOEXEC: children get it only through fork, or
  // explicitly in their bootstrap).
  int fd = HasFeature(Feature::kPidfdOpen) ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))
                                           : -1;
  if (fd < 0) return -1;
  cached.store((static_cast<int64_t>(pid) << 32) | fd, std::memory_order_release);
  return fd;
}

void SetParentPidfd(int fd) {
  // A fork child inherited its parent's own parent pidfd: not its business (and a descriptor
  // it would hold for nothing).
  auto& g = G();
  if (g.parent_pidfd >= 0 && g.parent_pidfd != fd) ::close(g.parent_pidfd);
  g.parent_pidfd = fd;
}

int CountThreads() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

bool WarnIfForkingThreads(const char* what) {
  static std::atomic<pid_t> warned_in{0};
  const int threads = CountThreads();
  if (threads <= 1 || warned_in.exchange(CurrentPid()) == CurrentPid()) return false;
  std::fprintf(stderr,
               "mproc: warning: %s forks this process (pid %d), which runs %d threads. Only the "
               "calling thread exists in the child: a lock another thread held at that moment "
               "stays held there forever (CPython 3.12 warns about the same). Start fork "
               "Processes and fork Pools before other threads, or use the forkserver or spawn "
               "start method.\n",
               what, static_cast<int>(::getpid()), threads);
  return true;
}
void SetProcessIdentity(std::string identity) { G().identity = std::move(identity); }

std::string NextIdentity() {
  auto& g = G();
  const int n = g.counter.fetch_add(1, std::memory_order_relaxed) + 1;
  return g.identity.empty() ? absl::StrCat(n) : absl::StrCat(g.identity, ":", n);
}

void RunAfterForkHooks() {
  for (const std::function<void()>& hook : G().after_fork) hook();
}

// The demangled type of the exception being handled ("std::runtime_error").
std::string CurrentExceptionType() {
  const std::type_info* t = abi::__cxa_current_exception_type();
  if (t == nullptr) return "unknown";
  int status = 0;
  char* name = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name != nullptr ? name : t->name();
  std::free(name);
  return out;
}

int RunGuarded(const std::function<int()>& body) {
  try {
    RunAfterForkHooks();
    return body();
  } catch (const std::exception& e) {
    // As Python's last traceback line: the type, then the message.
    std::fprintf(stderr, "Process %s (pid %d): uncaught exception: %s: %s\n", G().name.c_str(),
                 static_cast<int>(::getpid()), CurrentExceptionType().c_str(), e.what());
  } catch (...) {
    std::fprintf(stderr, "Process %s (pid %d): uncaught exception of unknown type\n",
                 G().name.c_str(), static_cast<int>(::getpid()));
  }
  return 1;
}

namespace {

absl::Status ForgotInitError() {
  return absl::FailedPreconditionError(
      "mproc: this process was started by the spawn start method, but its main() did not call "
      "mproc::Init(argc, argv) before starting a process. Add mproc::Init(argc, argv) as the "
      "first line of main() (gtest binaries: link //spawn:test_main). Refusing to start a "
      "process, so that the program does not recursively create processes.");
}

}  // namespace

int ExitCodeOfStatus(const absl::Status& s) {
  if (s.ok()) return 0;
  std::fprintf(stderr, "Process %s (pid %d): target returned %s\n", G().name.c_str(),
               static_cast<int>(::getpid()), s.ToString().c_str());
  return 1;
}

absl::Status CheckSendable(const void* fn) {
  absl::StatusOr<CodeRef> ref = CodeRefFor(fn);
  if (!ref.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Start (spawn): the target cannot be sent: ", ref.status().message()));
  }
  return absl::OkStatus();
}

void ReportBootstrapError(std::string_view what) {
  std::fprintf(stderr, "mproc: spawned child (pid %d) could not start its target: %.*s\n",
               static_cast<int>(::getpid()), static_cast<int>(what.size()), what.data());
}

void SetIdentity(std::string name, pid_t parent_pid, bool daemon, std::string parent_name) {
  auto& g = G();
  g.parent_name = parent_name.empty() ? g.name : std::move(parent_name);
  g.name = std::move(name);
  g.parent_pid = parent_pid;
  g.daemon = daemon;
}

int RunBootstrapFrame(Frame frame, bool fresh_image) {
  std::vector<UniqueFd> fds = std::move(frame.fds);
  std::span<const std::byte> bytes = frame.payload();
  Mapping big;
  if (frame.kind == kBootstrapInMemfd) {
    if (fds.empty()) {
      ReportBootstrapError("memfd bootstrap without its descriptor");
      return kBootstrapFailedExit;
    }
    absl::StatusOr<Segment> seg = Segment::FromFd(std::move(fds.front()));
    fds.erase(fds.begin());
    absl::StatusOr<Mapping> m = seg.ok() ? seg->Map() : absl::StatusOr<Mapping>(seg.status());
    if (!m.ok()) {
      ReportBootstrapError(absl::StrCat("mapping the bootstrap memfd: ", m.status().ToString()));
      return kBootstrapFailedExit;
    }
    big = *std::move(m);
    uint64_t len = 0;
    if (bytes.size() != sizeof(len)) {
      ReportBootstrapError("bad memfd bootstrap header");
      return kBootstrapFailedExit;
    }
    std::memcpy(&len, bytes.data(), sizeof(len));
    if (len > big.size()) {
      ReportBootstrapError("memfd bootstrap longer than its segment");
      return kBootstrapFailedExit;
    }
    bytes = std::span<const std::byte>(static_cast<const std::byte*>(big.data()), len);
  } else if (frame.kind != kBootstrapInline) {
    ReportBootstrapError("unknown bootstrap frame kind");
    return kBootstrapFailedExit;
  }
  DecodeReader r(bytes, std::move(fds));
  Bootstrap b;
  if (!Codec<Bootstrap>::Decode(r, b) || b.entry == nullptr) {
    ReportBootstrapError(r.ok() ? std::string("no entry point") : std::string(r.status().message()));
    return kBootstrapFailedExit;
  }
  SetIdentity(b.name, b.parent_pid, b.daemon, b.parent_name);
  SetProcessIdentity(b.identity);
  if (b.parent_pidfd.has_value()) SetParentPidfd(b.parent_pidfd->Release());
  BeginChild(fresh_image);
  return RunGuarded([&] { return b.entry(r); });
}

absl::Status SendBootstrap(int fd, const EncodeBuffer& buf, FdKind fd_kind,
                           const Deadline& deadline) {
  if (buf.size() <= kInlineLimit) {
    return WriteFrame(fd, kBootstrapInline, buf, deadline, {}, fd_kind);
  }
  MPROC_ASSIGN_OR_RETURN(Segment seg, Segment::Create(buf.size(), "mproc-bootstrap"));
  MPROC_ASSIGN_OR_RETURN(Mapping m, seg.Map());
  std::memcpy(m.data(), buf.bytes().data(), buf.size());
  uint64_t len = buf.size();
  std::vector<int> fds;
  fds.push_back(seg.fd());
  fds.insert(fds.end(), buf.fds().begin(), buf.fds().end());
  return WriteFrame(fd, kBootstrapInMemfd, std::as_bytes(std::span<const uint64_t>(&len, 1)), fds,
                    deadline, {}, fd_kind);
}

absl::StatusOr<Launched> LaunchSelf(int child_fd) {
  // argv, envp and the path, prepared before the clone (the child may not allocate).
  const std::vector<std::string>& args = ThisArgv();
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::string marker = absl::StrCat(kSpawnEnv, "=3");
  std::vector<char*> envp;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, kSpawnEnv, sizeof(kSpawnEnv) - 1) == 0 &&
        (*e)[sizeof(kSpawnEnv) - 1] == '=') {
      continue;
    }
    envp.push_back(*e);
  }
  envp.push_back(marker.data());
  envp.push_back(nullptr);
  std::string path;
  {
    auto& g = G();
    MutexLock lock(&g.mu);
    path = g.executable.empty() ? "/proc/self/exe" : g.executable;
  }
  LaunchRequest req;
  req.path = path.c_str();
  req.argv = argv.data();
  req.envp = envp.data();
  req.child_fd = child_fd;
  std::fflush(nullptr);
  return Launch(req);
}

bool BootstrapPending() { return g_bootstrap_pending; }

std::atomic<bool> g_fail_bootstrap_send_for_testing{false};

}  // namespace spawn_internal

using spawn_internal::ChildRecord;
using spawn_internal::G;

std::string_view StartMethodName(StartMethod method) {
  switch (method) {
    case StartMethod::kFork: return "fork";
    case StartMethod::kSpawn: return "spawn";
    case StartMethod::kForkServer: return "forkserver";
  }
  return "unknown";
}

absl::Status SetStartMethod(StartMethod method, bool force) {
  auto& g = G();
  MutexLock lock(&g.mu);
  if (g.method.has_value() && !force) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the start method has already been set (to ", AbslView(StartMethodName(*g.method)),
        "); pass force = true to change it"));
  }
  g.method = method;
  return absl::OkStatus();
}

StartMethod GetStartMethod() {
  auto& g = G();
  MutexLock lock(&g.mu);
  return g.method.value_or(StartMethod::kForkServer);
}

void RegisterAfterFork(std::function<void()> hook) {
  auto& g = G();
  MutexLock lock(&g.mu);
  g.after_fork.push_back(std::move(hook));
}

void SetExecutable(std::string path) {
  auto& g = G();
  MutexLock lock(&g.mu);
  g.executable = std::move(path);
}

const std::string& CurrentProcessName() { return G().name; }
pid_t ParentPid() { return G().parent_pid; }

int CpuCount() {
  int n = 0;
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
  if (n <= 0) n = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  // A cgroup v2 quota ("max" or "<quota> <period>") bounds it too, rounded up.
  if (FILE* f = std::fopen("/sys/fs/cgroup/cpu.max", "re")) {
    char quota[32] = {0};
    long long period = 0;
    if (std::fscanf(f, "%31s %lld", quota, &period) == 2 && std::strcmp(quota, "max") != 0 &&
        period > 0) {
      const long long q = std::atoll(quota);
      if (q > 0) n = std::min<int>(n, static_cast<int>((q + period - 1) / period));
    }
    std::fclose(f);
  }
  return std::max(n, 1);
}

std::vector<StartMethod> GetAllStartMethods() {
  std::vector<StartMethod> all = {StartMethod::kForkServer, StartMethod::kFork,
                                  StartMethod::kSpawn};
  const StartMethod def = GetStartMethod();
  std::stable_partition(all.begin(), all.end(), [def](StartMethod m) { return m == def; });
  return all;
}

ProcessInfo CurrentProcess() {
  auto& g = G();
  return ProcessInfo{g.name, CurrentPid(), g.daemon, g.identity};
}

bool ParentProcessInfo::IsAlive() const {
  const int fd = G().parent_pidfd;
  if (fd >= 0 && pid == G().parent_pid) {
    pollfd p = {fd, POLLIN, 0};  // a pidfd turns readable when its process exits
    int r = RetryEintr([&] { return ::poll(&p, 1, 0); });
    if (r >= 0) return r == 0;
  }
  return ProcessAlive(pid);
}

std::optional<ParentProcessInfo> ParentProcess() {
  auto& g = G();
  if (g.parent_pid <= 0) return std::nullopt;
  return ParentProcessInfo{g.parent_name, g.parent_pid};
}

std::vector<ProcessInfo> ActiveChildren() {
  auto& g = G();
  std::vector<ProcessInfo> out;
  MutexLock lock(&g.mu);
  for (const std::shared_ptr<ChildRecord>& c : g.children) {
    MutexLock l(&c->mu);
    spawn_internal::ReapLocked(*c, /*block=*/false);  // finished ones are reaped on the way
    if (!c->exitcode.has_value()) out.push_back(ProcessInfo{c->name, c->pid, c->daemon, ""});
  }
  return out;
}

void ExitWhenParentExits(std::function<void()> last_words) {
  auto& g = G();
  const pid_t parent = g.parent_pid;
  if (parent <= 0) return;  // the main process has no mproc parent
  int fd = g.parent_pidfd;
  if (fd < 0 && HasFeature(Feature::kPidfdOpen)) {
    // No pidfd came with this process (a Zygote child whose pidfd could not be opened): open
    // one now. Only here could a parent that died already, its pid reused, be mistaken for
    // alive.
    fd = static_cast<int>(::syscall(SYS_pidfd_open, parent, 0));
    if (fd < 0 && errno == ESRCH) {  // the parent is gone already
      if (last_words) last_words();
      ::kill(::getpid(), SIGKILL);
    }
    g.parent_pidfd = fd;
  }
  // The watcher polls a copy of its own: the target may close descriptors it inherited (a
  // daemon's habit), and the number may then name another file.
  const int watched = fd >= 0 ? ::fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  std::thread([watched, parent, last_words = std::move(last_words)] {
    if (watched >= 0) {
      pollfd p = {watched, POLLIN, 0};  // a pidfd turns readable when its process exits
      for (;;) {
        int r = ::poll(&p, 1, -1);
        if (r < 0 && errno == EINTR) continue;
        if (r > 0 && (p.revents & POLLIN)) break;
        // Anything else (an error the kernel should never give here): watch by polling.
        while (ProcessAlive(parent)) ::usleep(100'000);
        break;
      }
    } else {
      // No pidfds on this kernel: look every 100 ms (a zombie parent is dead).
      while (ProcessAlive(parent)) ::usleep(100'000);
    }
    if (last_words) last_words();
    ::kill(::getpid(), SIGKILL);
  }).detach();
}

void Init(int argc, char** argv) {
  (void)argc;
  (void)argv;
  const char* v = std::getenv(spawn_internal::kSpawnEnv);
  if (v == nullptr || v[0] == '\0') return;
  spawn_internal::g_bootstrap_pending = false;
  int fd = std::atoi(v);
  ::unsetenv(spawn_internal::kSpawnEnv);  // the target's own children are not bootstraps
  using spawn_internal::FinishChild;
  using spawn_internal::ReportBootstrapError;

  absl::StatusOr<Frame> frame = ReadFrame(fd, Deadline::After(absl::Seconds(60)));
  if (!frame.ok()) {
    ::close(fd);
    ReportBootstrapError(absl::StrCat("reading the bootstrap socket: ", frame.status().ToString()));
    FinishChild(kBootstrapFailedExit);
  }
  if (frame->kind == spawn_internal::kBootstrapForkServer) {
    spawn_internal::RunForkServer(*std::move(frame), UniqueFd(fd));  // never returns
  }
  ::close(fd);
  FinishChild(spawn_internal::RunBootstrapFrame(*std::move(frame), /*fresh_image=*/true));
}

Process::Process(Process&& o) noexcept
    : identity_(std::move(o.identity_)),
      name_(std::move(o.name_)),
      daemon_(o.daemon_),
      method_(o.method_),
      payload_(std::move(o.payload_)),
      child_(std::move(o.child_)),
      closed_(o.closed_),
      owner_pid_(o.owner_pid_) {}

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    DropRecordIfDone();
    identity_ = std::move(o.identity_);
    name_ = std::move(o.name_);
    daemon_ = o.daemon_;
    method_ = o.method_;
    payload_ = std::move(o.payload_);
    child_ = std::move(o.child_);
    closed_ = o.closed_;
    owner_pid_ = o.owner_pid_;
  }
  return *this;
}

// A finished child's record (and pidfd) goes with its Process; a running child stays in the
// at-exit registry, to be joined at exit as CPython's.
Process::~Process() { DropRecordIfDone(); }

void Process::DropRecordIfDone() {
  if (child_ == nullptr || owner_pid_ != CurrentPid()) return;
  bool done;
  {
    MutexLock lock(&child_->mu);
    spawn_internal::ReapLocked(*child_, /*block=*/false);
    done = child_->exitcode.has_value();
  }
  if (done) spawn_internal::UnregisterChild(child_);
}

Process& Process::SetName(std::string name) {
  name_ = std::move(name);
  return *this;
}
Process& Process::SetDaemon(bool daemon) {
  daemon_ = daemon;
  return *this;
}
Process& Process::SetStartMethod(StartMethod method) {
  method_ = method;
  return *this;
}

absl::Status Process::CheckUsable(std::string_view what) const {
  if (closed_) {
    return absl::FailedPreconditionError(absl::StrCat(AbslView(what), ": the process object is closed"));
  }
  if (child_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(AbslView(what), ": the process was not started"));
  }
  if (owner_pid_ != CurrentPid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        AbslView(what), ": this Process was started by another process (pid ", owner_pid_, ")"));
  }
  return absl::OkStatus();
}

absl::Status Process::CheckStartable() {
  if (closed_) return absl::FailedPreconditionError("Start: the process object is closed");
  if (child_ != nullptr) {
    return absl::FailedPreconditionError("Start: a process can only be started once");
  }
  if (spawn_internal::g_bootstrap_pending) {
    absl::Status s = spawn_internal::ForgotInitError();
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return s;
  }
  if (G().daemon) {
    return absl::FailedPreconditionError(
        "Start: a daemon process is not allowed to have children (CPython's rule)");
  }
  return absl::OkStatus();
}

absl::Status Process::Start() {
  MPROC_RETURN_IF_ERROR(CheckStartable());
  StartMethod method = method_.value_or(GetStartMethod());
  absl::Status s;
  switch (method) {
    case StartMethod::kFork: s = StartFork(); break;
    case StartMethod::kSpawn: s = StartSpawn(); break;
    case StartMethod::kForkServer: s = StartForkServer(); break;
    default: return absl::InvalidArgumentError("Start: unknown start method");
  }
  // The child has its own copies now: drop ours (a descriptor passed to the child is closed
  // here, as a parent should once the child holds it).
  if (s.ok()) payload_ = spawn_internal::Payload();
  return s;
}

std::vector<absl::Status> Process::StartAll(std::span<Process* const> procs) {
  std::vector<absl::Status> out(procs.size());
  std::vector<size_t> batched;
  std::vector<EncodeBuffer> bufs;
  bufs.reserve(procs.size());
  for (size_t i = 0; i < procs.size(); ++i) {
    Process& p = *procs[i];
    if (p.method_.value_or(GetStartMethod()) != StartMethod::kForkServer) {
      out[i] = p.Start();
      continue;
    }
    out[i] = p.CheckStartable();
    if (!out[i].ok()) continue;
    absl::StatusOr<EncodeBuffer> buf = p.EncodeBootstrap("forkserver");
    if (!buf.ok()) {
      out[i] = buf.status();
      continue;
    }
    batched.push_back(i);
    bufs.push_back(*std::move(buf));
  }
  if (batched.empty()) return out;
  std::vector<EncodeBuffer*> ptrs;
  for (EncodeBuffer& b : bufs) ptrs.push_back(&b);
  std::vector<absl::StatusOr<spawn_internal::ForkServerChild>> children =
      spawn_internal::ForkServerStartMany(ptrs);
  for (size_t k = 0; k < batched.size(); ++k) {
    Process& p = *procs[batched[k]];
    if (!children[k].ok()) {
      out[batched[k]] = children[k].status();
      continue;
    }
    p.AdoptForkServerChild(*std::move(children[k]));
    p.payload_ = spawn_internal::Payload();
  }
  return out;
}

absl::Status Process::StartFork() {
  auto rec = std::make_shared<ChildRecord>();
  rec->daemon = daemon_;
  rec->name = name_;
  const pid_t parent = CurrentPid();
  const int parent_pidfd = spawn_internal::SelfPidfd();  // the child inherits it
  spawn_internal::WarnIfForkingThreads("Process::Start (fork start method)");
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    spawn_internal::SetIdentity(name_, parent, daemon_);
    spawn_internal::SetProcessIdentity(identity_);
    spawn_internal::SetParentPidfd(parent_pidfd);
    spawn_internal::BeginChild(/*fresh_image=*/false);
    spawn_internal::FinishChild(spawn_internal::RunGuarded(payload_.fork_runner));
  }
  rec->pid = pid;
  rec->pidfd = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  child_ = rec;
  owner_pid_ = CurrentPid();
  spawn_internal::RegisterChild(rec);
  return absl::OkStatus();
}

absl::Status Process::StartSpawn() {
  MPROC_ASSIGN_OR_RETURN(EncodeBuffer buf, EncodeBootstrap("spawn"));
  // A descriptor among the arguments that is not open would fail the bootstrap's send after
  // the child started: refuse it before starting anything.
  if (absl::Status open = CheckDescriptorsOpen(buf.fds()); !open.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("Start (spawn): ", open.message()));
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoToStatus(errno, "socketpair(spawn bootstrap)");
  }
  UniqueFd parent_end(sv[0]);
  UniqueFd child_end(sv[1]);
  MPROC_ASSIGN_OR_RETURN(spawn_internal::Launched launched,
                         spawn_internal::LaunchSelf(child_end.get()));
  child_end.Reset();

  auto rec = std::make_shared<ChildRecord>();
  rec->daemon = daemon_;
  rec->name = name_;
  rec->pid = launched.pid;
  rec->pidfd = std::move(launched.pidfd);

  // Send the bootstrap. A child that dies before reading it (or never calls Init) shows up in
  // its exit code; Start itself succeeded in starting it.
  absl::Status sent =
      spawn_internal::g_fail_bootstrap_send_for_testing.exchange(false)
          ? absl::UnavailableError("failed on purpose (a test)")
          : spawn_internal::SendBootstrap(parent_end.get(), buf, FdKind::kSeqpacketSocket,
                                          Deadline::After(absl::Seconds(60)));
  if (!sent.ok() && sent.code() != absl::StatusCode::kOutOfRange) {
    // The child is running without its bootstrap: end it rather than leave it waiting. This
    // object never had it as its child: Start may be called again.
    ::kill(rec->pid, SIGKILL);
    MutexLock lock(&rec->mu);
    spawn_internal::ReapLocked(*rec, /*block=*/true);
    return absl::Status(sent.code(), absl::StrCat("sending the spawn bootstrap: ", sent.message()));
  }
  child_ = rec;
  owner_pid_ = CurrentPid();
  spawn_internal::RegisterChild(rec);
  return absl::OkStatus();
}

namespace spawn_internal {
void AdoptChild(Process& p, std::shared_ptr<ChildRecord> rec) {
  rec->daemon = p.daemon_;
  rec->name = p.name_;
  p.child_ = rec;
  p.owner_pid_ = CurrentPid();
  p.payload_ = Payload();
  RegisterChild(rec);
}
}  // namespace spawn_internal

absl::Status Process::StartForkServer() {
  MPROC_ASSIGN_OR_RETURN(EncodeBuffer buf, EncodeBootstrap("forkserver"));
  MPROC_ASSIGN_OR_RETURN(spawn_internal::ForkServerChild fc, spawn_internal::ForkServerStart(buf));
  AdoptForkServerChild(std::move(fc));
  return absl::OkStatus();
}

void Process::AdoptForkServerChild(spawn_internal::ForkServerChild fc) {
  auto rec = std::make_shared<ChildRecord>();
  rec->daemon = daemon_;
  rec->name = name_;
  rec->pid = fc.pid;
  rec->pidfd = std::move(fc.pidfd);
  rec->status_conn = std::move(fc.status_conn);
  child_ = rec;
  owner_pid_ = CurrentPid();
  spawn_internal::RegisterChild(rec);
}

absl::StatusOr<EncodeBuffer> Process::EncodeBootstrap(std::string_view method) const {
  if (!payload_.not_spawnable.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Start (", AbslView(method), "): ", payload_.not_spawnable));
  }
  // Who the child is, then the target and its arguments.
  EncodeBuffer buf;
  spawn_internal::Bootstrap b;
  b.name = name_;
  b.identity = identity_;
  b.parent_pid = CurrentPid();
  b.parent_name = CurrentProcessName();
  b.daemon = daemon_;
  b.entry = payload_.entry;
  if (absl::StatusOr<CodeRef> ref = CodeRefFor(reinterpret_cast<const void*>(b.entry)); !ref.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Start (", AbslView(method), "): ", ref.status().message()));
  }
  // This process's pidfd rides along, so the child watches exactly its parent (no pid that
  // could be reused in between). The buffer borrows it, and so does `b` for the moment of the
  // Encode (which cannot fail): it stays open for this process's life.
  if (int self = spawn_internal::SelfPidfd(); self >= 0) b.parent_pidfd.emplace(self);
  Encode(b, buf);
  if (b.parent_pidfd.has_value()) (void)b.parent_pidfd->Release();
  MPROC_RETURN_IF_ERROR(payload_.encode(buf));
  return buf;
}

absl::Status Process::Join(absl::Duration timeout) {
  MPROC_RETURN_IF_ERROR(CheckUsable("Join"));
  ChildRecord& c = *child_;
  {
    MutexLock lock(&c.mu);
    if (c.exitcode.has_value()) return absl::OkStatus();
  }
  Deadline deadline = Deadline::After(timeout);
  if (c.status_conn.ok() || c.pidfd.ok()) {
    // A fork-server child's status arrives on its connection; a direct child's pidfd becomes
    // readable when it exits.
    int r = WaitReadable(c.status_conn.ok() ? c.status_conn.get() : c.pidfd.get(), deadline);
    if (r < 0) return ErrnoToStatus(-r, "poll(pidfd)");
    if (r == 0) return absl::OkStatus();  // timed out: still running
    MutexLock lock(&c.mu);
    spawn_internal::ReapLocked(c, /*block=*/true);
    return absl::OkStatus();
  }
  // No pidfd (kernels before 5.3): poll by pid.
  for (;;) {
    {
      MutexLock lock(&c.mu);
      spawn_internal::ReapLocked(c, /*block=*/false);
      if (c.exitcode.has_value()) return absl::OkStatus();
    }
    if (deadline.Expired()) return absl::OkStatus();
    ::usleep(1000);
  }
}

bool Process::IsAlive() {
  if (!CheckUsable("IsAlive").ok()) return false;
  MutexLock lock(&child_->mu);
  spawn_internal::ReapLocked(*child_, /*block=*/false);
  return !child_->exitcode.has_value();
}

std::optional<int> Process::exitcode() {
  if (!CheckUsable("exitcode").ok()) return std::nullopt;
  MutexLock lock(&child_->mu);
  spawn_internal::ReapLocked(*child_, /*block=*/false);
  return child_->exitcode;
}

pid_t Process::pid() const { return child_ ? child_->pid : 0; }

int Process::sentinel() const { return child_ && !closed_ ? child_->pidfd.get() : -1; }

absl::Status Process::Signal(int sig) {
  MutexLock lock(&child_->mu);
  if (child_->exitcode.has_value()) return absl::OkStatus();  // already reaped: nothing to do
  long r = child_->pidfd.ok()
               ? ::syscall(SYS_pidfd_send_signal, child_->pidfd.get(), sig, nullptr, 0)
               : ::kill(child_->pid, sig);
  if (r != 0 && errno != ESRCH) return ErrnoToStatus(errno, "pidfd_send_signal");
  return absl::OkStatus();
}

absl::Status Process::Terminate() {
  MPROC_RETURN_IF_ERROR(CheckUsable("Terminate"));
  return Signal(SIGTERM);
}

absl::Status Process::Kill() {
  MPROC_RETURN_IF_ERROR(CheckUsable("Kill"));
  return Signal(SIGKILL);
}

absl::Status Process::Close() {
  if (closed_) return absl::OkStatus();
  if (child_ != nullptr) {
    if (owner_pid_ != CurrentPid()) {
      return absl::FailedPreconditionError("Close: this Process belongs to another process");
    }
    MutexLock lock(&child_->mu);
    spawn_internal::ReapLocked(*child_, /*block=*/false);
    if (!child_->exitcode.has_value()) {
      return absl::FailedPreconditionError(
          "Close: cannot close a process while it is still running; Join or Terminate it first");
    }
    child_->pidfd.Reset();
    child_->status_conn.Reset();
  }
  closed_ = true;
  return absl::OkStatus();
}

}  // namespace mproc
