// ipc/listener.h — Listener and Client: CPython's multiprocessing.connection.Listener/Client
// over Unix sockets (a filesystem path or Linux's abstract namespace) and TCP, with the
// authkey handshake.
//
//   MPROC_ASSIGN_OR_RETURN(Listener l, Listener::Create(Address::Unix("/run/app.sock"), "key"));
//   MPROC_ASSIGN_OR_RETURN(Connection c, l.Accept());            // in the server
//   MPROC_ASSIGN_OR_RETURN(Connection c, Client(l.address(), "key"));   // in a client
//
// Authentication is serialize/auth.h's CPython handshake, byte for byte: Accept runs
// deliver-then-answer, Client answer-then-deliver. A listener with a key never waits on one
// client: Accept takes every client that connects, runs all their handshakes at once from
// one thread (ServerHandshaker), and returns the first to finish; a client that connects and
// never speaks is dropped (closed) once its handshake timeout passes (10 s by default,
// SetHandshakeTimeout), without failing any Accept or delaying other clients. Handshakes
// still running carry over to the next Accept. A wrong key fails on both sides with
// UNAUTHENTICATED ("digest received was wrong" / "digest sent was rejected") before any
// application data moves; std::nullopt means no handshake; an empty key is still a key
// (CONTRACT LIS-3). Python's Client/Listener interoperate (tests: PythonInteropTest in
// ipc/listener_test.cc).
//
// Errors: binding an address in use is ALREADY_EXISTS for a Unix path or abstract name and
// the errno status otherwise; Accept on a closed Listener is FAILED_PRECONDITION ("listener
// is closed"); connecting to nothing is the connect errno (NOT_FOUND / UNAVAILABLE).
// A filesystem Listener removes its socket file on Close (as CPython's).
//
// Thread-safety: Accept may be called from one thread at a time; Close must not race it.
#ifndef MPROC_IPC_LISTENER_H_
#define MPROC_IPC_LISTENER_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"
#include "ipc/connection.h"
#include "serialize/auth.h"

namespace mproc {

struct Address {
  enum class Family { kUnix, kAbstract, kTcp };
  Family family = Family::kUnix;
  std::string path;  // kUnix: the socket file; kAbstract: the name (no leading NUL)
  std::string host;  // kTcp: a numeric IPv4 address, e.g. "127.0.0.1"
  uint16_t port = 0; // kTcp: 0 = any free port (the Listener's address() has the real one)

  static Address Unix(std::string path) { return {Family::kUnix, std::move(path), "", 0}; }
  static Address Abstract(std::string name) { return {Family::kAbstract, std::move(name), "", 0}; }
  static Address Tcp(std::string host, uint16_t port) { return {Family::kTcp, "", std::move(host), port}; }
  std::string ToString() const;
};
// Addresses travel to other processes (a Manager's proxies carry theirs).
MPROC_CODEC_ENUM(Address::Family, kUnix, kAbstract, kTcp)
MPROC_CODEC_FIELDS(Address, family, path, host, port)

class Listener {
 public:
  static absl::StatusOr<Listener> Create(const Address& address,
                                         std::optional<std::string> authkey = std::nullopt,
                                         int backlog = 16);
  Listener() = default;
  Listener(Listener&& o) noexcept;
  Listener& operator=(Listener&& o) noexcept;
  ~Listener() { Close(); }

  // Waits for a client (up to `timeout`) and authenticates it when the listener has a key:
  // the first client whose handshake completes. UNAUTHENTICATED when a client failed its
  // handshake (one call per such client, as CPython's AuthenticationError).
  absl::StatusOr<Connection> Accept(absl::Duration timeout = absl::InfiniteDuration());
  // How long one client may take over its handshake before it is dropped.
  void SetHandshakeTimeout(absl::Duration timeout) { handshake_timeout_ = timeout; }
  const Address& address() const { return address_; }
  void Close();
  // Gives the listening socket away (to a server process): this Listener is closed, and a
  // filesystem socket file stays, for the caller to remove.
  UniqueFd Release();
  bool closed() const { return !fd_.ok(); }
  int fileno() const { return fd_.get(); }

 private:
  // A client accepted, its handshake running.
  struct PendingClient {
    UniqueFd fd;
    std::unique_ptr<ServerHandshaker> handshake;
    int64_t deadline_ns = 0;
  };
  absl::StatusOr<Connection> AcceptAuthenticated(const Deadline& deadline);

  UniqueFd fd_;
  Address address_;
  std::optional<std::string> authkey_;
  pid_t owner_pid_ = 0;
  absl::Duration handshake_timeout_ = absl::Seconds(10);
  std::vector<PendingClient> pending_;
  pid_t pending_pid_ = 0;  // the process whose handshakes pending_ holds
};

absl::StatusOr<Connection> Client(const Address& address,
                                  std::optional<std::string> authkey = std::nullopt,
                                  absl::Duration timeout = absl::Seconds(30));

}  // namespace mproc

#endif  // MPROC_IPC_LISTENER_H_
