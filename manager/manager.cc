#include "manager/manager.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "base/process_id.h"
#include "base/socket_dir.h"
#include "base/status.h"
#include "manager/internal/server.h"
#include "serialize/auth.h"

namespace mproc {

using manager_internal::ManagerClient;
using manager_internal::Op;

namespace {

// "signal 9 (Killed)", "exit code 3": how the server ended, for the errors of calls after.
std::string DescribeEnd(Process& p) {
  // Its socket closes a moment before it can be reaped: wait for that moment, briefly.
  (void)p.Join(absl::Milliseconds(500));
  std::optional<int> code = p.exitcode();
  if (!code) return "";
  if (*code < 0) return absl::StrCat("killed by signal ", -*code, " (", strsignal(-*code), ")");
  return absl::StrCat("exited with code ", *code);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Manager>> Manager::Start(ManagerOptions options) {
  return StartWith(std::move(options), [](UniqueFd listener, manager_internal::ServerConfig config) {
    return std::make_shared<Process>(manager_internal::ServeManager, std::move(listener),
                                     std::move(config));
  });
}

absl::StatusOr<std::unique_ptr<Manager>> Manager::StartWith(ManagerOptions options,
                                                            const ServerFactory& make_server) {
  std::unique_ptr<Manager> m(new Manager());
  m->owner_pid_ = CurrentPid();
  m->ref_.authkey = options.authkey.value_or(RandomBytes(32));
  {
    std::string r = RandomBytes(8);
    std::memcpy(&m->ref_.nonce, r.data(), 8);
    m->ref_.nonce |= 1;
  }
  Address address;
  if (options.address.has_value()) {
    address = *options.address;
  } else {
    MPROC_ASSIGN_OR_RETURN(std::string dir, MakeSocketDir("manager"));
    m->socket_dir_ = dir;
    address = Address::Unix(dir + "/socket");
  }
  // Bound here, so the address is served from the moment Start returns; the server process
  // gets the listening socket.
  absl::StatusOr<Listener> listener = Listener::Create(address, m->ref_.authkey, 128);
  if (!listener.ok()) {
    if (!m->socket_dir_.empty()) ::rmdir(m->socket_dir_.c_str());
    return listener.status();
  }
  m->ref_.address = listener->address();  // a TCP port 0 becomes the real one
  manager_internal::ServerConfig config;
  config.authkey = m->ref_.authkey;
  config.nonce = m->ref_.nonce;
  if (m->ref_.address.family == Address::Family::kUnix) config.socket_path = m->ref_.address.path;
  config.socket_dir = m->socket_dir_;
  config.backend = options.backend == ManagerOptions::Backend::kEpoll     ? 0
                   : options.backend == ManagerOptions::Backend::kIoUring ? 1
                                                                          : -1;  // kAuto
  m->server_ = make_server(listener->Release(), config);
  m->server_->SetName("Manager");
  if (options.start_method.has_value()) m->server_->SetStartMethod(*options.start_method);
  absl::Status started = m->server_->Start();
  if (!started.ok()) {
    if (m->ref_.address.family == Address::Family::kUnix) ::unlink(m->ref_.address.path.c_str());
    if (!m->socket_dir_.empty()) ::rmdir(m->socket_dir_.c_str());
    return started;
  }
  m->ref_.server_pid = m->server_->pid();
  // One hello: the server serves (an initializer finished), on the connection this process
  // uses from now on.
  absl::StatusOr<std::shared_ptr<ManagerClient>> connected = ManagerClient::For(m->ref_);
  while (connected.ok()) {
    absl::StatusOr<std::string> hello =
        (*connected)->Call(Op::kHello, 0, EncodeBuffer(), Deadline::Infinite());
    if (hello.ok()) break;
    // An initializer still running: the server accepts only once it has returned, and each
    // handshake gives up after 30 s with UNAUTHENTICATED (no challenge came). The authkey is
    // this process's own, so here that means "not serving yet": wait on while the server
    // lives, as CPython's start() does.
    if (absl::IsUnauthenticated(hello.status()) && m->server_->IsAlive()) continue;
    connected = hello.status();
  }
  if (!connected.ok()) {
    // Most likely it ended before serving (an initializer that threw): say how.
    std::string end = DescribeEnd(*m->server_);
    absl::Status why = connected.status();
    (void)m->Shutdown(absl::Seconds(1));
    if (!end.empty()) {
      return absl::AbortedError(absl::StrCat(
          "the manager's server (pid ", m->ref_.server_pid, ") ended before serving: ", end,
          " (an initializer that threw prints its exception on the server's stderr)"));
    }
    return why;
  }
  std::shared_ptr<ManagerClient> client = *std::move(connected);
  std::weak_ptr<Process> server = m->server_;
  client->SetDeathNote([server] {
    std::shared_ptr<Process> p = server.lock();
    return p ? DescribeEnd(*p) : std::string();
  });
  return m;
}

absl::StatusOr<std::unique_ptr<Manager>> Manager::Connect(const Address& address,
                                                         std::string authkey,
                                                         absl::Duration timeout) {
  // One hello on a connection of its own: which instance serves there (its nonce and pid),
  // so proxies name it and a restart there is told apart.
  absl::StatusOr<Connection> c = Client(address, authkey, timeout);
  if (!c.ok()) {
    if (absl::IsUnauthenticated(c.status())) return c.status();
    return absl::UnavailableError(absl::StrCat("no manager at ", address.ToString(), ": ",
                                               c.status().message()));
  }
  EncodeBuffer hello;
  Encode(uint64_t{1}, hello);
  Encode(static_cast<uint8_t>(Op::kHello), hello);
  Encode(uint64_t{0}, hello);
  MPROC_RETURN_IF_ERROR(c->SendBytes(
      std::string_view(reinterpret_cast<const char*>(hello.bytes().data()), hello.size()),
      timeout));
  MPROC_ASSIGN_OR_RETURN(std::string reply, c->RecvBytes(manager_internal::kMaxMessage, timeout));
  DecodeReader r(AsBytes(reply));
  uint64_t id = 0, nonce = 0;
  uint8_t code = 0;
  int32_t pid = 0;
  if (!Codec<uint64_t>::Decode(r, id) || !Codec<uint8_t>::Decode(r, code) || code != 0 ||
      !Codec<uint64_t>::Decode(r, nonce) || !Codec<int32_t>::Decode(r, pid)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the server at ", address.ToString(), " is not an mproc manager"));
  }
  std::unique_ptr<Manager> m(new Manager());
  m->owner_pid_ = CurrentPid();
  m->connected_ = true;
  m->ref_.address = address;
  m->ref_.authkey = std::move(authkey);
  m->ref_.nonce = nonce;
  m->ref_.server_pid = pid;
  return m;
}

absl::Status Manager::Serve(const Address& address, std::string authkey,
                            std::function<void(const Address&)> on_listening,
                            std::stop_token stop) {
  MPROC_ASSIGN_OR_RETURN(Listener listener, Listener::Create(address, authkey, 128));
  const Address bound = listener.address();
  manager_internal::ServerConfig config;
  config.authkey = std::move(authkey);
  std::string r = RandomBytes(8);
  std::memcpy(&config.nonce, r.data(), 8);
  config.nonce |= 1;
  config.standalone = true;
  if (on_listening) on_listening(bound);
  const int code =
      manager_internal::ServeManagerUntil(listener.Release(), std::move(config), std::move(stop));
  if (bound.family == Address::Family::kUnix) ::unlink(bound.path.c_str());
  if (code != 0) return absl::InternalError(absl::StrCat("the manager server failed (", code, ")"));
  return absl::OkStatus();
}

Manager::~Manager() {
  if (owner_pid_ == CurrentPid()) (void)Shutdown();  // a fork child's copy is not the owner
}

absl::Status Manager::CheckRunning() const {
  if (shut_down_) return absl::FailedPreconditionError("the manager was shut down");
  if (owner_pid_ != CurrentPid()) {
    return absl::FailedPreconditionError(
        "this Manager belongs to another process: use proxies in children, not the Manager");
  }
  return absl::OkStatus();
}

absl::Status Manager::Shutdown(absl::Duration timeout) {
  if (shut_down_ || owner_pid_ != CurrentPid()) return absl::OkStatus();
  shut_down_ = true;
  if (connected_) return absl::OkStatus();  // a server of someone else's: it serves on
  absl::StatusOr<std::shared_ptr<ManagerClient>> client = ManagerClient::For(ref_);
  if (client.ok() && server_->IsAlive()) {
    (void)(*client)->Call(Op::kShutdown, 0, EncodeBuffer(), Deadline::After(timeout));
  }
  if (client.ok()) (*client)->MarkShutDown();
  ManagerClient::Forget(ref_);
  // It ends by itself after the shutdown message; if not, SIGTERM, then SIGKILL.
  absl::Status s = server_->Join(timeout);
  if (server_->IsAlive()) {
    (void)server_->Terminate();
    (void)server_->Join(absl::Seconds(1));
  }
  if (server_->IsAlive()) {
    (void)server_->Kill();
    s = server_->Join();
  }
  if (ref_.address.family == Address::Family::kUnix) ::unlink(ref_.address.path.c_str());
  if (!socket_dir_.empty()) ::rmdir(socket_dir_.c_str());
  return s;
}

absl::StatusOr<std::shared_ptr<manager_internal::ProxyRef>> Manager::Create(
    manager_internal::Kind kind, uint64_t fingerprint, const std::string& initial) {
  MPROC_RETURN_IF_ERROR(CheckRunning());
  return manager_internal::CreateObject(ref_, kind, fingerprint, initial);
}

absl::StatusOr<ConditionProxy> Manager::Condition(std::optional<LockProxy> lock) {
  if (!lock.has_value()) {
    MPROC_ASSIGN_OR_RETURN(LockProxy made, RLock());
    lock = std::move(made);
  }
  // The server checks this client holds a reference to the lock: make sure it does (a lock
  // decoded or inherited here becomes this process's own).
  MPROC_ASSIGN_OR_RETURN(std::shared_ptr<manager_internal::ProxyRef> own,
                         manager_internal::OwnRef(lock->ref()));
  MPROC_ASSIGN_OR_RETURN(auto ref, Create(manager_internal::Kind::kCondition,
                                          manager_internal::Fingerprint<>(),
                                          manager_internal::ToBytes(own->object)));
  return ConditionProxy(std::move(ref), *std::move(lock));
}

absl::StatusOr<SharedMemory> Manager::CreateSharedMemory(size_t size, bool eager) {
  MPROC_RETURN_IF_ERROR(CheckRunning());
  MPROC_ASSIGN_OR_RETURN(std::shared_ptr<ManagerClient> client, ManagerClient::For(ref_));
  EncodeBuffer args;
  Encode(static_cast<uint64_t>(size), args);
  Encode(eager, args);
  MPROC_ASSIGN_OR_RETURN(std::string reply,
                         client->Call(Op::kShmCreate, 0, args, Deadline::Infinite()));
  MPROC_ASSIGN_OR_RETURN(std::string name, manager_internal::FromBytes<std::string>(reply));
  return SharedMemory::Attach(name);
}

absl::StatusOr<uint64_t> Manager::ObjectCount() {
  MPROC_RETURN_IF_ERROR(CheckRunning());
  MPROC_ASSIGN_OR_RETURN(std::shared_ptr<ManagerClient> client, ManagerClient::For(ref_));
  MPROC_ASSIGN_OR_RETURN(std::string reply,
                         client->Call(Op::kCount, 0, EncodeBuffer(), Deadline::Infinite()));
  return manager_internal::FromBytes<uint64_t>(reply);
}

namespace manager_internal {

std::map<std::string, NamedType, std::less<>>& NamedTypes() {
  static auto* types = new std::map<std::string, NamedType, std::less<>>;
  return *types;
}

Mutex& NamedTypesMutex() {
  static auto* mu = new Mutex;
  return *mu;
}

}  // namespace manager_internal

}  // namespace mproc
