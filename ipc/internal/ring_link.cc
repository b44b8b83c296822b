#include "ipc/internal/ring_link.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "base/deadline.h"
#include "base/futex.h"
#include "base/io_ring.h"
#include "base/owner.h"
#include "base/process_id.h"
#include "base/status.h"
#include "base/spin.h"
#include "base/syscall.h"

namespace mproc::ipc_internal {
namespace {

constexpr uint64_t kMagic = 0x6d70726f632d6c6bULL;  // "mproc-lk"
constexpr uint64_t kHeaderBytes = 4096;
constexpr uint64_t kSegmentBytes = kHeaderBytes + 2 * kLinkRingBytes;
constexpr uint64_t kRecordHeader = 8;  // length, kind
using Ring = ByteRing<kLinkRingBytes>;

struct LinkHeader {
  uint64_t magic;
  uint64_t ring_bytes;
  LinkDirection dir[2];
};
static_assert(sizeof(LinkHeader) <= kHeaderBytes);

struct RecordHeader {
  uint32_t len;
  uint32_t kind;
};

uint64_t LinkRecordBytes(uint64_t len) { return RecordBytes(len, kRecordHeader); }

// A turn lock is an owner word (base/owner.h): the holder's tid, taken over by CAS when that
// thread is gone — exited, or a zombie nobody has reaped yet — so exactly one waiter takes
// it over, and a process killed inside Send or Recv does not wedge the others.
absl::Status Lock(std::atomic<uint32_t>& word, const Deadline& deadline, const char* what) {
  const uint32_t me = CurrentTid();
  // A turn is never held across a call that takes it again, so a word holding our own tid is
  // a dead thread's whose tid we were given since (kStale). The peer may share this CPU: the
  // spin yields.
  if (TakeFreeOwnerWord(&word, me) ||
      LockOwnerWord(&word, me, deadline, SpinMode::kYield, OwnerSelf::kStale) !=
          OwnerAcquire::kTimedOut) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError(
      absl::StrCat(what, ": another thread or process holds this end of the connection"));
}

void Unlock(std::atomic<uint32_t>& word) { ReleaseOwnerWord(&word); }

bool HungUp(int sock) {
  pollfd p = {sock, POLLIN, 0};
  return RetryEintr([&] { return ::poll(&p, 1, 0); }) > 0 && (p.revents & (POLLHUP | POLLERR));
}

absl::Status PeerGone() { return absl::OutOfRangeError("peer closed the connection"); }

}  // namespace

RingLink::RingLink(Segment seg, Mapping map) : seg_(std::move(seg)), map_(std::move(map)) {}

absl::StatusOr<std::shared_ptr<RingLink>> RingLink::Create() {
  MPROC_ASSIGN_OR_RETURN(Segment seg, Segment::Create(kSegmentBytes, "mproc-pipe"));
  MPROC_ASSIGN_OR_RETURN(Mapping map, seg.Map());
  auto* h = new (map.data()) LinkHeader();
  h->magic = kMagic;
  h->ring_bytes = kLinkRingBytes;
  return std::shared_ptr<RingLink>(new RingLink(std::move(seg), std::move(map)));
}

absl::StatusOr<std::shared_ptr<RingLink>> RingLink::FromSegment(Segment seg) {
  if (seg.size() != kSegmentBytes) {
    return absl::InvalidArgumentError(absl::StrCat("not a Pipe's ring segment: ", seg.size(),
                                                   " bytes"));
  }
  MPROC_ASSIGN_OR_RETURN(Mapping map, seg.Map());
  const auto* h = static_cast<const LinkHeader*>(map.data());
  if (h->magic != kMagic || h->ring_bytes != kLinkRingBytes) {
    return absl::InvalidArgumentError("not a Pipe's ring segment: bad header");
  }
  return std::shared_ptr<RingLink>(new RingLink(std::move(seg), std::move(map)));
}

LinkDirection& RingLink::dir(int d) const {
  return static_cast<LinkHeader*>(map_.data())->dir[d];
}

Ring RingLink::ring(int d) const {
  return Ring(static_cast<std::byte*>(map_.data()) + kHeaderBytes + d * kLinkRingBytes);
}

absl::Status TornError() {
  return absl::FailedPreconditionError(
      "a message on this connection was cut off partway (its sender or receiver died or failed "
      "inside it): this direction carries no more messages");
}

void RingLink::TearDirection(int d, int sock, bool writer) {
  // 1: cut off on the sending side (what was published before it can still be read);
  // 2: on the receiving side (the stream position itself is lost).
  uint32_t none = 0;
  dir(d).torn.compare_exchange_strong(none, writer ? 1 : 2, std::memory_order_acq_rel);
  ::shutdown(sock, writer ? SHUT_WR : SHUT_RD);
}

bool RingLink::Torn(int d) const { return dir(d).torn.load(std::memory_order_acquire) != 0; }

void RingLink::EndSocketWrite(int end, int sock, const absl::Status& outcome) {
  if (!outcome.ok() && !absl::IsOutOfRange(outcome)) TearDirection(end, sock, /*writer=*/true);
  dir(end).w_socket_busy.store(0, std::memory_order_release);
}

void RingLink::EndSocketRead(int end, int sock, const absl::Status& outcome) {
  if (!outcome.ok() && !absl::IsOutOfRange(outcome)) TearDirection(1 - end, sock, false);
  dir(1 - end).r_socket_busy.store(0, std::memory_order_release);
}

absl::Status RingLink::LockWriter(int end, int sock, const Deadline& deadline) {
  LinkDirection& d = dir(end);
  MPROC_RETURN_IF_ERROR(Lock(d.wlock, deadline, "Send"));
  // Up while the lock was free: the holder before us died inside a socket message.
  if (d.w_socket_busy.load(std::memory_order_acquire) != 0) TearDirection(end, sock, true);
  if (d.torn.load(std::memory_order_acquire) != 0) {
    Unlock(d.wlock);
    return TornError();
  }
  return absl::OkStatus();
}
void RingLink::UnlockWriter(int end) { Unlock(dir(end).wlock); }

absl::Status RingLink::LockReader(int end, int sock, const Deadline& deadline) {
  LinkDirection& d = dir(1 - end);
  MPROC_RETURN_IF_ERROR(Lock(d.rlock, deadline, "Recv"));
  if (d.r_socket_busy.load(std::memory_order_acquire) != 0) {
    // The receiver before us died inside a socket message.
    TearDirection(1 - end, sock, false);
    d.r_socket_busy.store(0, std::memory_order_relaxed);
  }
  if (d.torn.load(std::memory_order_acquire) == 2) {
    Unlock(d.rlock);
    return TornError();
  }
  d.r_active.store(1, std::memory_order_relaxed);
  return absl::OkStatus();
}
void RingLink::UnlockReader(int end) {
  LinkDirection& d = dir(1 - end);
  d.r_active.store(0, std::memory_order_relaxed);
  Unlock(d.rlock);
}

absl::Status RingLink::CheckPeer(int end, int sock) {
  if (peer_gone_[end]) return PeerGone();  // a hang-up is for good
  LinkDirection& d = dir(end);
  bool look = d.r_active.load(std::memory_order_relaxed) == 0;
  if (!look) {
    // A receiver inside Recv holds the peer end open, unless it was killed there (its flag
    // stays up). A live one reads promptly: records waiting with no progress since our last
    // send mean it may be gone. Look then, at most every kStalledLookNs while it stays so (a
    // live receiver that lags a fast sender costs a clock read per send, not a poll).
    const uint64_t head = d.head.load(std::memory_order_acquire);
    if (head != d.tail.load(std::memory_order_relaxed) && head == seen_head_[end]) {
      const int64_t now = MonotonicNowNs();
      if (now - looked_ns_[end] >= kStalledLookNs) {
        looked_ns_[end] = now;
        look = true;
      }
    }
    seen_head_[end] = head;
  }
  if (!look || !HungUp(sock)) return absl::OkStatus();
  peer_gone_[end] = true;
  return PeerGone();
}

void RingLink::Publish(int end, uint64_t tail) {
  dir(end).tail.store(tail, std::memory_order_release);
}

absl::Status RingLink::Bell(int sock, const Deadline& deadline) {
  // Tried at once (not after a poll: POLLOUT waits for the socket to drain to a quarter of
  // SO_SNDBUF, where a write needs only to be below it), then waited for until `deadline`.
  const char b = 0;
  for (;;) {
    const ssize_t n =
        RetryEintr([&] { return ::send(sock, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT); });
    if (n == 1) return absl::OkStatus();
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return PeerGone();
    if (n < 0 && errno != EAGAIN) return ErrnoToStatus(errno, "send(connection bell)");
    MPROC_RETURN_IF_ERROR(AwaitFd(sock, POLLOUT, deadline, "send(connection bell)", 0, 1));
  }
}

absl::Status RingLink::Append(int end, int sock, LinkRecord kind, std::span<const std::byte> head,
                              std::span<const std::byte> body, const Deadline& deadline) {
  LinkDirection& d = dir(end);
  const Ring r = ring(end);
  const uint64_t tail = d.tail.load(std::memory_order_relaxed);
  // A record announcing socket bytes needs no bell: those bytes wake the receiver (and a bell
  // sent now would reach the socket ahead of them).
  const bool data = kind == LinkRecord::kData || kind == LinkRecord::kPart;
  const bool bell_first = data && d.bell_all.load(std::memory_order_relaxed) != 0;
  const uint64_t rec = LinkRecordBytes(head.size() + body.size());
  // Room for the record and a bell after it.
  const uint64_t need = rec + kRecordHeader;
  auto room = [&] {
    if (kLinkRingBytes - (tail - head_cache_[end]) >= need) return true;
    head_cache_[end] = d.head.load(std::memory_order_acquire);
    return kLinkRingBytes - (tail - head_cache_[end]) >= need;
  };
  if (!room() && !SpinUntil(room, deadline)) {
    for (;;) {
      const uint32_t seq = d.space_seq.load(std::memory_order_seq_cst);
      d.w_sleeping.store(1, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (room()) break;
      // Short slices, so a peer that died is noticed.
      FutexWait(&d.space_seq, seq, deadline.Slice(absl::Milliseconds(10)));
      if (room()) break;
      if (HungUp(sock)) {
        peer_gone_[end] = true;
        return PeerGone();
      }
      if (deadline.Expired()) {
        return absl::DeadlineExceededError("Send timed out: the receiver is not reading");
      }
    }
    d.w_sleeping.store(0, std::memory_order_relaxed);
  }
  auto write = [&](uint64_t pos, LinkRecord k, std::span<const std::byte> a,
                   std::span<const std::byte> b) {
    RecordHeader h = {static_cast<uint32_t>(a.size() + b.size()), static_cast<uint32_t>(k)};
    r.CopyIn(pos, &h, sizeof(h));
    r.CopyIn(pos + kRecordHeader, a);
    r.CopyIn(pos + kRecordHeader + a.size(), b);
    return pos + LinkRecordBytes(a.size() + b.size());
  };
  // Every record rings a bell (fileno() was taken), and a receiver that does not read fills
  // the socket with them. Wait for room for this one before publishing, so that a Send that
  // times out has published nothing: a record published whose bell could not be written
  // would be delivered although its Send failed, and its bell record would wait for a byte
  // that never comes. Only this end's writer (under its lock) fills this socket, so the
  // write that follows finds the room.
  if (bell_first) MPROC_RETURN_IF_ERROR(NoteHangUp(end, AwaitBellRoom(sock, deadline)));
  uint64_t end_pos = write(tail, kind, head, body);
  if (bell_first) end_pos = write(end_pos, LinkRecord::kBell, {}, {});
  Publish(end, end_pos);
  if (bell_first) return AfterBell(end, sock, Bell(sock, deadline));
  if (!data) return absl::OkStatus();
  // Dekker with the receiver's Peek: it stores r_sleeping and then rereads the tail.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool ring_bell = d.bell_all.load(std::memory_order_relaxed) != 0;
  if (!ring_bell && d.r_sleeping.load(std::memory_order_relaxed) != 0) {
    ring_bell = d.r_sleeping.exchange(0, std::memory_order_relaxed) != 0;
  }
  if (!ring_bell) return absl::OkStatus();
  Publish(end, write(end_pos, LinkRecord::kBell, {}, {}));
  return AfterBell(end, sock, Bell(sock, deadline));
}

absl::Status RingLink::AfterBell(int end, int sock, absl::Status s) {
  if (s.ok()) return s;
  if (absl::IsOutOfRange(s)) return NoteHangUp(end, std::move(s));
  // A bell record was published and its byte could not be written: the receiver would wait
  // for that byte, or take the next socket byte for it. Tear the direction, so that it reads
  // what was published and then end of file, never a desynchronised stream.
  TearDirection(end, sock, /*writer=*/true);
  return s;
}

absl::Status RingLink::AwaitBellRoom(int sock, const Deadline& deadline) {
  for (;;) {
    // A write blocks while the bytes the socket holds for the peer (SIOCOUTQ: the same
    // accounting) reach SO_SNDBUF; POLLOUT waits for a quarter of it, as a blocked write
    // does. Unknown (the calls failed): write as before.
    int queued = 0;
    int sndbuf = 0;
    socklen_t len = sizeof(sndbuf);
    if (::ioctl(sock, SIOCOUTQ, &queued) != 0 ||
        ::getsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) != 0 || queued < sndbuf) {
      return absl::OkStatus();
    }
    pollfd p = {sock, POLLOUT, 0};
    const int n = WaitEvents(std::span<pollfd>(&p, 1), deadline);
    if (n < 0) return ErrnoToStatus(-n, "poll(connection bell)");
    if (n == 0) {
      return absl::DeadlineExceededError(
          "Send timed out: the receiver is not reading (its wake-ups fill the connection's "
          "socket); nothing was sent");
    }
    if (p.revents & (POLLHUP | POLLERR)) return PeerGone();
  }
}

absl::Status RingLink::NoteHangUp(int end, absl::Status s) {
  if (absl::IsOutOfRange(s)) peer_gone_[end] = true;  // the bell found the peer gone
  return s;
}

bool RingLink::Empty(int end) const {
  const LinkDirection& d = dir(1 - end);
  return d.tail.load(std::memory_order_acquire) == d.head.load(std::memory_order_relaxed);
}

bool RingLink::ArmBells(int end) {
  LinkDirection& d = dir(1 - end);
  d.bell_all.store(1, std::memory_order_seq_cst);
  return !Empty(end);
}

absl::StatusOr<RingLink::Next> RingLink::RecordAt(int end, uint64_t head, uint64_t tail) const {
  if (!Ring::Plausible(head, tail)) {
    return absl::InvalidArgumentError("corrupt positions in the connection's ring");
  }
  RecordHeader h;
  ring(1 - end).CopyOut(head, &h, sizeof(h));
  const bool known = h.kind >= 1 && h.kind <= 5;
  const bool empty_kind = h.kind != static_cast<uint32_t>(LinkRecord::kData) &&
                          h.kind != static_cast<uint32_t>(LinkRecord::kPart);
  if (!known || (empty_kind && h.len != 0) || !Ring::Fits(h.len, kRecordHeader, head, tail)) {
    return absl::InvalidArgumentError("corrupt record in the connection's ring");
  }
  return Next{static_cast<LinkRecord>(h.kind), h.len};
}

absl::StatusOr<std::optional<RingLink::Next>> RingLink::TryPeek(int end, int sock,
                                                                const Deadline& bell_deadline) {
  LinkDirection& d = dir(1 - end);
  for (;;) {
    const uint64_t head = d.head.load(std::memory_order_relaxed);
    const uint64_t tail = d.tail.load(std::memory_order_acquire);
    if (tail == head) return std::nullopt;
    MPROC_ASSIGN_OR_RETURN(Next next, RecordAt(end, head, tail));
    if (next.kind != LinkRecord::kBell) return next;
    char b;
    absl::Status s = ReadExact(sock, &b, 1, bell_deadline, "read(connection bell)");
    if (!s.ok() && !absl::IsOutOfRange(s)) return s;  // a sender killed before its bell: go on
    Consume(end, next, nullptr);
  }
}

absl::Status RingLink::AppendMessage(int end, int sock, std::span<const std::byte> head,
                                     std::span<const std::byte> body, const Deadline& deadline) {
  const uint64_t total = head.size() + body.size();
  uint64_t done = 0;
  do {
    const uint64_t n = std::min<uint64_t>(total - done, kLinkInlineMax);
    // The piece [done, done + n) of head then body.
    const uint64_t h0 = std::min<uint64_t>(done, head.size());
    const uint64_t h1 = std::min<uint64_t>(done + n, head.size());
    const uint64_t b0 = std::max<uint64_t>(done, head.size()) - head.size();
    const uint64_t b1 = std::max<uint64_t>(done + n, head.size()) - head.size();
    const std::span<const std::byte> hp = head.subspan(h0, h1 - h0);
    const std::span<const std::byte> bp = body.subspan(b0, b1 - b0);
    const bool last = done + n == total;
    absl::Status s =
        Append(end, sock, last ? LinkRecord::kData : LinkRecord::kPart, hp, bp, deadline);
    if (!s.ok()) {
      // Pieces already published would join the next message: the direction is cut off here,
      // as a socket message cut off partway is (the receiver reads the pieces, then end of file).
      if (done > 0) TearDirection(end, sock, /*writer=*/true);
      return s;
    }
    done += n;
  } while (done < total);
  return absl::OkStatus();
}

absl::Status RingLink::TakeMessage(int end, int sock, Next next, const Deadline& deadline,
                                   std::string* out) {
  out->clear();
  for (;;) {
    if (next.kind != LinkRecord::kData && next.kind != LinkRecord::kPart) {
      return absl::InvalidArgumentError("a long message in the connection's ring was cut short");
    }
    Consume(end, next, out, /*append=*/true);
    if (next.kind == LinkRecord::kData) return absl::OkStatus();
    MPROC_ASSIGN_OR_RETURN(next, Peek(end, sock, deadline));
  }
}

bool RingLink::PrepareSleep(int end) {
  LinkDirection& d = dir(1 - end);
  d.r_sleeping.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return Empty(end);
}

void RingLink::EndSleep(int end) { dir(1 - end).r_sleeping.store(0, std::memory_order_relaxed); }

absl::StatusOr<RingLink::Next> RingLink::Peek(int end, int sock, const Deadline& deadline) {
  LinkDirection& d = dir(1 - end);
  bool spun = false;
  int strays = 0;
  for (;;) {
    MPROC_ASSIGN_OR_RETURN(std::optional<Next> ready, TryPeek(end, sock, deadline));
    if (ready.has_value()) return *ready;
    const uint64_t head = d.head.load(std::memory_order_relaxed);
    if (!spun) {
      spun = true;
      auto arrived = [&] { return d.tail.load(std::memory_order_relaxed) != head; };
      // Where the peer last waited as a receiver (a hint: it may have moved since). On another
      // CPU it answers without our yielding to it: a short pause-spin there catches a quick
      // answer at the cost of a cache-line transfer instead of a system call per look (a
      // yield). On this CPU, or when unknown, only yields let it run. Either way the rest of
      // the budget is spent yielding (base/spin.h).
      const int mine = ::sched_getcpu();
      std::atomic<int32_t>& my_cpu = dir(1 - end).r_cpu;
      if (my_cpu.load(std::memory_order_relaxed) != mine) {
        my_cpu.store(mine, std::memory_order_relaxed);
      }
      const int peer = dir(end).r_cpu.load(std::memory_order_relaxed);
      if (peer >= 0 && mine >= 0 && peer != mine && !deadline.Expired() &&
          SpinUntil(arrived, deadline, SpinMode::kHandoff)) {
        continue;
      }
      if (SpinUntil(arrived, deadline)) continue;
    }
    // Dekker with Append: publish that we sleep, then look once more.
    d.r_sleeping.store(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (d.tail.load(std::memory_order_relaxed) != head) {
      d.r_sleeping.store(0, std::memory_order_relaxed);
      continue;
    }
    pollfd p = {sock, POLLIN, 0};
    const int n = WaitEvents(std::span<pollfd>(&p, 1), deadline);
    d.r_sleeping.store(0, std::memory_order_relaxed);
    if (d.tail.load(std::memory_order_acquire) != head) continue;
    if (n < 0) return ErrnoToStatus(-n, "poll(connection)");
    if (n == 0) return absl::DeadlineExceededError("Recv timed out");
    // Readable with nothing published: end of file, or a byte whose record is on its way.
    char b;
    const ssize_t got = RetryEintr([&] { return ::recv(sock, &b, 1, MSG_PEEK | MSG_DONTWAIT); });
    if (got == 0 || (got < 0 && errno == ECONNRESET)) {
      if (d.tail.load(std::memory_order_acquire) != head) continue;
      return PeerGone();
    }
    if (got < 0 && errno != EAGAIN) return ErrnoToStatus(errno, "recv(connection)");
    if (got == 1 && ++strays > 10000) {
      return absl::InvalidArgumentError("bytes on the connection's socket that no record announced");
    }
    if (deadline.Expired()) return absl::DeadlineExceededError("Recv timed out");
    YieldCpu();
  }
}

std::span<const std::byte> RingLink::View(int end, const Next& next) const {
  return ring(1 - end).Contiguous(
      dir(1 - end).head.load(std::memory_order_relaxed) + kRecordHeader, next.len);
}

void RingLink::Consume(int end, const Next& next, std::string* out, bool append) {
  LinkDirection& d = dir(1 - end);
  const uint64_t head = d.head.load(std::memory_order_relaxed);
  if (out != nullptr) {
    if (!append) out->clear();
    ring(1 - end).AppendTo(head + kRecordHeader, next.len, out);
  }
  d.head.store(head + LinkRecordBytes(next.len), std::memory_order_release);
  // Dekker with Append's wait for room.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (d.w_sleeping.load(std::memory_order_relaxed) != 0 &&
      d.w_sleeping.exchange(0, std::memory_order_relaxed) != 0) {
    d.space_seq.fetch_add(1, std::memory_order_release);
    FutexWake(&d.space_seq, INT32_MAX);
  }
}

void RingLink::ConsumeBells(int end, int sock) {
  (void)TryPeek(end, sock, Deadline::After(absl::Seconds(1)));
}

}  // namespace mproc::ipc_internal
