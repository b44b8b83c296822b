// manager/internal/server.h — the Manager's server: one event loop, no thread per client.
//
// One thread serves every connection through epoll: the listening socket, each client's
// socket (its handshake first, run by ServerHandshaker so a silent client holds up nobody,
// then its requests), and the owner's pidfd. Objects belong to that thread, so every call on
// one is atomic without a lock. Requests are answered in order per connection; a connection
// whose replies pile up unread (past kMaxMessage) or that sends garbage, a length over
// kMaxMessage or a malformed request is closed, and the others are served on.
//
// References are leases: each connection holds counted references to the objects it made or
// claimed, and they are dropped when it says so (decref) or when it closes, whatever closed
// it (the client exited, was killed, or shut the socket). An object with no reference and no
// ticket is freed. A ticket (a proxy on its way to another process) holds a reference until
// it is claimed, or for 60 s.
//
// The server exits on Shutdown, and when its owner's process ends unless it serves standalone
// (Manager::Serve). It ignores SIGINT, as CPython's, so a terminal's Ctrl-C is the owner's to
// handle.
#ifndef MPROC_MANAGER_INTERNAL_SERVER_H_
#define MPROC_MANAGER_INTERNAL_SERVER_H_

#include <stop_token>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "base/unique_fd.h"
#include "serialize/codec.h"

namespace mproc::manager_internal {

struct ServerConfig {
  std::string authkey;
  uint64_t nonce = 0;       // this instance's, chosen by the owner (Hello answers it)
  bool standalone = false;  // true: serve on after the owner ends (Serve)
  // Removed when the owner ends before Shutdown (the owner removes them at Shutdown): the
  // listening socket's file (a Unix address), and the private directory holding it (the
  // default address).
  std::string socket_path;
  std::string socket_dir;
  // The event loop's backend (ManagerOptions::Backend): -1 auto (io_uring unless the I/O mode
  // was chosen plain), 0 epoll, 1 io_uring; epoll when the kernel cannot give io_uring.
  int32_t backend = -1;
};
MPROC_CODEC_FIELDS(ServerConfig, authkey, nonce, standalone, socket_path, socket_dir, backend)

// Serves on `listener` (a listening socket) until Shutdown or the owner's end; the exit code.
// (A Process target: its arguments cross the process boundary.)
int ServeManager(UniqueFd listener, ServerConfig config);
// The same on this thread, until a stop is also requested through `stop` (from another
// thread): Manager::Serve.
int ServeManagerUntil(UniqueFd listener, ServerConfig config, std::stop_token stop);

// The server process's target with an initializer (CPython's Manager(initializer, initargs)):
// runs init(args...) first, then serves. An exception it throws ends the process (exit code
// 1, reported on stderr) before it serves, and Manager::Start says so.
template <typename... P>
int ServeManagerAfter(UniqueFd listener, ServerConfig config, void (*init)(P...),
                      std::tuple<std::decay_t<P>...> args) {
  std::apply([&](auto&... a) { init(a...); }, args);
  return ServeManager(std::move(listener), std::move(config));
}

}  // namespace mproc::manager_internal

#endif  // MPROC_MANAGER_INTERNAL_SERVER_H_
