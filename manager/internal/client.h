// manager/internal/client.h — a process's connection to a manager, and the reference a proxy
// holds.
//
// One authenticated connection per (process, manager instance), made on first use and kept
// (CPython opens one per call for incref/decref and one per thread for calls). A fork child
// never uses its parent's: the connections a child inherits are closed in it at fork, and it
// makes its own. Threads share the connection with calls in flight at once: each sends its
// request, and one waiting thread at a time reads replies and hands each to its caller (by
// call id), so a thread blocked in a Queue Get holds up no other thread's calls.
//
// A ProxyRef is one reference (lease) a process holds on one object: made by create, by
// claiming a ticket (a proxy decoded from another process) or by an incref (a proxy a fork
// child inherited), and dropped with a one-way decref when the last proxy copy holding it goes
// away in the process that owns it. The server drops it too when the connection closes: a
// killed client leaks nothing.
#ifndef MPROC_MANAGER_INTERNAL_CLIENT_H_
#define MPROC_MANAGER_INTERNAL_CLIENT_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <set>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/deadline.h"
#include "base/mutex.h"
#include "ipc/connection.h"
#include "ipc/listener.h"
#include "manager/internal/protocol.h"
#include "serialize/buffer.h"
#include "serialize/codec.h"

namespace mproc::manager_internal {

// How to reach one manager instance: what a proxy carries to another process. The authkey
// travels with it (only over mproc's own channels to processes of the same user), so a child
// can connect as its parent does.
struct ManagerRef {
  Address address;
  std::string authkey;
  uint64_t nonce = 0;      // the server instance: a restarted manager has another
  int32_t server_pid = 0;  // for error messages
};
MPROC_CODEC_FIELDS(ManagerRef, address, authkey, nonce, server_pid)

// Replies, read from a manager connection: as many bytes as are there, in one recv, so a
// small reply costs one system call (not a poll, then a read for its header and another for
// its body). Bytes past the first reply wait for the next Next. A timeout keeps what came: the
// stream never loses its framing. One reader at a time.
class ReplyReader {
 public:
  // The next reply's body. DEADLINE_EXCEEDED (nothing lost; call again), OUT_OF_RANGE at end
  // of file, INVALID_ARGUMENT for a length above kMaxMessage, else the recv's error.
  absl::StatusOr<std::string> Next(int fd, const Deadline& deadline);
  // Forgets what was read (a new connection).
  void Reset();

 private:
  static constexpr size_t kChunk = 64 << 10;
  static constexpr size_t kKeptBytes = 1 << 20;  // room kept between replies, at most
  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0;
  size_t begin_ = 0;  // received bytes not yet taken: [begin_, end_)
  size_t end_ = 0;
};

class ManagerClient {
 public:
  // This process's client of the manager `ref` names (made and connected on first use).
  static absl::StatusOr<std::shared_ptr<ManagerClient>> For(const ManagerRef& ref);

  // One request and its reply: OK with the result bytes, or the server's error, or
  // DEADLINE_EXCEEDED, or ABORTED when the manager is gone (naming its pid), or
  // FAILED_PRECONDITION after this process shut the manager down.
  absl::StatusOr<std::string> Call(Op op, uint64_t object, const EncodeBuffer& args,
                                   const Deadline& deadline);
  // Call in two halves, so one thread keeps several calls in flight: Begin sends the request
  // and returns its id (Call's errors that come before the reply); AwaitAny waits for the
  // reply of any of `ids` and returns which one came with it (the reply is consumed). At
  // `deadline` AwaitAny returns DEADLINE_EXCEEDED with id 0 and the calls stay pending (wait
  // again later); once the manager is gone, its error with id 0, and the calls are
  // forgotten. Abandon forgets a pending call: its reply is dropped when it comes.
  absl::StatusOr<uint64_t> Begin(Op op, uint64_t object, const EncodeBuffer& args,
                                 const Deadline& deadline);
  std::pair<uint64_t, absl::StatusOr<std::string>> AwaitAny(std::span<const uint64_t> ids,
                                                            const Deadline& deadline);
  void Abandon(uint64_t id);
  // A request without a reply (decref, ticket). Best effort: a gone manager drops nothing.
  void OneWay(Op op, uint64_t object, const EncodeBuffer& args);

  // Called by the owning Manager: calls from now on are FAILED_PRECONDITION, and `why` (the
  // server's exit, when known) names the manager's end in ABORTED errors.
  void MarkShutDown();
  // Removes this process's client of `ref` from the registry (after Shutdown): proxies that
  // still hold it keep failing with FAILED_PRECONDITION; nothing else finds it.
  static void Forget(const ManagerRef& ref);
  void SetDeathNote(std::function<std::string()> note);

  const ManagerRef& ref() const { return ref_; }

 private:
  explicit ManagerClient(ManagerRef ref) : ref_(std::move(ref)) {}
  absl::Status ConnectLocked(const Deadline& deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status GoneLocked(const absl::Status& cause) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Closes the connection once it is broken and no thread reads or waits on it.
  void MaybeCloseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for a reply to any of `ids`; `forget` drops them all from waiting_ whatever the
  // outcome (Call's single call), else only the one answered.
  std::pair<uint64_t, absl::StatusOr<std::string>> AwaitReply(std::span<const uint64_t> ids,
                                                               const Deadline& deadline,
                                                               bool forget);
  // Sends one request (under send_mu_).
  absl::Status Send(uint64_t id, Op op, uint64_t object, const EncodeBuffer& args,
                    absl::Duration timeout);

  // Before this process forks (pthread_atfork prepare): a one-way fork lease, so the child can
  // take over every reference this process holds on this manager (its inherited proxies).
  void LeaseForFork();

  const ManagerRef ref_;
  Mutex mu_;       // the state guarded below; the connection is made under it
  Mutex send_mu_;  // one writer at a time
  CondVar cv_;     // a reply arrived, the reader left, or the connection broke
  // The lease announced before the last fork (read in the child). Not under mu_: written by
  // the fork's prepare handler under the client registry's lock, read by the child's.
  uint64_t fork_token_ = 0;
  // Made, checked and closed under mu_ (closed under send_mu_ too), but not guarded by it: the
  // writer uses it under send_mu_ alone, and the reading thread (reading_) without a lock.
  std::optional<Connection> conn_;
  ReplyReader reader_;  // used as conn_ is by the reading thread, and made anew with it
  uint64_t next_call_ ABSL_GUARDED_BY(mu_) = 1;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;        // a thread reads replies
  std::set<uint64_t> waiting_ ABSL_GUARDED_BY(mu_);  // calls awaiting replies
  // ...and the replies that came for them
  std::map<uint64_t, absl::StatusOr<std::string>> replies_ ABSL_GUARDED_BY(mu_);
  // The manager is gone (or shut down): every call fails.
  std::optional<absl::Status> broken_ ABSL_GUARDED_BY(mu_);
  std::function<std::string()> death_note_ ABSL_GUARDED_BY(mu_);
  friend void ForgetClientsAfterFork();
  friend void LeaseBeforeFork();
};

// A reference to one object, held by one process. In a fork child every inherited copy of the
// parent's references to one object becomes the same child reference (OwnRef).
struct ProxyRef {
  ProxyRef(ManagerRef m, uint64_t object, uint64_t fingerprint, Kind kind)
      : mgr(std::move(m)), object(object), fingerprint(fingerprint), kind(kind) {}
  ~ProxyRef();
  ProxyRef(const ProxyRef&) = delete;
  ProxyRef& operator=(const ProxyRef&) = delete;

  const ManagerRef mgr;
  const uint64_t object;
  const uint64_t fingerprint;
  const Kind kind;
  pid_t pid = 0;  // the process whose lease this is (0: none yet)
  std::shared_ptr<ManagerClient> client;
};

// Makes an object on the server; a reference owned by this process.
absl::StatusOr<std::shared_ptr<ProxyRef>> CreateObject(const ManagerRef& mgr, Kind kind,
                                                       uint64_t fingerprint,
                                                       const std::string& initial);

// The reference this process uses for `ref`: `ref` itself when it is this process's, else
// (a fork child's inherited copy) one of its own: taken over from the fork lease the parent
// announced just before the fork (so the parent dropping its proxies meanwhile frees nothing
// the child inherited), or by an incref when there was none.
absl::StatusOr<std::shared_ptr<ProxyRef>> OwnRef(const std::shared_ptr<ProxyRef>& ref);

// A method call on the object, failing with DEADLINE_EXCEEDED after `timeout`.
absl::StatusOr<std::string> CallMethod(const std::shared_ptr<ProxyRef>& ref, Method m,
                                       const EncodeBuffer& args, absl::Duration timeout);
// Its first half (ManagerClient::Begin): the request sent, its id; the reply is awaited with
// ref->client->AwaitAny.
absl::StatusOr<uint64_t> BeginMethod(const std::shared_ptr<ProxyRef>& ref, Method m,
                                     const EncodeBuffer& args, absl::Duration timeout);

// While one lives on this thread, proxies to the manager instance `nonce` encode as embedded
// (a stamp: protocol.h) instead of with a ticket: the values a proxy sends to be kept in that
// manager. Nests; 0 means none.
class EmbedScope {
 public:
  explicit EmbedScope(uint64_t nonce);
  ~EmbedScope();
  EmbedScope(const EmbedScope&) = delete;
  EmbedScope& operator=(const EmbedScope&) = delete;

 private:
  uint64_t prev_;
};

// Set on the manager server's own thread while it serves: a proxy cannot be decoded there (its
// decode would call the server that is running it). Cleared when it stops serving.
void MarkManagerServerThread(bool serving);

// Codec support for proxies: Encode hands a ticket for `ref`'s object to the server (one-way)
// and writes what a receiver needs to claim it; Decode claims it (a round trip) and returns
// the receiver's own reference.
void EncodeProxy(EncodeBuffer& b, const std::shared_ptr<ProxyRef>& ref);
bool DecodeProxy(DecodeReader& r, Kind kind, uint64_t fingerprint, std::shared_ptr<ProxyRef>* out);

}  // namespace mproc::manager_internal

#endif  // MPROC_MANAGER_INTERNAL_CLIENT_H_
