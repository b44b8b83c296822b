#include "spawn/zygote.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/process_id.h"
#include "base/status.h"
#include "base/syscall.h"
#include "serialize/codec.h"
#include "serialize/frame.h"
#include "spawn/internal/bootstrap.h"

namespace mproc {
namespace {

using spawn_internal::ChildRecord;
using spawn_internal::kReplyError;
using spawn_internal::kReplyStarted;

constexpr uint8_t kZygoteFork = 20;

struct ZygoteChild {
  pid_t pid;
  UniqueFd pidfd;
  UniqueFd status;  // the owner's status channel for this child
};

void ReplyError(int ctl, const std::string& msg) {
  (void)WriteFrame(ctl, kReplyError, std::as_bytes(std::span(msg.data(), msg.size())), {},
                   Deadline::After(absl::Seconds(5)), {}, FdKind::kSeqpacketSocket);
}

// The zygote: fork a child per request, report each exit; end when the owner closes the
// channel (or dies, which closes it).
[[noreturn]] void RunZygote(int ctl, pid_t owner, int owner_pidfd,
                            const std::function<int(UniqueFd)>& body) {
  spawn_internal::SetIdentity("Zygote", owner, false);
  spawn_internal::SetParentPidfd(owner_pidfd);
  ::signal(SIGINT, SIG_IGN);  // a terminal ^C goes to the owner, which decides
  std::vector<ZygoteChild> children;
  std::vector<pollfd> pfds;
  for (;;) {
    pfds.clear();
    pfds.push_back({ctl, POLLIN, 0});
    for (const ZygoteChild& c : children) pfds.push_back({c.pidfd.get(), POLLIN, 0});
    if (::poll(pfds.data(), pfds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      ::_exit(1);
    }
    for (size_t i = children.size(); i-- > 0;) {
      if (pfds[1 + i].revents == 0) continue;
      spawn_internal::ReportChildExit(children[i].pid, children[i].status.get());
      children.erase(children.begin() + static_cast<ptrdiff_t>(i));
    }
    if (pfds[0].revents == 0) continue;
    Frame frame;
    if (!ReadFrameInto(ctl, frame, Deadline::After(absl::Seconds(10)), {},
                       FdKind::kSeqpacketSocket)
             .ok()) {
      ::_exit(0);  // the owner is done (or gone); its children carry on and are reaped by init
    }
    if (frame.kind != kZygoteFork || frame.fds.empty() || frame.fds.size() > 2) {
      ReplyError(ctl, "malformed zygote request");
      continue;
    }
    std::string name, identity;
    DecodeReader r(frame.payload());
    if (!Codec<std::string>::Decode(r, name) || !Codec<std::string>::Decode(r, identity)) {
      name = "ZygoteChild";
    }
    UniqueFd status = std::move(frame.fds[0]);
    UniqueFd child_fd = frame.fds.size() == 2 ? std::move(frame.fds[1]) : UniqueFd();
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) {
      ReplyError(ctl, absl::StrCat("fork: ", ErrnoName(errno)));
      continue;
    }
    if (pid == 0) {
      // Nothing of the zygote's survives but the child's own descriptor.
      ::close(ctl);
      for (const ZygoteChild& c : children) {
        ::close(c.pidfd.get());
        ::close(c.status.get());
      }
      ::close(status.Release());
      // The child's parent, for ParentPid and ExitWhenParentExits, is the owner.
      std::optional<ParentProcessInfo> zygote_parent = ParentProcess();  // the owner
      spawn_internal::SetIdentity(std::move(name), owner, false,
                                  zygote_parent ? zygote_parent->name : std::string());
      spawn_internal::SetProcessIdentity(std::move(identity));  // names its own children
      spawn_internal::SetParentPidfd(owner_pidfd);
      spawn_internal::BeginChild(/*fresh_image=*/false);
      ::signal(SIGINT, SIG_DFL);
      spawn_internal::FinishChild(
          spawn_internal::RunGuarded([&] { return body(std::move(child_fd)); }));
    }
    child_fd.Reset();
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    EncodeBuffer reply;
    Encode(static_cast<int32_t>(pid), reply);
    if (pidfd.ok()) reply.AttachFd(pidfd.get());
    (void)WriteFrame(ctl, kReplyStarted, reply, Deadline::After(absl::Seconds(10)), {},
                     FdKind::kSeqpacketSocket);
    children.push_back(ZygoteChild{pid, std::move(pidfd), std::move(status)});
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Zygote>> Zygote::Start(std::function<int(UniqueFd)> body) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoToStatus(errno, "socketpair(zygote)");
  }
  // Listed before the fork, so that no child forked from here on (this zygote, another
  // thread's) keeps it (base/parent_only_fd.h).
  ParentOnlyFd mine{UniqueFd(sv[0])};
  UniqueFd theirs(sv[1]);
  const pid_t owner = CurrentPid();
  const int owner_pidfd = spawn_internal::SelfPidfd();  // inherited by the zygote
  spawn_internal::WarnIfForkingThreads("Zygote::Start (a fork Pool's Create)");
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoToStatus(errno, "fork(zygote)");
  if (pid == 0) {
    // The owner's ends of its helpers' channels (this one's `mine`, an earlier Pool's zygote
    // and workers) were let go by fork() (base/parent_only_fd.h): `mine` is a placeholder.
    mine.Reset();
    RunZygote(theirs.Release(), owner, owner_pidfd, body);
  }
  theirs.Reset();  // the zygote's now: no later fork of this process may keep a copy
  return std::unique_ptr<Zygote>(new Zygote(pid, owner, std::move(mine)));
}

Zygote::~Zygote() {
  if (pid_ <= 0 || owner_pid_ != CurrentPid()) return;  // a fork child's copy: not ours
  ctl_.Reset();  // the zygote reads end of file and exits
  for (int i = 0; i < 500; ++i) {  // up to 5 s, then no more patience
    int status;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) return;
    ::usleep(10'000);
  }
  ::kill(pid_, SIGKILL);
  RetryEintr([&] { return ::waitpid(pid_, nullptr, 0); });
}

absl::StatusOr<std::unique_ptr<Process>> Zygote::Fork(UniqueFd fd, std::string name,
                                                      bool numbered) {
  MutexLock lock(&mu_);
  if (!ctl_.ok()) return absl::UnavailableError("the zygote is gone");
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoToStatus(errno, "socketpair(zygote child status)");
  }
  UniqueFd status_mine(sv[0]);
  UniqueFd status_theirs(sv[1]);
  // The child's Process handle here, made first so its identity ("3", "2:1") can travel.
  auto p = std::make_unique<Process>([] { return 0; });
  if (numbered) name = absl::StrCat(name, "-", p->identity());
  EncodeBuffer req;
  Encode(name, req);
  Encode(p->identity(), req);
  req.AttachFd(status_theirs.get());
  if (fd.ok()) req.AttachFd(fd.get());  // none: the child's body gets an empty UniqueFd
  absl::Status s = WriteFrame(ctl_.get(), kZygoteFork, req, Deadline::After(absl::Seconds(10)),
                              {}, FdKind::kSeqpacketSocket);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("the zygote is gone: ", s.message()));
  Frame reply;
  s = ReadFrameInto(ctl_.get(), reply, Deadline::After(absl::Seconds(30)), {},
                    FdKind::kSeqpacketSocket);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("the zygote is gone: ", s.message()));
  if (reply.kind == kReplyError) {
    return absl::InternalError(absl::StrCat(
        "zygote: ", std::string(reinterpret_cast<const char*>(reply.payload().data()),
                                reply.payload().size())));
  }
  DecodeReader r(reply.payload());
  int32_t pid = 0;
  if (reply.kind != kReplyStarted || !Codec<int32_t>::Decode(r, pid) || pid <= 0) {
    return absl::InternalError("zygote: malformed reply");
  }
  auto rec = std::make_shared<ChildRecord>();
  rec->pid = pid;
  if (!reply.fds.empty()) rec->pidfd = std::move(reply.fds[0]);
  rec->status_conn = std::move(status_mine);
  p->SetName(std::move(name));
  spawn_internal::AdoptChild(*p, std::move(rec));
  return p;
}

}  // namespace mproc
