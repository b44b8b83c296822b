#include "ipc/internal/queue_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/io_ring.h"
#include "base/status.h"
#include "base/syscall.h"
#include "base/thread_scratch.h"
#include "ipc/internal/queue_rings.h"
#include "serialize/frame.h"

namespace mproc {
namespace ipc_internal {

namespace {

// One item as a socket record ready for sendmsg: header + ring tag + payload inline, or with
// the bytes in a sealed memfd whose descriptor rides first. Points into itself and into the
// item: built in place, never moved.
struct Record {
  std::byte header[kFrameHeaderSize];
  int32_t ring = -1;
  uint64_t len = 0;
  Segment big;
  std::vector<int> fds;
  std::vector<char> control;
  iovec iov[3];
  msghdr msg = {};
};

// (PutMany has checked the item's descriptor count.)
absl::Status BuildRecord(const EncodeBuffer& item, int ring, Record* r) {
  std::span<const std::byte> payload = item.bytes();
  uint8_t kind = kInline;
  if (item.size() > kSocketInlineMax) {
    MPROC_ASSIGN_OR_RETURN(Segment seg, Segment::Create(item.size(), "mproc-queue-item"));
    MPROC_ASSIGN_OR_RETURN(Mapping m, seg.Map());
    std::memcpy(m.data(), item.bytes().data(), item.size());
    r->big = std::move(seg);
    r->fds.push_back(r->big.fd());
    r->len = item.size();
    payload = std::as_bytes(std::span<const uint64_t>(&r->len, 1));
    kind = kInMemfd;
  }
  r->ring = ring;
  r->fds.insert(r->fds.end(), item.fds().begin(), item.fds().end());
  EncodeFrameHeader({kind, static_cast<uint16_t>(r->fds.size()), kRingTag + payload.size()},
                    r->header);
  r->iov[0] = {r->header, kFrameHeaderSize};
  r->iov[1] = {&r->ring, kRingTag};
  r->iov[2] = {const_cast<std::byte*>(payload.data()), payload.size()};
  r->control.resize(ScmRightsSpace(r->fds.size()));
  r->msg.msg_iov = r->iov;
  r->msg.msg_iovlen = 3;
  AttachScmRights(&r->msg, r->fds, r->control.data());
  return absl::OkStatus();
}

}  // namespace

bool UsesSocket(const EncodeBuffer& item, const QueueShared& s) {
  return !item.fds().empty() || item.size() > kRingMaxItem;
}

// Sends items[first, first+k) — all socket items — on the socket (requires put_mu, slots
// taken). Returns how many were sent, or an error when none was.
absl::StatusOr<size_t> SocketPut(QueueShared& s, int ri, std::span<const EncodeBuffer> items,
                                 const Deadline& deadline, bool block) {
  QueueState* st = s.state;
  const size_t k = items.size();
  if (ri >= 0) {
    // Everything this producer put in its ring goes first (in a shared ring: everything put
    // there so far, which includes ours).
    RingHeader& r = st->rings[ri];
    const uint64_t drained = r.tail.load(std::memory_order_acquire);
    MPROC_RETURN_IF_ERROR(WaitAsOwner(s, r, deadline, block, drained, [&] {
      return r.head.load(std::memory_order_acquire) >= drained;
    }));
  }
  std::unique_ptr<Record[]> records(new Record[k]);
  std::vector<msghdr> msgs(k);
  for (size_t i = 0; i < k; ++i) {
    MPROC_RETURN_IF_ERROR(BuildRecord(items[i], ri, &records[i]));
    msgs[i] = records[i].msg;
  }
  size_t sent = 0;
  while (sent < k) {
    if (s.closed.load(std::memory_order_relaxed)) break;
    const size_t chunk = std::min<size_t>(32, k - sent);
    st->socket_items.fetch_add(static_cast<int64_t>(chunk), std::memory_order_seq_cst);
    if (ri >= 0) st->rings[ri].socket_pending.fetch_add(static_cast<int32_t>(chunk));
    int r;  // records sent, or -errno
    if (chunk == 1) {
      ssize_t w = RetryEintr(
          [&] { return ::sendmsg(s.tx.get(), &msgs[sent], MSG_NOSIGNAL | MSG_DONTWAIT); });
      r = w >= 0 ? 1 : -errno;
    } else {
      r = SendMessages(s.tx.get(), std::span<msghdr>(&msgs[sent], chunk));  // one syscall
    }
    const int unsent = static_cast<int>(chunk) - std::max(r, 0);
    st->socket_items.fetch_sub(unsent, std::memory_order_seq_cst);
    if (ri >= 0) st->rings[ri].socket_pending.fetch_sub(unsent);
    if (r > 0) {  // a record is sent whole or not at all
      sent += static_cast<size_t>(r);
      RingDoorbell(s);
      WakeConsumer(st);
      continue;
    }
    if (r != -EAGAIN) {
      if (sent > 0) break;
      return ErrnoToStatus(-r, "sendmsg(queue)");
    }
    if (!block) {
      if (sent > 0) break;
      return absl::ResourceExhaustedError("queue's byte budget is full (socket buffer)");
    }
    absl::Status w = AwaitFd(s.tx.get(), POLLOUT, deadline, "Queue::Put", sent, k);
    if (!w.ok()) {
      if (sent > 0) break;
      return w;
    }
  }
  if (sent == 0 && s.closed.load(std::memory_order_relaxed)) return ClosedError();
  return sent;
}

// Receives one socket record (non-blocking). OK with the item; UNAVAILABLE when there is none;
// INVALID_ARGUMENT for a record that is not a queue item (*counted false: it was never put,
// so it takes no count or slot). socket_items is a hint that spares the system call when the
// socket is empty; `force` receives anyway (before sleeping), so a record the hint missed (a
// foreign writer's) is still read and cannot hide a real item behind it.
absl::Status TakeFromSocket(QueueShared& s, bool force, TakeBuffer* bytes,
                            std::vector<UniqueFd>* fds, bool* counted) {
  QueueState* st = s.state;
  *counted = false;
  if (!force && st->socket_items.load(std::memory_order_seq_cst) <= 0) {
    return absl::UnavailableError("queue is empty");
  }
  std::vector<std::byte>& buf = ThreadScratch<std::vector<std::byte>, struct SocketRecordScratch>();
  if (buf.size() < kMaxRecord) buf.resize(kMaxRecord);
  alignas(cmsghdr) char control[ScmRightsSpace(kMaxFds)];
  iovec iov = {buf.data(), buf.size()};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = RetryEintr([&] { return ::recvmsg(s.rx.get(), &msg, MSG_CMSG_CLOEXEC); });
  if (n < 0 && errno == EAGAIN) return absl::UnavailableError("queue is empty");
  if (n < 0) return ErrnoToStatus(errno, "recvmsg(queue)");
  // A whole record is ours now.
  fds->clear();
  CollectScmRights(&msg, fds);
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    fds->clear();
    return absl::InvalidArgumentError("queue: oversized record or descriptors dropped");
  }
  absl::StatusOr<FrameHeader> h = ParseFrameHeader(std::span(buf.data(), static_cast<size_t>(n)));
  if (!h.ok()) {
    fds->clear();
    return absl::InvalidArgumentError(absl::StrCat("queue: not a queue record: ", h.status().message()));
  }
  if (h->payload_len != static_cast<size_t>(n) - kFrameHeaderSize ||
      h->payload_len < kRingTag || h->fd_count != fds->size()) {
    fds->clear();
    return absl::InvalidArgumentError("queue: record does not match its header");
  }
  // A well-formed record: a put item.
  *counted = true;
  st->socket_items.fetch_sub(1, std::memory_order_seq_cst);
  int32_t ring;
  std::memcpy(&ring, buf.data() + kFrameHeaderSize, kRingTag);
  if (ring >= 0 && ring < kRings) {
    RingHeader& r = st->rings[ring];
    int32_t p = r.socket_pending.load(std::memory_order_acquire);
    while (p > 0 && !r.socket_pending.compare_exchange_weak(p, p - 1)) {
    }
    WakeOwner(r, UINT64_MAX);
  }
  const std::byte* payload = buf.data() + kFrameHeaderSize + kRingTag;
  const size_t payload_len = h->payload_len - kRingTag;
  if (h->kind == kInline) {
    std::memcpy(bytes->Resize(payload_len), payload, payload_len);
    return absl::OkStatus();
  }
  if (h->kind != kInMemfd || payload_len != sizeof(uint64_t) || fds->empty()) {
    fds->clear();
    return absl::InvalidArgumentError("queue: unknown record kind");
  }
  uint64_t len;
  std::memcpy(&len, payload, sizeof(len));
  absl::StatusOr<Segment> seg = Segment::FromFd(std::move(fds->front()));
  fds->erase(fds->begin());
  if (!seg.ok()) return seg.status();  // not a sealed memfd: a malformed record, not an item
  if (len > seg->size()) return absl::InvalidArgumentError("queue: item longer than its memfd");
  absl::StatusOr<Mapping> m = seg->Map();
  if (!m.ok()) {
    // The item is ours alone now: keep it for the next Get rather than drop it.
    MutexLock lock(&s.stash_mu);
    if (s.stash_pid != CurrentPid()) s.stash.clear();
    s.stash_pid = CurrentPid();
    s.stash.push_back({*std::move(seg), len, std::move(*fds)});
    fds->clear();
    s.has_stash.store(true, std::memory_order_release);
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue: could not map a received item of ", len, " bytes (", m.status().message(),
        "); it is kept, and the next Get in this process returns it"));
  }
  std::memcpy(bytes->Resize(len), m->data(), len);
  return absl::OkStatus();
}

// The oldest item a Get here received but could not map (see QueueShared::stash): OK with it,
// UNAVAILABLE when there is none, or the mapping error again (the item stays first).
absl::Status TakeStashed(QueueShared& s, TakeBuffer* bytes, std::vector<UniqueFd>* fds) {
  MutexLock lock(&s.stash_mu);
  if (s.stash_pid != CurrentPid()) s.stash.clear();  // a fork child: the parent's, not ours
  if (s.stash.empty()) {
    s.has_stash.store(false, std::memory_order_relaxed);
    return absl::UnavailableError("no stashed item");
  }
  QueueShared::Stashed& front = s.stash.front();
  absl::StatusOr<Mapping> m = front.segment.Map();
  if (!m.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue: could not map a received item of ", front.len, " bytes (", m.status().message(),
        "); it is kept, and the next Get in this process returns it"));
  }
  std::memcpy(bytes->Resize(front.len), m->data(), front.len);
  *fds = std::move(front.fds);
  s.stash.pop_front();
  s.has_stash.store(!s.stash.empty(), std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace ipc_internal
}  // namespace mproc
