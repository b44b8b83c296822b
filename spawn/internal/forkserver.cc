// The fork server: a clean, single-threaded process started with spawn on first use, which
// forks each forkserver child on request (spawn/process.h).
//
// Client side (Process::Start with kForkServer): one control connection per owner process to
// the server's Unix socket (a 0600 socket in a fresh 0700 directory), authenticated once with
// serialize/'s CPython handshake using the server's own random key. Each Start sends, on that
// connection, the child's bootstrap frame (the same frame a spawned child reads) with one
// extra descriptor appended: its end of a fresh socketpair, the child's status channel. The
// server replies with the child's pid and its pidfd (SCM_RIGHTS, sent before the server can
// reap it), and when it reaps the child it writes the exit status to the status channel,
// which is how Join learns it. One round trip per Start; requests are serialised.
//
// Server side (RunForkServer, reached from Init in the server process): poll the owner's
// bootstrap socket (end of file = the owner is gone: clean up and exit), the listening socket,
// the control connections and each child's pidfd; fork on request, reap on exit, report.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "base/owner.h"
#include "base/process_id.h"
#include "base/socket_dir.h"
#include "base/status.h"
#include "base/syscall.h"
#include "serialize/auth.h"
#include "spawn/internal/bootstrap.h"

namespace mproc {
namespace spawn_internal {
namespace {

struct ForkServerConfig {
  int32_t owner_pid = 0;
  std::string authkey;
  std::string dir;
  std::string socket_path;
  void (*preload)() = nullptr;
};
MPROC_CODEC_FIELDS(ForkServerConfig, owner_pid, authkey, dir, socket_path, preload)

// ---------------------------------------------------------------- client side

struct ServerState {
  Mutex mu;
  pid_t owner_pid ABSL_GUARDED_BY(mu) = 0;  // the process that started the server
  pid_t pid ABSL_GUARDED_BY(mu) = 0;
  UniqueFd pidfd ABSL_GUARDED_BY(mu);
  UniqueFd owner_sock ABSL_GUARDED_BY(mu);  // the server exits when this closes
  UniqueFd control ABSL_GUARDED_BY(mu);     // the authenticated request connection
  std::string dir ABSL_GUARDED_BY(mu);
  std::string path ABSL_GUARDED_BY(mu);
  std::string key ABSL_GUARDED_BY(mu);
  void (*preload)() ABSL_GUARDED_BY(mu) = nullptr;
  bool atexit_registered ABSL_GUARDED_BY(mu) = false;
};

ServerState& State() {
  static auto* s = new ServerState;
  return *s;
}

// A fork child does not share its parent's server: it starts its own when it needs one.
// Runs in the fork child (pthread_atfork), where only the forking thread exists and mu is
// re-created rather than taken: the analysis cannot see that, hence no analysis here.
void ForgetServerAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  ServerState& s = State();
  new (&s.mu) Mutex;
  s.pid = 0;
  s.pidfd.Reset();
  s.owner_sock.Reset();
  s.control.Reset();
  s.dir.clear();
  s.path.clear();
  s.key.clear();
  s.atexit_registered = false;  // the parent's sits below the child's exit barrier
}

[[maybe_unused]] const int kAtfork = [] {
  pthread_atfork(nullptr, nullptr, ForgetServerAfterFork);
  return 0;
}();

void RemoveSocketDir(const std::string& dir, const std::string& path) {
  if (!path.empty()) ::unlink(path.c_str());
  if (!dir.empty()) ::rmdir(dir.c_str());
}

// A wait status as an exit code: the code, or -signal.
int ExitCodeOf(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status); }

// A server that exited (with `code`) before serving its first request: why it most likely
// did, after `what` went wrong.
absl::Status ServerDiedUnserved(const std::string& what, int code) {
  return absl::UnavailableError(absl::StrCat(
      what, "; the server (just started) exited with status ", code, " before serving. Does "
      "main() call mproc::Init(argc, argv) first? (gtest binaries: link //spawn:test_main)"));
}

// Ends this process's server: closing the owner socket makes it exit; reap it (bounded).
// Returns its exit status (-signal when killed; 0 when there was none).
int StopServerLocked(ServerState& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
  if (s.pid == 0) return 0;
  s.control.Reset();
  s.owner_sock.Reset();
  bool exited = s.pidfd.ok() && WaitReadable(s.pidfd.get(), Deadline::After(absl::Seconds(5))) > 0;
  if (!exited) ::kill(s.pid, SIGKILL);
  int status = 0;
  while (::waitpid(s.pid, &status, 0) < 0 && errno == EINTR) {
  }
  RemoveSocketDir(s.dir, s.path);
  s.pid = 0;
  s.pidfd.Reset();
  s.dir.clear();
  s.path.clear();
  s.key.clear();
  return ExitCodeOf(status);
}

bool ServerAliveLocked(const ServerState& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
  if (s.pid == 0 || s.owner_pid != CurrentPid()) return false;
  if (!s.pidfd.ok()) return ProcessAlive(s.pid);  // a zombie server is gone (base/owner.h)
  return WaitReadable(s.pidfd.get(), Deadline::AtMonotonicNs(0)) == 0;  // readable = exited
}

void ShutdownAtExit() {
  JoinChildrenForExit();  // forkserver children report their status through the server
  ShutdownForkServer();
}

absl::Status StartServerLocked(ServerState& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
  MPROC_ASSIGN_OR_RETURN(std::string dir, MakeSocketDir("forkserver"));
  std::string path = dir + "/socket";
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.ok()) return ErrnoToStatus(errno, "socket(AF_UNIX) for the fork server");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::chmod(path.c_str(), 0600) != 0 || ::listen(listener.get(), 128) != 0) {
    int err = errno;
    RemoveSocketDir(dir, path);
    return ErrnoToStatus(err, absl::StrCat("bind/listen(", path, ")"));
  }

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    RemoveSocketDir(dir, path);
    return ErrnoToStatus(errno, "socketpair(fork server bootstrap)");
  }
  UniqueFd owner_end(sv[0]);
  UniqueFd server_end(sv[1]);
  absl::StatusOr<Launched> launched = LaunchSelf(server_end.get());
  server_end.Reset();
  if (!launched.ok()) {
    RemoveSocketDir(dir, path);
    return launched.status();
  }

  ForkServerConfig config;
  config.owner_pid = CurrentPid();
  config.authkey = RandomBytes(32);
  config.dir = dir;
  config.socket_path = path;
  config.preload = s.preload;
  EncodeBuffer buf;
  Encode(config, buf);
  buf.AttachFd(listener.get());  // fd 0 of the frame: the listening socket
  absl::Status sent = WriteFrame(owner_end.get(), kBootstrapForkServer, buf,
                                 Deadline::After(absl::Seconds(30)), {}, FdKind::kSeqpacketSocket);
  if (!sent.ok()) {
    // A server gone before its bootstrap arrived (OUT_OF_RANGE) has exited on its own: most
    // likely main() ran without mproc::Init and refused. Its status says; a live one is killed.
    const bool gone = absl::IsOutOfRange(sent);
    if (!gone) ::kill(launched->pid, SIGKILL);
    int status = 0;
    while (::waitpid(launched->pid, &status, 0) < 0 && errno == EINTR) {
    }
    RemoveSocketDir(dir, path);
    if (gone) {
      return ServerDiedUnserved(absl::StrCat("starting the fork server: ", sent.message()),
                                ExitCodeOf(status));
    }
    return absl::UnavailableError(absl::StrCat("starting the fork server: ", sent.message()));
  }
  s.owner_pid = CurrentPid();
  s.pid = launched->pid;
  s.pidfd = std::move(launched->pidfd);
  s.owner_sock = std::move(owner_end);
  s.dir = dir;
  s.path = path;
  s.key = config.authkey;
  if (!s.atexit_registered) {
    s.atexit_registered = true;
    std::atexit(ShutdownAtExit);
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> Connect(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.ok()) return ErrnoToStatus(errno, "socket(AF_UNIX)");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (RetryEintr([&] {
        return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      }) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("connect(", path, ")"));
  }
  return fd;
}

// ---------------------------------------------------------------- server side

struct ServedChild {
  pid_t pid;
  UniqueFd pidfd;
  UniqueFd status;  // the requester's status channel
};

// A client connected, its handshake running (ServerHandshaker: never blocks the server, so a
// process that connects and never speaks delays no Start).
struct PendingControl {
  UniqueFd fd;
  std::unique_ptr<ServerHandshaker> handshake;
  int64_t deadline_ns = 0;
};

struct ServerFds {
  int owner;
  int listener;
  const std::vector<UniqueFd>* controls;
  const std::vector<ServedChild>* children;
  const std::vector<PendingControl>* pending;
};

[[noreturn]] void ServerExit(const ForkServerConfig& config, int code) {
  RemoveSocketDir(config.dir, config.socket_path);
  ::_exit(code);
}

void ReplyError(int control, std::string_view msg) {
  (void)WriteFrame(control, kReplyError, std::as_bytes(std::span(msg.data(), msg.size())), {},
                   Deadline::After(absl::Seconds(5)), {}, FdKind::kStreamSocket);
}

// Reads one request from `control` and forks its child. False when the connection is done
// (closed or broken); the child, if any, is appended to `children`.
bool Serve(int control, const ServerFds& fds, std::vector<ServedChild>& children) {
  Frame frame;
  if (!ReadFrameInto(control, frame, Deadline::After(absl::Seconds(60)), {},
                     FdKind::kStreamSocket)
           .ok()) {
    return false;
  }
  if (frame.fds.empty()) {
    ReplyError(control, "request without its status channel");
    return false;
  }
  UniqueFd status = std::move(frame.fds.back());
  frame.fds.pop_back();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    ReplyError(control, absl::StrCat("fork: ", ErrnoName(errno)));
    return true;
  }
  if (pid == 0) {
    // The child: nothing of the server's survives but the bootstrap's own descriptors.
    ::close(fds.listener);
    ::close(fds.owner);
    for (const UniqueFd& c : *fds.controls) ::close(c.get());
    for (const PendingControl& c : *fds.pending) ::close(c.fd.get());
    for (const ServedChild& c : *fds.children) {
      ::close(c.pidfd.get());
      ::close(c.status.get());
    }
    ::close(status.Release());
    FinishChild(RunBootstrapFrame(std::move(frame), /*fresh_image=*/false));
  }
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  EncodeBuffer reply;
  Encode(static_cast<int32_t>(pid), reply);
  if (pidfd.ok()) reply.AttachFd(pidfd.get());
  absl::Status sent = WriteFrame(control, kReplyStarted, reply, Deadline::After(absl::Seconds(10)),
                                 {}, FdKind::kStreamSocket);
  children.push_back(ServedChild{pid, std::move(pidfd), std::move(status)});
  return sent.ok();
}


}  // namespace

absl::StatusOr<ForkServerChild> ForkServerStart(EncodeBuffer& buf) {
  EncodeBuffer* one[1] = {&buf};
  return std::move(ForkServerStartMany(one).front());
}

std::vector<absl::StatusOr<ForkServerChild>> ForkServerStartMany(
    std::span<EncodeBuffer* const> bufs) {
  ServerState& s = State();
  MutexLock lock(&s.mu);  // one batch at a time on the control connection
  const size_t n = bufs.size();
  std::vector<absl::StatusOr<ForkServerChild>> out;
  std::vector<UniqueFd> status_mine(n);
  std::vector<UniqueFd> status_theirs(n);  // open until their requests are sent
  for (size_t i = 0; i < n; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      absl::Status e = ErrnoToStatus(errno, "socketpair(fork server status channel)");
      for (size_t k = 0; k < n; ++k) out.push_back(e);
      return out;
    }
    status_mine[i] = UniqueFd(sv[0]);
    status_theirs[i] = UniqueFd(sv[1]);
    bufs[i]->AttachFd(status_theirs[i].get());  // the last descriptor of the request
  }
  // Every request goes out before the first reply is read: the server forks the children one
  // after the other, and the round trips overlap.
  absl::Status st;
  for (int attempt = 0;; ++attempt) {
    st = absl::OkStatus();
    bool fresh = false;
    if (!ServerAliveLocked(s)) {
      StopServerLocked(s);  // reap a dead one, if any
      st = StartServerLocked(s);
      if (!st.ok()) break;
      fresh = true;
    }
    if (!s.control.ok()) {
      absl::StatusOr<UniqueFd> conn = Connect(s.path);
      st = conn.status();
      if (conn.ok()) st = ClientHandshake(conn->get(), s.key, Deadline::After(absl::Seconds(10)));
      if (st.ok()) s.control = *std::move(conn);
    }
    size_t sent = 0;
    while (st.ok() && sent < n) {
      st = SendBootstrap(s.control.get(), *bufs[sent], FdKind::kStreamSocket,
                         Deadline::After(absl::Seconds(60)));
      if (st.ok()) ++sent;
    }
    out.clear();
    for (size_t i = 0; i < sent; ++i) {
      Frame reply;
      absl::Status r = ReadFrameInto(s.control.get(), reply, Deadline::After(absl::Seconds(60)),
                                     {}, FdKind::kStreamSocket);
      if (!r.ok()) {
        st = r;
        break;
      }
      if (reply.kind == kReplyError) {
        out.push_back(absl::UnavailableError(absl::StrCat(
            "fork server could not start the child: ",
            absl::string_view(reinterpret_cast<const char*>(reply.payload().data()),
                              reply.payload().size()))));
        continue;
      }
      DecodeReader rd(reply.payload(), std::move(reply.fds));
      int32_t pid = 0;
      if (reply.kind != kReplyStarted || !Codec<int32_t>::Decode(rd, pid) || pid <= 0) {
        st = absl::InternalError("fork server: malformed reply");
        break;
      }
      ForkServerChild child;
      child.pid = pid;
      (void)rd.TakeFd(0, &child.pidfd);
      child.status_conn = std::move(status_mine[i]);
      out.push_back(std::move(child));
    }
    if (st.ok()) break;
    if (out.empty() && fresh) {
      // A server that dies before serving its first request will do so again: say why.
      const int code = StopServerLocked(s);
      st = ServerDiedUnserved(absl::StrCat("fork server: ", st.message()), code);
      break;
    }
    // The server may have died under us since it last served: restart it once, unless some
    // child of this batch already started (its request cannot be sent twice).
    StopServerLocked(s);
    if (attempt == 0 && out.empty()) continue;
    st = absl::UnavailableError(absl::StrCat("fork server: ", st.message()));
    break;
  }
  // Requests that got no reply fail with the batch's error.
  while (out.size() < n) out.push_back(st.ok() ? absl::InternalError("fork server: no reply") : st);
  return out;
}

void ReportChildExit(pid_t pid, int status_conn) {
  int status = 0;
  pid_t r = RetryEintr([&] { return ::waitpid(pid, &status, 0); });
  int32_t code = r == pid ? ExitCodeOf(status)
                          : kServerGoneExit;
  EncodeBuffer b;
  Encode(code, b);
  (void)WriteFrame(status_conn, kReplyExited, b, Deadline::After(absl::Seconds(5)), {},
                   FdKind::kSeqpacketSocket);
}

absl::StatusOr<int> ReadExitStatus(int status_conn, const Deadline& deadline) {
  int ready = WaitReadable(status_conn, deadline);
  if (ready < 0) return ErrnoToStatus(-ready, "poll(fork server connection)");
  if (ready == 0) return absl::DeadlineExceededError("child still running");
  Frame f;
  absl::Status s = ReadFrameInto(status_conn, f, Deadline::After(absl::Seconds(5)), {},
                                 FdKind::kSeqpacketSocket);
  if (!s.ok()) return kServerGoneExit;  // the server died: the status is lost
  DecodeReader r(f.payload());
  int32_t code = 0;
  if (f.kind != kReplyExited || !Codec<int32_t>::Decode(r, code)) return kServerGoneExit;
  return code;
}

[[noreturn]] void RunForkServer(Frame bootstrap, UniqueFd owner) {
  std::vector<UniqueFd> fds = std::move(bootstrap.fds);
  DecodeReader r(bootstrap.payload());
  ForkServerConfig config;
  if (!Codec<ForkServerConfig>::Decode(r, config) || fds.size() != 1) {
    ReportBootstrapError("malformed fork server bootstrap");
    FinishChild(kBootstrapFailedExit);
  }
  UniqueFd listener = std::move(fds[0]);
  SetIdentity("ForkServer", config.owner_pid, false);
  ::signal(SIGINT, SIG_IGN);  // a terminal ^C goes to the owner, which decides
  if (config.preload != nullptr) config.preload();

  std::vector<ServedChild> children;
  std::vector<UniqueFd> controls;
  std::vector<PendingControl> pending;
  std::vector<pollfd> pfds;
  for (;;) {
    const int64_t now = MonotonicNowNs();
    std::erase_if(pending, [now](const PendingControl& c) { return c.deadline_ns <= now; });
    int64_t wake_ns = INT64_MAX;
    for (const PendingControl& c : pending) wake_ns = std::min(wake_ns, c.deadline_ns);
    pfds.clear();
    pfds.push_back({owner.get(), POLLIN, 0});
    pfds.push_back({listener.get(), POLLIN, 0});
    for (const UniqueFd& c : controls) pfds.push_back({c.get(), POLLIN, 0});
    for (const ServedChild& c : children) pfds.push_back({c.pidfd.get(), POLLIN, 0});
    const size_t pending_base = pfds.size();
    for (const PendingControl& c : pending) pfds.push_back({c.fd.get(), POLLIN, 0});
    const int timeout_ms =
        wake_ns == INT64_MAX ? -1 : static_cast<int>(std::max<int64_t>(0, wake_ns - now) / 1'000'000 + 1);
    int n = ::poll(pfds.data(), pfds.size(), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      ServerExit(config, 1);
    }
    if (pfds[0].revents != 0) {
      char c;
      if (::read(owner.get(), &c, 1) <= 0) ServerExit(config, 0);  // the owner is gone
    }
    const size_t child_base = 2 + controls.size();
    // Exits first (children are only appended below, so indices hold).
    for (size_t i = children.size(); i-- > 0;) {
      if (pfds[child_base + i].revents == 0) continue;
      ReportChildExit(children[i].pid, children[i].status.get());
      children.erase(children.begin() + static_cast<ptrdiff_t>(i));
    }
    ServerFds fds{owner.get(), listener.get(), &controls, &children, &pending};
    for (size_t i = controls.size(); i-- > 0;) {
      if (pfds[2 + i].revents == 0) continue;
      if (!Serve(controls[i].get(), fds, children)) {
        controls.erase(controls.begin() + static_cast<ptrdiff_t>(i));
      }
    }
    // Handshakes that moved on: a finished one becomes a control connection.
    for (size_t i = pending.size(); i-- > 0;) {
      if (pfds[pending_base + i].revents == 0) continue;
      absl::StatusOr<bool> done = pending[i].handshake->OnReadable();
      if (done.ok() && !*done) continue;
      if (done.ok() && SetNonBlocking(pending[i].fd.get(), false) == 0) {
        controls.push_back(std::move(pending[i].fd));
      }
      pending.erase(pending.begin() + static_cast<ptrdiff_t>(i));
    }

    if (pfds[1].revents & POLLIN) {
      UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (conn.ok()) {
        PendingControl c;
        c.handshake = std::make_unique<ServerHandshaker>(conn.get(), config.authkey);
        c.deadline_ns = Deadline::After(absl::Seconds(10)).monotonic_ns();
        c.fd = std::move(conn);
        if (c.handshake->Start().ok()) pending.push_back(std::move(c));
      }
    }
  }
}

}  // namespace spawn_internal

void SetForkServerPreload(void (*preload)()) {
  spawn_internal::ServerState& s = spawn_internal::State();
  MutexLock lock(&s.mu);
  s.preload = preload;
}

void ShutdownForkServer() {
  spawn_internal::ServerState& s = spawn_internal::State();
  MutexLock lock(&s.mu);
  if (s.owner_pid != CurrentPid()) return;
  spawn_internal::StopServerLocked(s);
}

pid_t ForkServerPid() {
  spawn_internal::ServerState& s = spawn_internal::State();
  MutexLock lock(&s.mu);
  return s.owner_pid == CurrentPid() ? s.pid : 0;
}

}  // namespace mproc
