// ipc/internal/ring_link.h — the shared-memory path of a duplex Pipe (internal to ipc/connection).
//
// A duplex Pipe is a socketpair plus a RingLink: one memfd holding two byte rings, one per
// direction. A message of up to kLinkInlineMax bytes is a record copied into the sender's ring
// and published with one release store, with no system call (for the pool's worker channels,
// a longer one streams through as pieces while the receiver copies them out); the receiver polls the ring,
// yielding, for the spin budget (base/spin.h) and then sleeps in poll() on its socket.
// The socket stays the channel for everything the ring cannot carry, and every use of it is
// announced by a record, so the receiver always knows what the next socket bytes are:
//   kSocketMessage  the next CPython-framed message (a Pipe's long one) or frame (a pool
//                   message with descriptors) is on the socket;
//   kHandle         the next socket byte carries SCM_RIGHTS descriptors (SendHandle);
//   kBell           the next socket byte is a wake-up after a kData record: the receiver was
//                   asleep in poll(), or a foreign poller watches fileno() (bell_all), so
//                   readiness shows on the fd. The other records need none: their own socket
//                   bytes wake the receiver.
// End of file is the socket's: a peer that exited or closed every reference makes the socket
// hang up. The receiver reads every record published before that first.
//
// Writers of one direction (threads, or processes sharing an end) take turns under wlock,
// readers under rlock: owner words (base/owner.h) holding the holder's thread id, taken over
// when that thread is gone (exited, or a zombie not yet reaped), so a process killed inside
// Send or Recv does not wedge the others, even the parent that has not reaped it yet. Ring records are published whole, so a holder killed while writing one leaves
// nothing torn; one killed inside a socket message (or handle) leaves a busy mark, and the
// next holder tears the direction (TearDirection): it is shut down that way, so the other
// side sees end of file or a gone peer instead of a message spliced into the cut-off one.
// The layout is shared with the peer, which is trusted no more than a socket peer: a record
// that does not fit the published bytes is a desynchronised stream, never an overread.

#ifndef MPROC_IPC_INTERNAL_RING_LINK_H_
#define MPROC_IPC_INTERNAL_RING_LINK_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/deadline.h"
#include "ipc/internal/byte_ring.h"
#include "shm/segment.h"

namespace mproc::ipc_internal {

// Each direction's ring. A message longer than kLinkInlineMax goes over the socket.
inline constexpr uint64_t kLinkRingBytes = 128 << 10;
inline constexpr uint64_t kLinkInlineMax = 32 << 10;

enum class LinkRecord : uint32_t {
  kData = 1,           // a message, or the last piece of a long one
  kSocketMessage = 2,  // the next CPython-framed message is on the socket
  kHandle = 3,         // the next socket byte carries SCM_RIGHTS descriptors
  kBell = 4,           // the next socket byte is a wake-up
  kPart = 5,           // a piece of a long message; the pieces end with a kData record
};

// One direction's control words. The sender's line and the receiver's line are apart, so
// neither writes a line the other polls except to publish.
struct alignas(64) LinkDirection {
  // Written by the sending end.
  std::atomic<uint64_t> tail{0};          // bytes published
  std::atomic<uint32_t> wlock{0};         // owner word of the sending thread (base/owner.h)
  std::atomic<uint32_t> w_sleeping{0};    // a sender waits for room
  std::atomic<uint32_t> space_seq{0};     // futex: bumped when room is made for a sleeper
  std::atomic<uint32_t> w_socket_busy{0}; // the sender is inside a socket message or handle
  std::atomic<uint32_t> torn{0};          // a socket message was cut off (1: sending side, 2:
                                          // receiving side): the direction is dead
  // Written by the receiving end.
  alignas(64) std::atomic<uint64_t> head{0};  // bytes consumed
  std::atomic<uint32_t> rlock{0};         // owner word of the receiving thread
  std::atomic<uint32_t> r_active{0};      // a receiver is inside Recv/Poll
  std::atomic<uint32_t> r_sleeping{0};    // a receiver sleeps in poll(): ring the bell
  std::atomic<uint32_t> bell_all{0};      // fileno() was taken: ring the bell for every record
  std::atomic<uint32_t> r_socket_busy{0}; // the receiver is inside a socket message or handle
  std::atomic<int32_t> r_cpu{-1};         // the CPU the receiver last waited on (a hint)
};

class RingLink {
 public:
  // A new link: a sealed lazy memfd (pages are allocated as the rings are first written).
  static absl::StatusOr<std::shared_ptr<RingLink>> Create();
  // Maps a link received from another process; INVALID_ARGUMENT when it is not one.
  static absl::StatusOr<std::shared_ptr<RingLink>> FromSegment(Segment seg);

  const Segment& segment() const { return seg_; }

  // ---- The sending side of end `end` (its records go to direction `end`). ----

  // Takes the direction's writer lock before `deadline`. FAILED_PRECONDITION (the lock not
  // held) once the direction is torn: see TearDirection.
  absl::Status LockWriter(int end, int sock, const Deadline& deadline);
  void UnlockWriter(int end);
  // OUT_OF_RANGE when the peer end has hung up (and at every call after). Costs a poll() when
  // no receiver is inside Recv or Poll; when one is (it holds the peer end open, unless it was
  // killed there), only when our records wait unread and it made no progress since the last
  // call, at most once per kStalledLookNs. So the second send after a receiver is killed in
  // Recv fails at the latest (the first, too, when it was asleep: its bell finds the hang-up).
  // Under the writer lock.
  absl::Status CheckPeer(int end, int sock);
  // Appends one record, waiting for room before `deadline` (a hung-up peer while waiting is
  // OUT_OF_RANGE), publishes it and rings the bell when one is due. Under the writer lock.
  absl::Status Append(int end, int sock, LinkRecord kind, std::span<const std::byte> payload,
                      const Deadline& deadline) {
    return Append(end, sock, kind, {}, payload, deadline);
  }
  // A message of any length (`head` then `body`): one kData record, or kPart pieces of at most
  // kLinkInlineMax bytes ending with a kData one, each waiting for room as the receiver reads
  // (so a message longer than the ring needs a receiver reading: the pool's channels, not a
  // Pipe, whose long messages keep the socket's buffering). A failure after the first piece
  // tears the direction (TearDirection), as a socket message cut off partway does: the
  // receiver reads the pieces published, then end of file, never a message spliced from two.
  absl::Status AppendMessage(int end, int sock, std::span<const std::byte> head,
                             std::span<const std::byte> body, const Deadline& deadline);
  // The same, with the payload in two pieces (`head` then `body`), copied once.
  absl::Status Append(int end, int sock, LinkRecord kind, std::span<const std::byte> head,
                      std::span<const std::byte> body, const Deadline& deadline);

  // ---- The receiving side of end `end` (it reads direction 1 - end). ----

  // Takes the direction's reader lock; FAILED_PRECONDITION (not held) once it is torn.
  absl::Status LockReader(int end, int sock, const Deadline& deadline);
  // A socket message or handle is being written (or read) under the lock: a holder that dies
  // meanwhile leaves the flag up, and whoever takes the lock next tears the direction.
  // End* take how the socket part went: a failure other than OUT_OF_RANGE (the peer gone)
  // left the stream partway through a message, and tears the direction first.
  void BeginSocketWrite(int end) { dir(end).w_socket_busy.store(1, std::memory_order_relaxed); }
  void EndSocketWrite(int end, int sock, const absl::Status& outcome);
  void BeginSocketRead(int end) { dir(1 - end).r_socket_busy.store(1, std::memory_order_relaxed); }
  void EndSocketRead(int end, int sock, const absl::Status& outcome);

  // The socket stream of direction `d` (= end for a sender, 1 - end for a receiver) was cut
  // off partway through a message (its sender or receiver died, or failed, inside it): no
  // byte of it can be trusted to line up with the ring again. Marks the direction dead and
  // shuts the socket down that way (`writer`: SHUT_WR, so a waiting receiver sees end of
  // file; else SHUT_RD, so senders see the receiver gone). Later Sends and Recvs on it fail.
  void TearDirection(int d, int sock, bool writer);
  // Whether direction `d` was torn.
  bool Torn(int d) const;
  void UnlockReader(int end);
  struct Next {
    LinkRecord kind;
    uint32_t len;
  };
  // Waits before `deadline` (zero or past: just look) for the next record that is not a bell,
  // consuming bells on the way. OUT_OF_RANGE at end of file with nothing left;
  // DEADLINE_EXCEEDED; INVALID_ARGUMENT for a corrupt record or stray socket bytes.
  absl::StatusOr<Next> Peek(int end, int sock, const Deadline& deadline);
  // The payload of the record Peek returned, in place, when it does not wrap around the
  // ring's end (else empty). Valid until Consume; the sender may not touch it before.
  std::span<const std::byte> View(int end, const Next& next) const;
  // Peek without waiting for records: the next record that is not a bell, or nullopt when
  // there is none yet (no system call then). A bell's byte, which follows its record at once,
  // is awaited until `bell_deadline`. End of file is the caller's to see, on the socket.
  absl::StatusOr<std::optional<Next>> TryPeek(int end, int sock, const Deadline& bell_deadline);
  // A receiver about to sleep in its own poll() over the socket (and other descriptors): after
  // PrepareSleep, a sender rings the bell for its next record. False when records already wait
  // (then do not sleep). EndSleep after the poll.
  bool PrepareSleep(int end);
  void EndSleep(int end);
  // Consumes the record Peek returned, copying its payload to `out` (nullptr: drop it), or
  // appending it.
  void Consume(int end, const Next& next, std::string* out, bool append = false);
  // Takes a whole message whose first record is `next` (kData, or kPart: then every piece, as
  // it arrives, before `deadline`) into `out`.
  absl::Status TakeMessage(int end, int sock, Next next, const Deadline& deadline,
                           std::string* out);
  // Consumes bell records at the head, reading their bytes (a foreign poller must not see a
  // readable fd for a message already taken).
  void ConsumeBells(int end, int sock);

  // The one protocol for bytes the ring announces and the socket carries (a Pipe's long
  // message or descriptors, a pool channel's frame with descriptors), used by every sender and
  // receiver of a RingLink:
  //
  // WriteSocketPart: marks the direction busy, announces the record `kind`, runs `write()`
  // (the socket bytes), clears the mark; a write that fails partway tears the direction. A
  // sender killed anywhere inside leaves the mark, and the next sender tears the direction
  // instead of splicing its message into the cut-off one. Returns the announce's error
  // (nothing written; `*announced` false) or write()'s status.
  template <typename Write>
  absl::Status WriteSocketPart(int end, int sock, LinkRecord kind, const Deadline& deadline,
                               Write write, bool* announced = nullptr) {
    if (announced != nullptr) *announced = false;
    // Room on the socket before announcing (see Append): a descriptor's one byte then never
    // times out once announced (which tears the direction), and a long message less often.
    if (absl::Status room = NoteHangUp(end, AwaitBellRoom(sock, deadline)); !room.ok()) {
      return room;
    }
    BeginSocketWrite(end);
    absl::Status s = Append(end, sock, kind, {}, deadline);
    if (!s.ok()) {  // nothing announced: nothing cut off
      EndSocketWrite(end, sock, absl::OkStatus());
      return s;
    }
    if (announced != nullptr) *announced = true;
    s = write();
    EndSocketWrite(end, sock, s);
    return s;
  }
  // ReadSocketPart: marks the direction busy, runs `read(&started)` (the socket bytes the
  // record `next` announced; it sets `started` false when it failed before taking any byte,
  // e.g. a timeout), then consumes the record, unless nothing was read (the record stays for
  // the next receiver), and clears the mark; a read that failed partway tears the direction.
  // A receiver killed inside leaves the mark, and the next receiver tears the direction.
  template <typename Read>
  absl::Status ReadSocketPart(int end, int sock, const Next& next, Read read) {
    BeginSocketRead(end);
    bool started = true;
    absl::Status s = read(&started);
    if (!s.ok() && !started) {
      EndSocketRead(end, sock, absl::OkStatus());
      return s;
    }
    Consume(end, next, nullptr);
    EndSocketRead(end, sock, s);
    return s;
  }
  // Makes every later record ring the bell; true when records are already waiting.
  bool ArmBells(int end);
  bool Empty(int end) const;

 private:
  RingLink(Segment seg, Mapping map);
  LinkDirection& dir(int d) const;
  ByteRing<kLinkRingBytes> ring(int d) const;
  static absl::Status Bell(int sock, const Deadline& deadline);
  // Waits until the socket has room for a bell byte: DEADLINE_EXCEEDED at `deadline`,
  // OUT_OF_RANGE when the peer hung up.
  static absl::Status AwaitBellRoom(int sock, const Deadline& deadline);
  // A bell's outcome after its record was published: a hang-up is remembered; any other
  // failure tears the direction (writer side).
  absl::Status AfterBell(int end, int sock, absl::Status s);
  // Passes `s` on, remembering a hang-up it reports (CheckPeer then fails at once).
  absl::Status NoteHangUp(int end, absl::Status s);
  // The record at `head` (tail: the published end), checked against what was published.
  absl::StatusOr<Next> RecordAt(int end, uint64_t head, uint64_t tail) const;
  void Publish(int end, uint64_t tail);

  Segment seg_;
  Mapping map_;
  // This process's caches of the other side's position, per direction.
  uint64_t head_cache_[2] = {0, 0};
  // CheckPeer's view of each sending end (under its writer lock): the receiver's position at
  // the last send, when it last looked at the socket, and a hang-up seen.
  static constexpr int64_t kStalledLookNs = 100'000;
  uint64_t seen_head_[2] = {~uint64_t{0}, ~uint64_t{0}};
  int64_t looked_ns_[2] = {0, 0};
  bool peer_gone_[2] = {false, false};
};

}  // namespace mproc::ipc_internal

#endif  // MPROC_IPC_INTERNAL_RING_LINK_H_
