#include "manager/internal/client.h"

#include <pthread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/process_id.h"
#include "base/spin.h"
#include "base/status.h"
#include "base/syscall.h"
#include "serialize/auth.h"

namespace mproc::manager_internal {

void TuneTcp(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return;
  if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) return;
  const int on = 1, idle = 30, interval = 10, count = 3;
  const unsigned user_timeout_ms = 60'000;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));  // requests are small
}

namespace {

// What a fork child inherited from its parent, per manager: the lease the parent announced,
// and the child's own references made from inherited proxies so far.
struct Inherited {
  uint64_t token = 0;
  bool claimed = false;
  std::map<uint64_t, int64_t> leased;  // object -> references the claimed lease gave us
  std::map<uint64_t, std::weak_ptr<ProxyRef>> refs;
};

struct Registry {
  Mutex mu;
  pid_t pid ABSL_GUARDED_BY(mu) = 0;
  // By address and instance nonce.
  std::map<std::string, std::shared_ptr<ManagerClient>> clients ABSL_GUARDED_BY(mu);
  // A fork child's, by the same key.
  std::map<std::string, Inherited> inherited ABSL_GUARDED_BY(mu);
};

Registry& Clients() {
  static auto* r = new Registry;  // never destroyed: proxies may outlive static destruction
  return *r;
}

std::string KeyOf(const ManagerRef& ref) {
  return absl::StrCat(ref.address.ToString(), "#", ref.nonce);
}

absl::StatusOr<std::vector<uint64_t>> FromBytesVector(const std::string& bytes) {
  return Decode<std::vector<uint64_t>>(AsBytes(bytes));
}

uint64_t RandomId() {
  std::string r = RandomBytes(8);
  uint64_t v;
  std::memcpy(&v, r.data(), 8);
  return v | 1;
}

}  // namespace

absl::StatusOr<std::string> ReplyReader::Next(int fd, const Deadline& deadline) {
  for (;;) {
    const std::string_view have(buf_.get() + begin_, end_ - begin_);
    const FrameAt f = PeekFrame(have);
    if (f.state == FrameAt::kTooLong) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a malformed reply: its length is above the limit of ", kMaxMessage, " bytes"));
    }
    if (f.state == FrameAt::kWhole) {
      std::string body(have.substr(4, f.len));
      begin_ += 4 + f.len;
      if (begin_ == end_) {
        begin_ = end_ = 0;
        if (cap_ > kKeptBytes) {  // a large reply's room is not kept
          buf_.reset();
          cap_ = 0;
        }
      }
      return body;
    }
    // Room for the rest of this reply, and at least a chunk more.
    if (begin_ > 0) {
      std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    const size_t room = std::max(kChunk, 4 + f.len + kChunk / 2);
    if (cap_ < room) {
      auto bigger = std::make_unique_for_overwrite<char[]>(room);
      if (end_ > 0) std::memcpy(bigger.get(), buf_.get(), end_);
      buf_ = std::move(bigger);
      cap_ = room;
    }
    ssize_t n = -1;
    auto received = [&] {
      n = ::recv(fd, buf_.get() + end_, cap_ - end_, MSG_DONTWAIT);
      return n >= 0 || (errno != EAGAIN && errno != EINTR);
    };
    // A reply usually comes within microseconds: look (each look a recv) before sleeping.
    // Readable after the sleep: the recv is made here, since SpinUntil makes no look at all
    // when the spin budget is 0.
    if (!SpinUntil(received, deadline)) {
      const int w = WaitReadable(fd, deadline);
      if (w < 0) return ErrnoToStatus(-w, "poll(manager connection)");
      if (w == 0) return absl::DeadlineExceededError("the manager did not answer in time");
      if (!received()) continue;
    }
    if (n == 0) return absl::OutOfRangeError("the manager closed the connection");
    if (n < 0) {
      if (errno == ECONNRESET) return absl::OutOfRangeError("the manager reset the connection");
      return ErrnoToStatus(errno, "recv(manager connection)");
    }
    end_ += static_cast<size_t>(n);
  }
}

void ReplyReader::Reset() {
  begin_ = end_ = 0;
  buf_.reset();
  cap_ = 0;
}

// A fork child inherits its parent's connections: they are the parent's, and a child writing
// on one would interleave with the parent's calls. The child closes them and starts afresh.
// It runs in the child before anything else there, one thread, on mutexes it makes anew: it
// takes none of them (hence no analysis).
void ForgetClientsAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  Registry& r = Clients();
  new (&r.mu) Mutex;  // the parent may have held it at the fork
  r.inherited.clear();
  for (auto& [key, client] : r.clients) {
    // The lease the parent announced for this fork is ours to claim on first use.
    r.inherited[key].token = client->fork_token_;
    new (&client->mu_) Mutex;
    new (&client->send_mu_) Mutex;
    new (&client->cv_) CondVar;
    if (client->conn_.has_value()) {
      const int fd = client->conn_->fileno();
      if (fd >= 0) ::close(fd);
      // The Connection object keeps a stale number; never touched again (leaked on purpose).
      (void)new std::optional<Connection>(std::move(client->conn_));
    }
  }
  // The clients themselves stay alive as long as proxies copied into the child hold them;
  // their next use finds them unconnected and not this process's.
  r.clients.clear();
  r.pid = CurrentPid();
}

void LeaseBeforeFork() {
  Registry& r = Clients();
  MutexLock lock(&r.mu);
  if (r.pid != CurrentPid()) return;
  for (auto& [key, client] : r.clients) client->LeaseForFork();
}

namespace {
[[maybe_unused]] const int kAtfork = [] {
  pthread_atfork(LeaseBeforeFork, nullptr, ForgetClientsAfterFork);
  return 0;
}();
}  // namespace

void ManagerClient::LeaseForFork() {
  fork_token_ = 0;
  // A call in progress on another thread (a long one) must not hold the fork up: that
  // connection gets no lease, and the child's proxies fall back to an incref.
  if (!mu_.TryLock()) return;
  if (!broken_ && conn_.has_value() && !conn_->closed()) {
    if (send_mu_.TryLock()) {
      const uint64_t token = RandomId();
      EncodeBuffer msg;
      Encode(uint64_t{0}, msg);
      Encode(static_cast<uint8_t>(Op::kForkLease), msg);
      Encode(uint64_t{0}, msg);
      Encode(token, msg);
      if (conn_->SendBytes(std::string_view(reinterpret_cast<const char*>(msg.bytes().data()),
                                            msg.size()),
                           absl::Seconds(5))
              .ok()) {
        fork_token_ = token;
      }
      send_mu_.Unlock();
    }
  }
  mu_.Unlock();
}

absl::StatusOr<std::shared_ptr<ManagerClient>> ManagerClient::For(const ManagerRef& ref) {
  Registry& r = Clients();
  MutexLock lock(&r.mu);
  if (r.pid != CurrentPid()) {
    r.clients.clear();
    r.pid = CurrentPid();
  }
  std::shared_ptr<ManagerClient>& c = r.clients[KeyOf(ref)];
  if (c == nullptr) c.reset(new ManagerClient(ref));
  return c;
}

absl::Status ManagerClient::GoneLocked(const absl::Status& cause) {
  if (broken_) return *broken_;
  std::string note = death_note_ ? death_note_() : std::string();
  broken_ = absl::AbortedError(absl::StrCat(
      "the manager (pid ", ref_.server_pid, ") is gone",
      note.empty() ? std::string() : absl::StrCat(": ", note), "; the call failed with ",
      cause.ToString()));
  // Shut, not closed: another thread may be reading it; shutting it wakes that reader.
  if (conn_.has_value() && conn_->fileno() >= 0) ::shutdown(conn_->fileno(), SHUT_RDWR);
  cv_.SignalAll();
  MaybeCloseLocked();
  return *broken_;
}

void ManagerClient::MaybeCloseLocked() {
  if (!broken_ || reading_ || !waiting_.empty() || !conn_.has_value() || conn_->closed()) return;
  MutexLock send(&send_mu_);
  conn_->Close();
}

void ManagerClient::Forget(const ManagerRef& ref) {
  Registry& r = Clients();
  MutexLock lock(&r.mu);
  r.clients.erase(KeyOf(ref));
}

absl::Status ManagerClient::ConnectLocked(const Deadline& deadline) {
  if (conn_.has_value() && !conn_->closed()) return absl::OkStatus();
  absl::Duration left = absl::Seconds(30);
  if (!deadline.infinite()) {
    left = absl::Nanoseconds(std::max<int64_t>(0, deadline.monotonic_ns() - MonotonicNowNs()));
  }
  absl::StatusOr<Connection> c = ::mproc::Client(ref_.address, ref_.authkey, left);
  if (!c.ok()) {
    if (absl::IsUnauthenticated(c.status())) return c.status();
    // Nothing listening (or it closed on us): the manager is not there.
    return absl::UnavailableError(absl::StrCat("cannot reach the manager at ",
                                               ref_.address.ToString(), ": ",
                                               c.status().message()));
  }
  conn_ = *std::move(c);
  reader_.Reset();
  TuneTcp(conn_->fileno());
  // Which instance answered: a manager restarted on the same address is another one, and the
  // objects this proxy names are not there.
  EncodeBuffer hello;
  const uint64_t id = next_call_++;
  Encode(id, hello);
  Encode(static_cast<uint8_t>(Op::kHello), hello);
  Encode(uint64_t{0}, hello);
  MPROC_RETURN_IF_ERROR(conn_->SendBytes(
      std::string_view(reinterpret_cast<const char*>(hello.bytes().data()), hello.size()), left));
  absl::StatusOr<std::string> reply = reader_.Next(conn_->fileno(), Deadline::After(left));
  if (!reply.ok()) return GoneLocked(reply.status());
  DecodeReader r(AsBytes(*reply));
  uint64_t got_id = 0, nonce = 0;
  uint8_t code = 0;
  int32_t pid = 0;
  if (!Codec<uint64_t>::Decode(r, got_id) || got_id != id || !Codec<uint8_t>::Decode(r, code) ||
      code != 0 || !Codec<uint64_t>::Decode(r, nonce) || !Codec<int32_t>::Decode(r, pid)) {
    conn_->Close();
    return absl::InvalidArgumentError("the manager's hello is malformed");
  }
  if (ref_.nonce != 0 && nonce != ref_.nonce) {
    conn_->Close();
    broken_ = absl::FailedPreconditionError(absl::StrCat(
        "the manager at ", ref_.address.ToString(), " is another instance (pid ", pid,
        ") than the one this proxy belongs to (pid ", ref_.server_pid,
        "): it was restarted, and the proxy's object is gone"));
    return *broken_;
  }
  return absl::OkStatus();
}

absl::Status ManagerClient::Send(uint64_t id, Op op, uint64_t object, const EncodeBuffer& args,
                                 absl::Duration timeout) {
  EncodeBuffer msg;
  Encode(id, msg);
  Encode(static_cast<uint8_t>(op), msg);
  Encode(object, msg);
  msg.Append(args.bytes().data(), args.size());
  MutexLock send(&send_mu_);
  return conn_->SendBytes(
      std::string_view(reinterpret_cast<const char*>(msg.bytes().data()), msg.size()), timeout);
}

absl::StatusOr<std::string> ManagerClient::Call(Op op, uint64_t object, const EncodeBuffer& args,
                                                const Deadline& deadline) {
  MPROC_ASSIGN_OR_RETURN(const uint64_t id, Begin(op, object, args, deadline));
  const uint64_t ids[1] = {id};
  return AwaitReply(ids, deadline, /*forget=*/true).second;
}

std::pair<uint64_t, absl::StatusOr<std::string>> ManagerClient::AwaitAny(
    std::span<const uint64_t> ids, const Deadline& deadline) {
  return AwaitReply(ids, deadline, /*forget=*/false);
}

void ManagerClient::Abandon(uint64_t id) {
  MutexLock lock(&mu_);
  waiting_.erase(id);
  replies_.erase(id);
  cv_.SignalAll();
  MaybeCloseLocked();
}

absl::StatusOr<uint64_t> ManagerClient::Begin(Op op, uint64_t object, const EncodeBuffer& args,
                                              const Deadline& deadline) {
  // A request the server would refuse (and drop the connection for) is refused here, with
  // nothing sent: this process's other proxies keep working.
  if (args.size() > kMaxMessage - kMaxRequestHeader) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a manager request of ", args.size(), " bytes is over the ", kMaxMessage >> 20,
        " MiB message limit; nothing was sent"));
  }
  uint64_t id;
  {
    MutexLock lock(&mu_);
    if (broken_) return *broken_;
    MPROC_RETURN_IF_ERROR(ConnectLocked(deadline));
    id = next_call_++;
    waiting_.insert(id);
  }
  const absl::Duration left =
      deadline.infinite()
          ? absl::InfiniteDuration()
          : absl::Nanoseconds(std::max<int64_t>(0, deadline.monotonic_ns() - MonotonicNowNs()));
  absl::Status sent = Send(id, op, object, args, left);
  if (!sent.ok()) {
    MutexLock lock(&mu_);
    waiting_.erase(id);
    if (absl::IsDeadlineExceeded(sent)) return sent;
    return GoneLocked(sent);
  }
  return id;
}

std::pair<uint64_t, absl::StatusOr<std::string>> ManagerClient::AwaitReply(
    std::span<const uint64_t> ids, const Deadline& deadline, bool forget) {
  MutexLock lock(&mu_);
  auto done = [&](uint64_t id, absl::StatusOr<std::string> r)
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                    // Once the manager is gone, nothing more will answer them: forget them
                    // all (a pending id would keep the broken connection open).
                    if (forget || broken_) {
                      for (uint64_t i : ids) waiting_.erase(i);
                    } else if (id != 0) {
                      waiting_.erase(id);
                    }
                    cv_.SignalAll();  // the reader's role may be free for another waiter
                    MaybeCloseLocked();
                    return std::pair<uint64_t, absl::StatusOr<std::string>>(id, std::move(r));
                  };
  for (;;) {
    for (uint64_t id : ids) {
      if (auto it = replies_.find(id); it != replies_.end()) {
        absl::StatusOr<std::string> r = std::move(it->second);
        replies_.erase(it);
        return done(id, std::move(r));
      }
    }
    if (broken_) return done(0, *broken_);
    if (deadline.Expired()) {
      // Forgotten (Call): its reply, when it comes, is dropped by id.
      return done(0, absl::DeadlineExceededError("the manager did not answer in time"));
    }
    if (reading_) {
      if (deadline.infinite()) {
        cv_.Wait(lock);
      } else {
        cv_.WaitUntil(lock, std::chrono::steady_clock::time_point(
                                std::chrono::nanoseconds(deadline.monotonic_ns())));
      }
      continue;
    }
    // This thread reads for everyone until its own reply or deadline comes.
    reading_ = true;
    lock.Unlock();
    absl::StatusOr<std::string> msg = reader_.Next(conn_->fileno(), deadline);
    lock.Lock();
    reading_ = false;
    cv_.SignalAll();
    if (!msg.ok()) {
      // Not yet (what came is kept): the loop sees the deadline.
      if (absl::IsDeadlineExceeded(msg.status())) continue;
      (void)GoneLocked(msg.status());
      continue;
    }
    DecodeReader r(AsBytes(*msg));
    uint64_t got = 0;
    uint8_t code = 0;
    if (!Codec<uint64_t>::Decode(r, got) || !Codec<uint8_t>::Decode(r, code)) {
      (void)GoneLocked(absl::InvalidArgumentError("a malformed reply"));
      continue;
    }
    if (waiting_.count(got) == 0) continue;  // a late reply to a call that timed out
    if (code != 0) {
      std::string message;
      (void)Codec<std::string>::Decode(r, message);
      replies_.emplace(got, absl::Status(static_cast<absl::StatusCode>(code), message));
    } else {
      replies_.emplace(got, msg->substr(msg->size() - r.remaining()));
    }
  }
}

void ManagerClient::OneWay(Op op, uint64_t object, const EncodeBuffer& args) {
  {
    MutexLock lock(&mu_);
    if (broken_ || !conn_.has_value() || conn_->closed()) return;
  }
  absl::Status s = Send(0, op, object, args, absl::Seconds(5));
  if (!s.ok()) {
    MutexLock lock(&mu_);
    (void)GoneLocked(s);
  }
}

void ManagerClient::MarkShutDown() {
  MutexLock lock(&mu_);
  broken_ = absl::FailedPreconditionError("the manager was shut down");
  if (conn_.has_value() && conn_->fileno() >= 0) ::shutdown(conn_->fileno(), SHUT_RDWR);
  cv_.SignalAll();
  MaybeCloseLocked();
}

void ManagerClient::SetDeathNote(std::function<std::string()> note) {
  MutexLock lock(&mu_);
  death_note_ = std::move(note);
}

ProxyRef::~ProxyRef() {
  // Only the process that holds the lease gives it back; a fork child's copy is not its own.
  if (client != nullptr && pid == CurrentPid()) client->OneWay(Op::kDecref, object, EncodeBuffer());
}

absl::StatusOr<std::shared_ptr<ProxyRef>> CreateObject(const ManagerRef& mgr, Kind kind,
                                                       uint64_t fingerprint,
                                                       const std::string& initial) {
  MPROC_ASSIGN_OR_RETURN(std::shared_ptr<ManagerClient> client, ManagerClient::For(mgr));
  EncodeBuffer args;
  Encode(static_cast<uint8_t>(kind), args);
  Encode(fingerprint, args);
  Encode(initial, args);
  MPROC_ASSIGN_OR_RETURN(std::string reply,
                         client->Call(Op::kCreate, 0, args, Deadline::Infinite()));
  uint64_t id = 0;
  DecodeReader r(AsBytes(reply));
  if (!Codec<uint64_t>::Decode(r, id)) return absl::InternalError("malformed create reply");
  auto ref = std::make_shared<ProxyRef>(mgr, id, fingerprint, kind);
  ref->pid = CurrentPid();
  ref->client = std::move(client);
  return ref;
}

absl::StatusOr<std::shared_ptr<ProxyRef>> OwnRef(const std::shared_ptr<ProxyRef>& ref) {
  if (ref == nullptr) return absl::FailedPreconditionError("an empty proxy");
  if (ref->pid == CurrentPid()) return ref;
  // A copy a fork child inherited: the reference is the parent's. Every inherited copy of it
  // becomes one reference of this process's own.
  MPROC_ASSIGN_OR_RETURN(std::shared_ptr<ManagerClient> client, ManagerClient::For(ref->mgr));
  Registry& r = Clients();
  MutexLock lock(&r.mu);
  Inherited& inh = r.inherited[KeyOf(ref->mgr)];
  if (std::shared_ptr<ProxyRef> mine = inh.refs[ref->object].lock()) return mine;
  if (inh.token != 0 && !inh.claimed) {
    // The parent's fork lease: a reference to everything it held when it forked.
    inh.claimed = true;
    EncodeBuffer args;
    Encode(inh.token, args);
    absl::StatusOr<std::string> got = client->Call(Op::kClaimFork, 0, args, Deadline::Infinite());
    if (got.ok()) {
      absl::StatusOr<std::vector<uint64_t>> ids = FromBytesVector(*got);
      if (ids.ok()) {
        for (uint64_t id : *ids) inh.leased[id] += 1;
      }
    }
  }
  auto leased = inh.leased.find(ref->object);
  if (leased != inh.leased.end() && leased->second > 0) {
    --leased->second;
  } else {
    // No lease covers it: an incref, which finds the object only if another holder kept it.
    EncodeBuffer args;
    Encode(ref->fingerprint, args);
    MPROC_RETURN_IF_ERROR(
        client->Call(Op::kIncref, ref->object, args, Deadline::Infinite()).status());
  }
  auto own = std::make_shared<ProxyRef>(ref->mgr, ref->object, ref->fingerprint, ref->kind);
  own->pid = CurrentPid();
  own->client = std::move(client);
  inh.refs[ref->object] = own;
  return own;
}

namespace {
// A method call's request: the method, then its arguments. A descriptor means nothing in the
// server's process (the arguments hold only its index among the frame's descriptors).
absl::StatusOr<EncodeBuffer> MethodMessage(Method m, const EncodeBuffer& args) {
  if (!args.fds().empty()) {
    return absl::InvalidArgumentError(
        "a Manager keeps values as bytes: arguments that carry descriptors (SharedBytes, "
        "UniqueFd) cannot be passed to its objects; nothing was sent");
  }
  EncodeBuffer msg;
  Encode(static_cast<uint16_t>(m), msg);
  msg.Append(args.bytes().data(), args.size());
  return msg;
}
}  // namespace

absl::StatusOr<std::string> CallMethod(const std::shared_ptr<ProxyRef>& ref, Method m,
                                       const EncodeBuffer& args, absl::Duration timeout) {
  MPROC_ASSIGN_OR_RETURN(EncodeBuffer msg, MethodMessage(m, args));
  return ref->client->Call(Op::kCall, ref->object, msg, Deadline::After(timeout));
}

absl::StatusOr<uint64_t> BeginMethod(const std::shared_ptr<ProxyRef>& ref, Method m,
                                     const EncodeBuffer& args, absl::Duration timeout) {
  MPROC_ASSIGN_OR_RETURN(EncodeBuffer msg, MethodMessage(m, args));
  return ref->client->Begin(Op::kCall, ref->object, msg, Deadline::After(timeout));
}

namespace {
thread_local uint64_t t_embed_nonce = 0;
// The server's loop thread, in the server's process only (a fork child of that thread, such
// as a fork Pool worker of the server's, decodes proxies as any client).
thread_local pid_t t_server_pid = 0;
}  // namespace

EmbedScope::EmbedScope(uint64_t nonce) : prev_(t_embed_nonce) { t_embed_nonce = nonce; }
EmbedScope::~EmbedScope() { t_embed_nonce = prev_; }

void MarkManagerServerThread(bool serving) { t_server_pid = serving ? CurrentPid() : 0; }

void EncodeProxy(EncodeBuffer& b, const std::shared_ptr<ProxyRef>& ref) {
  if (ref != nullptr && t_embed_nonce != 0 && ref->mgr.nonce == t_embed_nonce) {
    // Kept in its own manager: the stamp is the reference (the server counts it while the
    // value is kept). This process's own reference keeps the object alive until the server
    // has the value.
    (void)OwnRef(ref);
    Encode(uint8_t{2}, b);
    Encode(ref->mgr, b);
    Encode(ref->object, b);
    const uint64_t stamp[4] = {kEmbedMagic, ref->mgr.nonce, ref->object, 0};
    b.Append(stamp, sizeof(stamp));
    return;
  }
  uint64_t ticket = 0;
  if (ref != nullptr) {
    // The ticket holds a reference while the proxy travels, so the sender may drop its own
    // at once (gh-75275). Sent one-way; the receiver's claim waits for it if it came first.
    absl::StatusOr<std::shared_ptr<ProxyRef>> own = OwnRef(ref);
    if (own.ok()) {
      ticket = RandomId();
      EncodeBuffer args;
      Encode(ticket, args);
      (*own)->client->OneWay(Op::kTicket, (*own)->object, args);
    }
  }
  const uint8_t present = ref != nullptr ? 1 : 0;
  Encode(present, b);
  if (!present) return;
  Encode(ref->mgr, b);
  Encode(ref->object, b);
  Encode(ticket, b);
}

bool DecodeProxy(DecodeReader& r, Kind kind, uint64_t fingerprint,
                 std::shared_ptr<ProxyRef>* out) {
  uint8_t present = 0;
  if (!Codec<uint8_t>::Decode(r, present)) return false;
  if (present == 0) {
    out->reset();
    return true;
  }
  if (present != 1 && present != 2) return r.Fail("bad proxy tag");
  if (t_server_pid != 0 && t_server_pid == CurrentPid()) {
    return r.Fail("a proxy cannot be decoded inside the manager's server (an Update of a value "
                  "that holds proxies)");
  }
  ManagerRef mgr;
  uint64_t object = 0, ticket = 0;
  if (!Codec<ManagerRef>::Decode(r, mgr) || !Codec<uint64_t>::Decode(r, object)) return false;
  if (present == 1) {
    if (!Codec<uint64_t>::Decode(r, ticket)) return false;
    if (ticket == 0) return r.Fail("the proxy was sent without a reference (its sender had none)");
  } else {
    uint64_t stamp[4];
    if (!r.Read(stamp, sizeof(stamp))) return false;
    if (stamp[0] != kEmbedMagic || stamp[1] != mgr.nonce || stamp[2] != object) {
      return r.Fail("a malformed embedded proxy");
    }
    ticket = stamp[3];
    if (ticket == 0) {
      return r.Fail("a proxy kept in a manager must be read through that manager (these bytes "
                    "came another way, or its object no longer exists)");
    }
  }
  absl::StatusOr<std::shared_ptr<ManagerClient>> client = ManagerClient::For(mgr);
  if (!client.ok()) return r.Fail(std::string(client.status().message()));
  EncodeBuffer args;
  Encode(ticket, args);
  Encode(fingerprint, args);
  Encode(static_cast<uint8_t>(kind), args);
  absl::StatusOr<std::string> claimed =
      (*client)->Call(Op::kClaim, object, args, Deadline::After(absl::Seconds(30)));
  if (!claimed.ok()) {
    return r.Fail(absl::StrCat("claiming a manager proxy: ", claimed.status().ToString()));
  }
  auto ref = std::make_shared<ProxyRef>(std::move(mgr), object, fingerprint, kind);
  ref->pid = CurrentPid();
  ref->client = *std::move(client);
  *out = std::move(ref);
  return true;
}

}  // namespace mproc::manager_internal
