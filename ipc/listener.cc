#include "ipc/listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/process_id.h"
#include "base/spin.h"
#include "base/status.h"
#include "base/io_ring.h"
#include "base/syscall.h"
#include "serialize/auth.h"

namespace mproc {
namespace {

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = 0;
  int family = AF_UNIX;
};

absl::StatusOr<SockAddr> ToSockAddr(const Address& a) {
  SockAddr out;
  if (a.family == Address::Family::kTcp) {
    auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(a.port);
    if (::inet_pton(AF_INET, a.host.c_str(), &in->sin_addr) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("not a numeric IPv4 address: \"", a.host, "\""));
    }
    out.len = sizeof(sockaddr_in);
    out.family = AF_INET;
    return out;
  }
  auto* un = reinterpret_cast<sockaddr_un*>(&out.storage);
  un->sun_family = AF_UNIX;
  const size_t max = sizeof(un->sun_path) - 1;
  if (a.path.empty() || a.path.size() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("Unix socket address must be 1 to ", max, " bytes: \"", a.path, "\""));
  }
  if (a.path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("Unix socket address contains NUL (abstract names are "
                                      "given without the leading NUL)");
  }
  if (a.family == Address::Family::kAbstract) {
    un->sun_path[0] = '\0';
    std::memcpy(un->sun_path + 1, a.path.data(), a.path.size());
    out.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + a.path.size());
  } else {
    std::memcpy(un->sun_path, a.path.data(), a.path.size());
    out.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + a.path.size() + 1);
  }
  return out;
}

}  // namespace

std::string Address::ToString() const {
  switch (family) {
    case Family::kUnix: return path;
    case Family::kAbstract: return absl::StrCat("@", path);
    case Family::kTcp: return absl::StrCat(host, ":", port);
  }
  return "?";
}

absl::StatusOr<Listener> Listener::Create(const Address& address,
                                          std::optional<std::string> authkey, int backlog) {
  MPROC_ASSIGN_OR_RETURN(SockAddr sa, ToSockAddr(address));
  UniqueFd fd(::socket(sa.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.ok()) return ErrnoToStatus(errno, "socket(Listener)");
  if (sa.family == AF_INET) {
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa.storage), sa.len) != 0) {
    int err = errno;
    if (err == EADDRINUSE) {
      return absl::AlreadyExistsError(
          absl::StrCat("address already in use: ", address.ToString()));
    }
    return ErrnoToStatus(err, absl::StrCat("bind(", address.ToString(), ")"));
  }
  if (::listen(fd.get(), backlog) != 0) {
    int err = errno;
    if (address.family == Address::Family::kUnix) ::unlink(address.path.c_str());
    return ErrnoToStatus(err, absl::StrCat("listen(", address.ToString(), ")"));
  }
  Listener l;
  l.address_ = address;
  if (sa.family == AF_INET) {
    sockaddr_in bound{};
    socklen_t len = sizeof(bound);
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
      l.address_.port = ntohs(bound.sin_port);
    }
  }
  // Non-blocking: Accept takes every waiting client in one go and must not block when none
  // is left (or another process sharing the socket took it).
  if (SetNonBlocking(fd.get(), true) < 0) return ErrnoToStatus(errno, "fcntl(O_NONBLOCK, Listener)");
  l.fd_ = std::move(fd);
  l.authkey_ = std::move(authkey);
  l.owner_pid_ = CurrentPid();
  return l;
}

Listener::Listener(Listener&& o) noexcept
    : fd_(std::move(o.fd_)),
      address_(std::move(o.address_)),
      authkey_(std::move(o.authkey_)),
      owner_pid_(o.owner_pid_),
      handshake_timeout_(o.handshake_timeout_),
      pending_(std::move(o.pending_)),
      pending_pid_(o.pending_pid_) {}

Listener& Listener::operator=(Listener&& o) noexcept {
  if (this != &o) {
    Close();
    fd_ = std::move(o.fd_);
    address_ = std::move(o.address_);
    authkey_ = std::move(o.authkey_);
    owner_pid_ = o.owner_pid_;
    handshake_timeout_ = o.handshake_timeout_;
    pending_ = std::move(o.pending_);
    pending_pid_ = o.pending_pid_;
  }
  return *this;
}

UniqueFd Listener::Release() {
  pending_.clear();
  return std::move(fd_);
}

void Listener::Close() {
  pending_.clear();
  if (!fd_.ok()) return;
  fd_.Reset();
  // The socket file belongs to the process that bound it, not to a fork child's copy.
  if (address_.family == Address::Family::kUnix && owner_pid_ == CurrentPid()) {
    ::unlink(address_.path.c_str());
  }
}

absl::StatusOr<Connection> Listener::Accept(absl::Duration timeout) {
  if (!fd_.ok()) return absl::FailedPreconditionError("listener is closed");
  Deadline deadline = Deadline::After(timeout);
  if (authkey_.has_value()) return AcceptAuthenticated(deadline);
  // Clients often come in bursts: spin briefly before blocking (base/syscall.h).
  SpinUntilReady(fd_.get(), POLLIN, deadline);
  for (;;) {
    UniqueFd conn(RetryEintr([&] { return ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC); }));
    if (conn.ok()) return Connection::FromFd(std::move(conn), true, true);
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) {
      return ErrnoToStatus(errno, absl::StrCat("accept(", address_.ToString(), ")"));
    }
    int ready = WaitReadable(fd_.get(), deadline);
    if (ready < 0) return ErrnoToStatus(-ready, "poll(listener)");
    if (ready == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("no client connected to ", address_.ToString(), " in time"));
    }
  }
}

absl::StatusOr<Connection> Listener::AcceptAuthenticated(const Deadline& deadline) {
  // A fork child's copy of its parent's handshakes: the parent runs them; reading the same
  // sockets here would corrupt both. The child's copies of those sockets just close.
  if (pending_pid_ != CurrentPid()) {
    pending_.clear();
    pending_pid_ = CurrentPid();
  }
  std::vector<pollfd> pfds;
  for (;;) {
    // Clients whose handshake ran out of time are dropped: they never became connections.
    const int64_t now = MonotonicNowNs();
    std::erase_if(pending_, [now](const PendingClient& c) { return c.deadline_ns <= now; });
    // Wait for a new client or a handshake's next bytes, until the caller's deadline or the
    // first handshake deadline, whichever comes first.
    pfds.clear();
    pfds.push_back({fd_.get(), POLLIN, 0});
    int64_t wake_ns = deadline.infinite() ? INT64_MAX : deadline.monotonic_ns();
    for (const PendingClient& c : pending_) {
      pfds.push_back({c.fd.get(), POLLIN, 0});
      wake_ns = std::min(wake_ns, c.deadline_ns);
    }
    const Deadline wake = wake_ns == INT64_MAX ? Deadline::Infinite()
                                               : Deadline::AtMonotonicNs(wake_ns);
    // A handshake under way expects its client's next message within microseconds, and a
    // client often follows another: look briefly (base/spin.h, one poll per look) before
    // sleeping, as a blocking handshake's read does (SpinUntilReady). A sleep here costs a
    // cross-CPU wake-up per handshake step (the connect_auth row went from ~50 to ~136 µs
    // without it); an idle listener pays one spin budget per Accept, then sleeps.
    SpinUntil([&] { return ::poll(pfds.data(), pfds.size(), 0) > 0; }, wake);
    int n = WaitEvents(std::span<pollfd>(pfds), wake);
    if (n < 0) return ErrnoToStatus(-n, "poll(listener)");
    // Handshakes first, in the order the clients came: the earliest finished one wins.
    for (size_t i = 0; i < pending_.size(); ++i) {
      if (pfds[1 + i].revents == 0) continue;
      absl::StatusOr<bool> done = pending_[i].handshake->OnReadable();
      if (done.ok() && !*done) continue;
      UniqueFd conn = std::move(pending_[i].fd);
      pending_.erase(pending_.begin() + static_cast<ptrdiff_t>(i));
      if (!done.ok()) return done.status();  // this client failed (wrong key, ...)
      if (SetNonBlocking(conn.get(), false) < 0) {
        return ErrnoToStatus(errno, "fcntl(~O_NONBLOCK, accepted connection)");
      }
      return Connection::FromFd(std::move(conn), true, true);
    }
    if (pfds[0].revents != 0) {
      // Every client waiting to be accepted starts its handshake now.
      for (;;) {
        UniqueFd conn(RetryEintr([&] {
          return ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        }));
        if (!conn.ok()) {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) break;
          return ErrnoToStatus(errno, absl::StrCat("accept(", address_.ToString(), ")"));
        }
        PendingClient c;
        c.handshake = std::make_unique<ServerHandshaker>(conn.get(), *authkey_);
        if (!c.handshake->Start().ok()) continue;  // gone already
        c.deadline_ns = Deadline::After(handshake_timeout_).monotonic_ns();
        c.fd = std::move(conn);
        pending_.push_back(std::move(c));
      }
    }
    if (deadline.Expired()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no client connected to ", address_.ToString(), " and authenticated in time"));
    }
  }
}

absl::StatusOr<Connection> Client(const Address& address, std::optional<std::string> authkey,
                                  absl::Duration timeout) {
  MPROC_ASSIGN_OR_RETURN(SockAddr sa, ToSockAddr(address));
  Deadline deadline = Deadline::After(timeout);
  UniqueFd fd(::socket(sa.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.ok()) return ErrnoToStatus(errno, "socket(Client)");
  if (RetryEintr([&] {
        return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa.storage), sa.len);
      }) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("connect(", address.ToString(), ")"));
  }
  if (authkey.has_value()) MPROC_RETURN_IF_ERROR(ClientHandshake(fd.get(), *authkey, deadline));
  return Connection::FromFd(std::move(fd), true, true);
}

}  // namespace mproc
