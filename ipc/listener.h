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
// Errors: binding an address in use is ALREADY_EXISTS (bind's EADDRINUSE, in every family),
// other bind failures their errno status; Accept on a closed Listener is FAILED_PRECONDITION
// ("listener is closed"); connecting to nothing is the connect errno (NOT_FOUND / UNAVAILABLE).
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
  // Listener::Create(address, authkey, backlog)
  //
  // Binds and listens at `address` (a Unix path creates its socket file; TCP port 0 takes a free
  // port, which address() then shows). With `authkey`, every client Accept returns passed the
  // handshake; std::nullopt means none. Never blocks. Errors: INVALID_ARGUMENT (a TCP host that is
  // not a numeric IPv4 address; a Unix path or abstract name that is empty, over 107 bytes or
  // holds a NUL), ALREADY_EXISTS (the address is in use, or any file, such as a dead listener's
  // socket file, is at the Unix path), else the errno status of socket, bind or listen (e.g.
  // NOT_FOUND for a missing directory, RESOURCE_EXHAUSTED when out of descriptors). Thread-safe.
  [[nodiscard]] static absl::StatusOr<Listener> Create(const Address& address,
                                         std::optional<std::string> authkey = std::nullopt,
                                         int backlog = 16);
  // An empty Listener: closed(); Accept is FAILED_PRECONDITION.
  Listener() = default;
  Listener(Listener&& o) noexcept;
  Listener& operator=(Listener&& o) noexcept;
  ~Listener() { Close(); }

  // Listener::Accept(timeout)
  //
  // Waits for a client (up to `timeout`; without a key, spinning briefly first) and authenticates
  // it when the listener has a key: the first client whose handshake completes. The connection is
  // a plain blocking socket. Errors: UNAUTHENTICATED when a client failed its handshake (a wrong
  // key, a protocol error, or it hung up partway; one call per such client, as CPython's
  // AuthenticationError), DEADLINE_EXCEEDED (no client came, or finished its handshake, in time),
  // FAILED_PRECONDITION (the listener is closed), else the errno status of the call that failed
  // (accept, poll; RESOURCE_EXHAUSTED when out of descriptors). Processes sharing the socket (fork)
  // may each Accept: a client goes to one of them. One thread at a time (see the top).
  [[nodiscard]]
  absl::StatusOr<Connection> Accept(absl::Duration timeout = absl::InfiniteDuration());
  // Listener::SetHandshakeTimeout(timeout)
  //
  // How long one client may take over its handshake before it is dropped (10 s by default),
  // counted from when an Accept takes it; clients taken before the call keep their old limit.
  // Must not race Accept.
  void SetHandshakeTimeout(absl::Duration timeout) { handshake_timeout_ = timeout; }
  // The address given to Create, with a TCP port 0 replaced by the port bound. Kept after Close.
  const Address& address() const { return address_; }
  // Listener::Close()
  //
  // Stops listening; idempotent, and the destructor calls it. Closes the socket and drops the
  // handshakes still running. A filesystem socket file is removed, but only by the process that
  // created the Listener: a fork child's Close closes its own copy and leaves the file.
  // Connections already accepted stay open. Must not race Accept.
  void Close();
  // Listener::Release()
  //
  // Gives the listening socket away (to a server process): this Listener is closed, handshakes
  // still running are dropped, and a filesystem socket file stays, for the caller to remove.
  // An empty UniqueFd when already closed. Must not race Accept.
  UniqueFd Release();
  bool closed() const { return !fd_.ok(); }
  // The listening socket (non-blocking), readable while a client waits to be accepted; -1 when
  // closed. With a key, readable does not mean Accept returns at once (the handshake is still to
  // run), and handshakes in progress do not show on it.
  int fileno() const { return fd_.get(); }

 private:
  // A client accepted, its handshake running.
  struct PendingClient {
    UniqueFd fd;
    std::unique_ptr<ServerHandshaker> handshake;
    int64_t deadline_ns = 0;
  };
  [[nodiscard]] absl::StatusOr<Connection> AcceptAuthenticated(const Deadline& deadline);

  UniqueFd fd_;
  Address address_;
  std::optional<std::string> authkey_;
  pid_t owner_pid_ = 0;
  absl::Duration handshake_timeout_ = absl::Seconds(10);
  std::vector<PendingClient> pending_;
  pid_t pending_pid_ = 0;  // the process whose handshakes pending_ holds
};

// Client(address, authkey, timeout)
//
// Connects to a Listener (mproc's or Python's) at `address` and, with `authkey`, runs the
// client's side of the handshake within `timeout` (without a key, `timeout` is not used). The
// connect() itself is not bounded by `timeout`: it waits while a Unix listener's backlog is full,
// and for TCP as long as the kernel does. Errors: INVALID_ARGUMENT (a bad address, as in
// Listener::Create), the connect errno status (NOT_FOUND: no such socket file; UNAVAILABLE:
// nothing listens there), UNAUTHENTICATED (the handshake failed: a wrong key on either side, a
// protocol error, or it did not finish within `timeout`), UNAVAILABLE (the server closed the
// connection before sending its challenge). The connection is a plain blocking socket. Thread-safe.
[[nodiscard]] absl::StatusOr<Connection> Client(const Address& address,
                                  std::optional<std::string> authkey = std::nullopt,
                                  absl::Duration timeout = absl::Seconds(30));

}  // namespace mproc

#endif  // MPROC_IPC_LISTENER_H_
