// ipc/connection.h — Connection and Pipe: CPython's multiprocessing.connection, in C++.
//
//   MPROC_ASSIGN_OR_RETURN(auto pair, Pipe());          // duplex: a socketpair
//   auto& [a, b] = pair;
//   MPROC_RETURN_IF_ERROR(a.Send(Job{7, "x"}));         // codec-encoded, CPython-framed
//   MPROC_ASSIGN_OR_RETURN(Job job, b.Recv<Job>());
//   MPROC_RETURN_IF_ERROR(a.SendBytes("raw"));
//   MPROC_ASSIGN_OR_RETURN(std::string raw, b.RecvBytes());
//
// Wire format: every message is CPython's length framing (serialize/cpython_framing.h), so a
// Python peer's send_bytes/recv_bytes interoperate byte for byte. Send<T>/Recv<T> put T's
// codec bytes (serialize/codec.h) inside the frame — mproc's pickle, readable by mproc only;
// Python interop is at the bytes level (SendBytes/RecvBytes), as the README says.
//
// Semantics (CPython's, in C++ casing; CONTRACT §1.4):
//   * Message boundaries are kept; an empty message is a message (Poll sees it).
//   * A closed peer is OUT_OF_RANGE on Recv (after every message it sent) and on Send — never a
//     hang and never a SIGPIPE (base/syscall.h IgnoreSigpipe).
//   * RecvBytes(max_length): a longer message is RESOURCE_EXHAUSTED ("bad message length") and
//     the connection is closed for reading (the stream is desynchronised), as CPython marks it.
//     Without max_length any size is accepted; memory grows only with bytes that really arrive.
//   * RecvBytesInto(buffer, offset): a message that does not fit is RESOURCE_EXHAUSTED and the
//     complete message rides in the status payload kMessagePayloadUrl (CPython's
//     BufferTooShort carries it too); the message is consumed either way.
//   * SendBytes(data, offset, size): slicing errors are INVALID_ARGUMENT.
//   * Poll(timeout) is true when a message (or end of file) is ready; it never consumes.
//   * SendHandle/RecvHandle pass one descriptor as CPython's reduction.send_handle does (one
//     byte with SCM_RIGHTS; duplex connections only). Data without a descriptor is
//     INVALID_ARGUMENT. Send<T>/Recv<T> of a T that carries descriptors (kTypeCarriesFds)
//     sends them the same way just before the message.
//   * Using a closed connection, reading a write-only end or writing a read-only end is
//     FAILED_PRECONDITION.
//   * A Connection is a handle: Codec<Connection> sends its descriptor, so a Connection passed
//     to a child Process works there.
//
// Duplex Pipes carry messages in shared memory (ipc/internal/ring_link.h): a message of up to
// 32 KiB is copied into a ring the peer polls, with no system call, and a receiver that finds
// nothing yields for the spin budget (MPROC_SPIN_US) before sleeping in poll(); longer messages and
// descriptors go over the socketpair, in order. fileno() of such a Connection is an epoll
// descriptor that is readable while a message (or end of file) waits — taking it makes every
// later message also ring a byte on the socket, which costs a send per message. Connections
// from FromFd, Listener and Client, and simplex Pipes, are plain sockets and pipes.
//
// Thread-safety: one sender and one receiver at a time (as CPython); Close must not race
// other calls. On a duplex Pipe, senders (threads or processes sharing an end) take turns,
// and so do receivers: a message is never interleaved with another. Fork children: a Connection
// copied by fork is a second reference to the same socket or pipe (closing it in the child does
// not close the parent's).

#ifndef MPROC_IPC_CONNECTION_H_
#define MPROC_IPC_CONNECTION_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/deadline.h"
#include "base/thread_scratch.h"
#include "base/unique_fd.h"
#include "serialize/buffer.h"
#include "serialize/codec.h"

namespace mproc {
namespace ipc_internal {
class RingLink;
struct ConnectionSendScratch;  // ThreadScratch tag
}  // namespace ipc_internal

// The status payload that carries the complete message when RecvBytesInto's buffer is short.
inline constexpr char kMessagePayloadUrl[] = "mproc.ipc/complete_message";

class Connection {
 public:
  // An empty Connection: closed(); sends and receives on it are FAILED_PRECONDITION.
  Connection() = default;
  // Connection::FromFd(fd, readable, writable)
  //
  // Adopts a connected socket or one end of a pipe as a plain connection (no shared-memory
  // ring). Never blocks. Errors: INVALID_ARGUMENT when `fd` is not an open descriptor, or when
  // neither flag is set (the descriptor is closed then). Nothing checks that `fd` really is a
  // socket or pipe, or that the flags match how it was opened.
  [[nodiscard]] static absl::StatusOr<Connection> FromFd(UniqueFd fd, bool readable = true,
                                           bool writable = true);

  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;

  // Connection::Send(value, timeout)
  //
  // Encodes `value` in the calling thread and sends it as one message, its descriptors (if any)
  // just before it, as SendHandle does. Blocks until it is written (into the ring, socket or pipe;
  // not until the peer reads it), up to `timeout`. Errors: FAILED_PRECONDITION (closed, read-only,
  // sending stopped by an earlier failure, or descriptors over a simplex pipe), OUT_OF_RANGE (the
  // peer closed its end), DEADLINE_EXCEEDED (the peer is not reading, or on a duplex Pipe another
  // sender kept its turn), INVALID_ARGUMENT (over 253 descriptors, or one not open; nothing is
  // sent). A failure other than OUT_OF_RANGE partway through a message (on a duplex Pipe: once
  // a message over 32 KiB or a descriptor was announced) stops sending: FAILED_PRECONDITION
  // after.
  // One sender at a time; on a duplex Pipe, senders (threads or processes) take turns.
  template <typename T>
  absl::Status Send(const T& value, absl::Duration timeout = absl::InfiniteDuration()) {
    // One encode buffer per thread, reused (a long message's buffer is not kept).
    EncodeBuffer& buf = ThreadScratch<EncodeBuffer, ipc_internal::ConnectionSendScratch>();
    buf.Clear();
    Encode(value, buf);
    absl::Status s = SendEncoded(buf, Deadline::After(timeout), kTypeCarriesFds<T>);
    if (buf.capacity() > (64 << 10)) buf = EncodeBuffer();
    return s;
  }

  // Connection::Recv<T>(timeout)
  //
  // Receives one message and decodes it as T. Blocks until one arrives, up to `timeout` (after a
  // short spin). Errors: DEADLINE_EXCEEDED (nothing came; or the timeout passed partway through a
  // message, which stops reading), OUT_OF_RANGE (the peer closed its end and every message it
  // sent was read), FAILED_PRECONDITION (closed, write-only, or reading stopped earlier),
  // INVALID_ARGUMENT (the message does not decode as T: it is consumed and reading goes on; a
  // corrupt frame or ring record, or a descriptor where a message was due, stops reading). A T
  // whose type may carry descriptors receives them first, and none when the value sent carried
  // none (an empty vector of UniqueFd): Send of such a type announces them either way.
  // One receiver at a time; on a duplex Pipe, receivers (threads or processes) take turns.
  template <typename T>
  [[nodiscard]] absl::StatusOr<T> Recv(absl::Duration timeout = absl::InfiniteDuration()) {
    static_assert(!std::is_same_v<T, absl::Status>, "use Recv<absl::Status> via RecvBytes");
    Deadline deadline = Deadline::After(timeout);
    std::vector<UniqueFd> fds;
    if constexpr (kTypeCarriesFds<T>) {
      // A value of such a type may carry none (an empty vector of descriptors, an empty
      // handle): Send announces even those, so the message is never read as descriptors.
      absl::Status s = RecvFds(deadline, &fds, /*none_ok=*/true);
      if (!s.ok()) return s;
    }
    // Decoded where the message lies (in the ring, on a duplex Pipe): no copy before decoding.
    struct Ctx {
      std::vector<UniqueFd>* fds;
      std::optional<absl::StatusOr<T>> out;
    } ctx{&fds, std::nullopt};
    absl::Status s = RecvMessage(std::nullopt, deadline, &scratch_, &ctx,
                                 [](void* c, std::span<const std::byte> bytes) {
                                   auto* x = static_cast<Ctx*>(c);
                                   x->out.emplace(Decode<T>(bytes, std::move(*x->fds)));
                                 });
    if (!s.ok()) return s;
    return *std::move(ctx.out);
  }

  // Connection::SendBytes(data, timeout)
  //
  // Sends `data` as one CPython-framed message (a Python peer's recv_bytes reads it). Blocks and
  // fails as Send: FAILED_PRECONDITION, OUT_OF_RANGE, DEADLINE_EXCEEDED; thread-safety as Send.
  absl::Status SendBytes(std::string_view data, absl::Duration timeout = absl::InfiniteDuration());
  // Connection::SendBytes(data, offset, size, timeout)
  //
  // Sends data[offset, offset + size) (size defaults to the rest) as SendBytes(data, timeout);
  // a slice beyond `data` is INVALID_ARGUMENT (checked after FAILED_PRECONDITION), nothing sent.
  absl::Status SendBytes(std::span<const std::byte> data, size_t offset,
                         std::optional<size_t> size = std::nullopt,
                         absl::Duration timeout = absl::InfiniteDuration());
  // Connection::RecvBytes(max_length, timeout)
  //
  // Receives one message's bytes (a Python peer's send_bytes, or any Send). Blocks and fails as
  // Recv (DEADLINE_EXCEEDED, OUT_OF_RANGE, FAILED_PRECONDITION; INVALID_ARGUMENT for a corrupt
  // frame or ring record, or a descriptor where a message was due, which stop reading), and a
  // message longer than `max_length` is RESOURCE_EXHAUSTED ("bad message length"): this end reads
  // no more, as CPython marks it (a read-only end is closed outright). Thread-safety as Recv.
  [[nodiscard]]
  absl::StatusOr<std::string> RecvBytes(std::optional<uint64_t> max_length = std::nullopt,
                                        absl::Duration timeout = absl::InfiniteDuration());
  // Connection::RecvBytesInto(buffer, offset, timeout)
  //
  // Writes the next message at buffer[offset...]; returns its size. Blocks and fails as RecvBytes
  // without a limit; INVALID_ARGUMENT when `offset` is beyond `buffer` (nothing read). A message
  // longer than the room after `offset` is RESOURCE_EXHAUSTED with the whole message in the
  // payload kMessagePayloadUrl: it is consumed, and reading goes on. Thread-safety as Recv.
  [[nodiscard]] absl::StatusOr<size_t> RecvBytesInto(std::span<std::byte> buffer, size_t offset = 0,
                                       absl::Duration timeout = absl::InfiniteDuration());

  // Connection::Poll(timeout)
  //
  // True when a message or end of file is ready within `timeout` (zero, the default, or negative:
  // just look); consumes nothing, and is true too when the next Recv will fail. Blocks up to
  // `timeout`. Errors: FAILED_PRECONDITION (closed, write-only, reading stopped, or on a duplex
  // Pipe a receiver cut this direction off). On a duplex Pipe it is false while another thread
  // or process holds the receiving turn until `timeout`, even with a message waiting.
  [[nodiscard]] absl::StatusOr<bool> Poll(absl::Duration timeout = absl::ZeroDuration());

  // Connection::SendHandle(fd, timeout)
  //
  // Passes descriptor `fd` (still the caller's) to the peer as CPython's send_handle: one byte
  // carrying SCM_RIGHTS. Blocks up to `timeout` (a full socket buffer included). Errors:
  // FAILED_PRECONDITION (closed, read-only, a simplex pipe), INVALID_ARGUMENT (`fd` not open;
  // nothing is sent), OUT_OF_RANGE (the peer closed),
  // DEADLINE_EXCEEDED. On a duplex Pipe a failure other than OUT_OF_RANGE after the descriptor
  // was announced stops sending, as in Send. Thread-safety as Send.
  absl::Status SendHandle(int fd, absl::Duration timeout = absl::InfiniteDuration());
  // Connection::RecvHandle(timeout)
  //
  // Receives one descriptor sent by SendHandle, close-on-exec and owned by the caller. Blocks up
  // to `timeout`. Errors: DEADLINE_EXCEEDED, OUT_OF_RANGE (the peer closed), FAILED_PRECONDITION
  // (closed, write-only, reading stopped, a simplex pipe), INVALID_ARGUMENT (a message came where
  // the descriptor was due, which stops reading; or the descriptors came truncated or not exactly
  // one). Thread-safety as Recv.
  [[nodiscard]]
  absl::StatusOr<UniqueFd> RecvHandle(absl::Duration timeout = absl::InfiniteDuration());

  // Connection::Close()
  //
  // Closes this handle's descriptors; idempotent. Other references to the socket or pipe (fork
  // children's copies, Connections sent to other processes) stay open, and the peer sees end of
  // file only once every one is closed. Must not race other calls on this Connection.
  void Close();
  // closed(): an empty Connection, after Close, or a read-only end that a receive closed when
  // reading stopped (see RecvBytes). readable() turns false when reading stops; Close changes
  // neither flag.
  bool closed() const { return !fd_.ok(); }
  bool readable() const { return readable_; }
  bool writable() const { return writable_; }
  // A descriptor for Wait() or a poller of your own, readable while a message or end of file
  // waits; -1 when closed. The socket or pipe itself, except on a duplex Pipe (see above): there
  // the first call creates that descriptor (owned by the Connection until Close) and must not
  // race other calls on this Connection.
  int fileno() const;

 private:
  friend struct Codec<Connection>;
  friend absl::StatusOr<std::pair<Connection, Connection>> Pipe(bool duplex);
  Connection(UniqueFd fd, bool r, bool w) : fd_(std::move(fd)), readable_(r), writable_(w) {}
  absl::Status CheckOpen(bool for_read) const;
  // The stream lost its framing: this end reads no more (CPython marks it unreadable) and
  // later Recvs say why.
  void LoseReadFraming(std::string_view why);
  // `announce`: the value's type may carry descriptors, so the receiver expects a descriptor
  // message first (Recv<T>): one is sent on a socket even when the value carries none.
  absl::Status SendEncoded(const EncodeBuffer& buf, const Deadline& deadline, bool announce);
  // Sends `fds` (if any, or an empty descriptor message when `announce`) and then `bytes` (if
  // given), over the ring or the socket. On a duplex Pipe the ring's records say what comes
  // next, so nothing is sent for an empty announcement.
  absl::Status SendParts(std::span<const int> fds, const std::span<const std::byte>* bytes,
                         const Deadline& deadline, bool announce = false);
  // Receives one message into `out`; with a visitor, calls visit(ctx, its bytes) once instead,
  // before the next receive can overwrite them (on a duplex Pipe they may lie in the ring, and
  // `out` is then untouched).
  using Visitor = void (*)(void* ctx, std::span<const std::byte> bytes);
  absl::Status RecvMessage(std::optional<uint64_t> max_length, const Deadline& deadline,
                           std::string* out, void* ctx = nullptr, Visitor visit = nullptr);
  absl::Status RingRecv(uint64_t max_length, const Deadline& deadline, std::string* out,
                        void* ctx, Visitor visit, bool* started);
  // Receives a descriptor message. `none_ok`: it may hold no descriptors (an announcement,
  // SendParts), or on a duplex Pipe be absent (the next record is the message itself).
  absl::Status RecvFds(const Deadline& deadline, std::vector<UniqueFd>* out,
                       bool none_ok = false);
  absl::Status RecvFdsOnSocket(const Deadline& deadline, std::vector<UniqueFd>* out,
                               bool none_ok = false);
  absl::Status SendFds(std::span<const int> fds, const Deadline& deadline);
  // After a message was taken from the ring: bells behind it are taken too, and the local
  // readiness of fileno() is cleared once the ring is empty.
  void AfterRingTake();
  void EncodeTo(EncodeBuffer& b) const;
  bool DecodeFrom(DecodeReader& r);

  UniqueFd fd_;
  bool readable_ = false;
  bool writable_ = false;
  // A plain socket connection's Send was cut off partway through a message (its sending side
  // is shut down): this handle writes no more. A duplex Pipe marks its ring instead.
  bool write_torn_ = false;
  // Why reading stopped when the stream lost its framing (a bad length, a Recv cut off partway
  // through a message, data where a descriptor was due); empty for a write-only end.
  std::string read_lost_;
  std::string scratch_;
  // Duplex Pipes: the shared rings, and which end this is.
  std::shared_ptr<ipc_internal::RingLink> link_;
  int end_ = 0;
  // fileno() of a ring connection: an epoll set over the socket and local_ready_, an eventfd
  // raised when fileno() was first taken while messages already sat in the ring.
  mutable UniqueFd poll_fd_;
  mutable UniqueFd local_ready_;
};

// Pipe(duplex)
//
// A connected pair. Duplex (default): a socketpair and a shared-memory ring segment, both ends
// read and write. Simplex: a pipe, first = the reading end, second = the writing end (and SIGPIPE
// is set to ignored if it had its default action). Never blocks. Errors: the errno status of
// socketpair, pipe2, or the ring's memfd or mmap (RESOURCE_EXHAUSTED when out of descriptors or
// memory). Thread-safe.
[[nodiscard]] absl::StatusOr<std::pair<Connection, Connection>> Pipe(bool duplex = true);

// A Connection travels as its descriptor (kCarriesFds) plus its direction flags; a duplex
// Pipe's end also carries its ring segment's descriptor and which end it is.
template <>
struct Codec<Connection> {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 2;
  static void Encode(EncodeBuffer& b, const Connection& c) { c.EncodeTo(b); }
  static bool Decode(DecodeReader& r, Connection& out) { return out.DecodeFrom(r); }
};

}  // namespace mproc

#endif  // MPROC_IPC_CONNECTION_H_
