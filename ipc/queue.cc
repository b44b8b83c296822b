#include "ipc/queue.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/futex.h"
#include "base/io_ring.h"
#include "base/status.h"
#include "base/syscall.h"
#include "serialize/frame.h"
#include "shm/segment.h"

namespace mproc {
namespace ipc_internal {
namespace {

constexpr uint8_t kInline = 1;
constexpr uint8_t kInMemfd = 2;
// Items up to this size travel inside the record; bigger ones in a sealed memfd.
constexpr size_t kInlineMax = 64 << 10;
constexpr size_t kMaxRecord = kFrameHeaderSize + kInlineMax;
constexpr size_t kMaxFds = 253;

// In the queue's shared segment.
struct alignas(64) QueueState {
  std::atomic<int64_t> count{0};       // items in the channel (approximate)
  std::atomic<int64_t> unfinished{0};  // JoinableQueue: put but not TaskDone'd
  std::atomic<uint32_t> join_seq{0};   // futex: bumped when unfinished reaches 0
  std::atomic<uint32_t> slots_seq{0};  // futex: bumped when a slot frees
  std::atomic<int64_t> used{0};        // maxsize slots taken
  uint64_t maxsize = 0;
  uint32_t joinable = 0;
};

}  // namespace

// One per process per queue: the shared channel and state, and this process's Close doorbell.
struct QueueShared {
  UniqueFd rx;
  UniqueFd tx;
  Segment segment;
  Mapping mapping;
  QueueState* state = nullptr;
  UniqueFd closed_efd;  // readable once Close() ran in this process
  std::atomic<bool> closed{false};

  ~QueueShared() = default;
};

namespace {

absl::Status ClosedError() { return absl::FailedPreconditionError("queue is closed"); }

absl::StatusOr<std::shared_ptr<QueueShared>> Attach(UniqueFd rx, UniqueFd tx, Segment seg) {
  auto s = std::make_shared<QueueShared>();
  MPROC_ASSIGN_OR_RETURN(Mapping m, seg.Map());
  if (m.size() < sizeof(QueueState)) return absl::InvalidArgumentError("queue state too small");
  s->rx = std::move(rx);
  s->tx = std::move(tx);
  s->segment = std::move(seg);
  s->mapping = std::move(m);
  s->state = static_cast<QueueState*>(s->mapping.data());
  s->closed_efd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->closed_efd.ok()) return ErrnoToStatus(errno, "eventfd(queue)");
  // Non-blocking channel ends: several processes wait on them, and a receive that loses the
  // race for a record must not block.
  if (SetNonBlocking(s->rx.get(), true) < 0 || SetNonBlocking(s->tx.get(), true) < 0) {
    return ErrnoToStatus(errno, "fcntl(O_NONBLOCK, queue)");
  }
  return s;
}

// Takes a maxsize slot. OK, RESOURCE_EXHAUSTED (non-blocking, full), DEADLINE_EXCEEDED, or
// FAILED_PRECONDITION when Close ran meanwhile.
absl::Status AcquireSlot(QueueShared& s, const Deadline& deadline, bool block) {
  QueueState* st = s.state;
  for (;;) {
    uint32_t seq = st->slots_seq.load(std::memory_order_acquire);
    int64_t used = st->used.load(std::memory_order_relaxed);
    while (used < static_cast<int64_t>(st->maxsize)) {
      if (st->used.compare_exchange_weak(used, used + 1, std::memory_order_acq_rel)) {
        return absl::OkStatus();
      }
    }
    if (!block) return absl::ResourceExhaustedError("queue is full");
    if (deadline.Expired()) return absl::DeadlineExceededError("queue is full: Put timed out");
    if (s.closed.load(std::memory_order_relaxed)) return ClosedError();
    if (CanWaitFutexWithFds()) {
      // io_uring with futex opcodes: the slot word and the Close doorbell in one wait.
      pollfd p = {s.closed_efd.get(), POLLIN, 0};
      bool woken;
      int r = WaitEventsOrFutex(std::span<pollfd>(&p, 1), &st->slots_seq, seq, deadline, &woken);
      if (r >= 0) continue;
      if (r != -EOPNOTSUPP) return ErrnoToStatus(-r, "wait(queue slot)");
    }
    // Bounded slices so a Close in another thread is noticed.
    Deadline slice = Deadline::After(absl::Milliseconds(50));
    FutexWait(&st->slots_seq, seq,
              deadline.infinite() || slice.monotonic_ns() < deadline.monotonic_ns() ? slice
                                                                                   : deadline);
  }
}

void ReleaseSlot(QueueState* st) {
  if (st->maxsize == 0) return;
  st->used.fetch_sub(1, std::memory_order_acq_rel);
  st->slots_seq.fetch_add(1, std::memory_order_release);
  FutexWake(&st->slots_seq, 1);
}

}  // namespace

absl::StatusOr<QueueCore> QueueCore::Create(size_t maxsize, bool joinable) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoToStatus(errno, "socketpair(queue)");
  }
  UniqueFd rx(sv[0]);
  UniqueFd tx(sv[1]);
  MPROC_ASSIGN_OR_RETURN(Segment seg, Segment::Create(4096, "mproc-queue"));
  {
    MPROC_ASSIGN_OR_RETURN(Mapping m, seg.Map());
    auto* st = new (m.data()) QueueState();
    st->maxsize = maxsize;
    st->joinable = joinable ? 1 : 0;
  }
  QueueCore q;
  MPROC_ASSIGN_OR_RETURN(q.s_, Attach(std::move(rx), std::move(tx), std::move(seg)));
  return q;
}

namespace {

// One item as a record ready for sendmsg: header + payload inline, or header + length with the
// bytes in a sealed memfd whose descriptor rides first. Points into itself and into the item:
// built in place, never moved.
struct Record {
  std::byte header[kFrameHeaderSize];
  uint64_t len = 0;
  Segment big;
  std::vector<int> fds;
  std::vector<char> control;
  iovec iov[2];
  msghdr msg = {};
};

absl::Status BuildRecord(const EncodeBuffer& item, Record* r) {
  if (item.fds().size() + 1 > kMaxFds) {
    return absl::InvalidArgumentError(absl::StrCat("an item may carry at most ", kMaxFds - 1,
                                                   " descriptors"));
  }
  std::span<const std::byte> payload = item.bytes();
  uint8_t kind = kInline;
  if (item.size() > kInlineMax) {
    MPROC_ASSIGN_OR_RETURN(Segment seg, Segment::Create(item.size(), "mproc-queue-item"));
    MPROC_ASSIGN_OR_RETURN(Mapping m, seg.Map());
    std::memcpy(m.data(), item.bytes().data(), item.size());
    r->big = std::move(seg);
    r->fds.push_back(r->big.fd());
    r->len = item.size();
    payload = std::as_bytes(std::span<const uint64_t>(&r->len, 1));
    kind = kInMemfd;
  }
  r->fds.insert(r->fds.end(), item.fds().begin(), item.fds().end());
  EncodeFrameHeader({kind, static_cast<uint16_t>(r->fds.size()), payload.size()}, r->header);
  r->iov[0] = {r->header, kFrameHeaderSize};
  r->iov[1] = {const_cast<std::byte*>(payload.data()), payload.size()};
  r->control.resize(ScmRightsSpace(r->fds.size()));
  r->msg.msg_iov = r->iov;
  r->msg.msg_iovlen = 2;
  AttachScmRights(&r->msg, r->fds, r->control.data());
  return absl::OkStatus();
}

// Counted before the send, so a Get that races ahead never drives the counters negative.
void CountPut(QueueState* st, int64_t k) {
  if (st->joinable) st->unfinished.fetch_add(k, std::memory_order_acq_rel);
  st->count.fetch_add(k, std::memory_order_relaxed);
}

// Undoes CountPut and the slots of `k` items that were not sent.
void UndoPut(QueueState* st, int64_t k) {
  if (k == 0) return;
  st->count.fetch_sub(k, std::memory_order_relaxed);
  if (st->joinable) st->unfinished.fetch_sub(k, std::memory_order_acq_rel);
  for (int64_t i = 0; st->maxsize > 0 && i < k; ++i) ReleaseSlot(st);
}

}  // namespace

absl::Status QueueCore::Put(const EncodeBuffer& item, const Deadline& deadline, bool block) {
  size_t put = 0;
  return PutMany(std::span<const EncodeBuffer>(&item, 1), deadline, block, &put);
}

absl::Status QueueCore::PutMany(std::span<const EncodeBuffer> items, const Deadline& deadline,
                                bool block, size_t* put) {
  *put = 0;
  if (s_ == nullptr) return absl::FailedPreconditionError("queue handle is empty");
  QueueShared& s = *s_;
  if (s.closed.load(std::memory_order_relaxed)) return ClosedError();
  QueueState* st = s.state;
  const size_t n = items.size();
  if (n == 0) return absl::OkStatus();

  // Every record is built (and every large item copied out) before the first one is sent.
  std::unique_ptr<Record[]> records(new Record[n]);
  std::vector<msghdr> msgs(n);
  for (size_t i = 0; i < n; ++i) {
    MPROC_RETURN_IF_ERROR(BuildRecord(items[i], &records[i]));
    msgs[i] = records[i].msg;
  }

  constexpr size_t kChunk = 32;  // what one io_uring submission or sendmmsg call carries
  size_t sent = 0;
  while (sent < n) {
    if (s.closed.load(std::memory_order_relaxed)) return ClosedError();
    size_t k = std::min(kChunk, n - sent);
    if (st->maxsize > 0) {
      // One slot per item: the first may block, the rest of the chunk takes only free ones.
      MPROC_RETURN_IF_ERROR(AcquireSlot(s, deadline, block));
      size_t got = 1;
      while (got < k && AcquireSlot(s, deadline, /*block=*/false).ok()) ++got;
      k = got;
    }
    CountPut(st, static_cast<int64_t>(k));
    int r;  // records sent, or -errno
    if (k == 1) {
      ssize_t w = RetryEintr(
          [&] { return ::sendmsg(s.tx.get(), &msgs[sent], MSG_NOSIGNAL | MSG_DONTWAIT); });
      r = w >= 0 ? 1 : -errno;
    } else {
      r = SendMessages(s.tx.get(), std::span<msghdr>(&msgs[sent], k));
    }
    if (r > 0) {  // a record is sent whole or not at all
      UndoPut(st, static_cast<int64_t>(k) - r);
      sent += static_cast<size_t>(r);
      *put = sent;
      continue;
    }
    UndoPut(st, static_cast<int64_t>(k));
    if (r != -EAGAIN) return ErrnoToStatus(-r, "sendmsg(queue)");
    if (!block) return absl::ResourceExhaustedError("queue's byte budget is full (socket buffer)");
    MPROC_RETURN_IF_ERROR(AwaitFd(s.tx.get(), POLLOUT, deadline, "Queue::Put", sent, n));
  }
  return absl::OkStatus();
}

absl::Status QueueCore::Get(const Deadline& deadline, bool block, std::string* bytes,
                            std::vector<UniqueFd>* fds) {
  if (s_ == nullptr) return absl::FailedPreconditionError("queue handle is empty");
  QueueShared& s = *s_;
  QueueState* st = s.state;
  thread_local std::vector<std::byte> buf;
  if (buf.size() < kMaxRecord) buf.resize(kMaxRecord);
  alignas(cmsghdr) char control[ScmRightsSpace(kMaxFds)];
  bool spun = false;
  for (;;) {
    if (s.closed.load(std::memory_order_relaxed)) return ClosedError();
    iovec iov = {buf.data(), buf.size()};
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = RetryEintr([&] { return ::recvmsg(s.rx.get(), &msg, MSG_CMSG_CLOEXEC); });
    if (n < 0 && errno == EAGAIN) {
      if (!block) return absl::UnavailableError("queue is empty");
      // An item usually follows within microseconds: spin briefly before blocking.
      if (!spun) {
        spun = true;
        if (SpinUntilReady(s.rx.get(), POLLIN, deadline)) continue;
      }
      pollfd p[2] = {{s.rx.get(), POLLIN, 0}, {s.closed_efd.get(), POLLIN, 0}};
      int r = WaitEvents(std::span<pollfd>(p, 2), deadline);  // poll(2) or io_uring
      if (r < 0) return ErrnoToStatus(-r, "poll(queue)");
      if (p[1].revents) return ClosedError();
      if (r == 0 && deadline.Expired()) {
        return absl::DeadlineExceededError("queue is empty: Get timed out");
      }
      continue;  // readable (another consumer may still win the record: then wait again)
    }
    if (n < 0) return ErrnoToStatus(errno, "recvmsg(queue)");
    // A whole record is ours now.
    fds->clear();
    CollectScmRights(&msg, fds);
    st->count.fetch_sub(1, std::memory_order_relaxed);
    ReleaseSlot(st);
    if (n == 0 && !(msg.msg_flags & MSG_TRUNC)) {
      // Zero-length record: only from a foreign writer.
      return absl::InvalidArgumentError("queue: empty record");
    }
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
      fds->clear();
      return absl::InvalidArgumentError("queue: oversized record or descriptors dropped");
    }
    absl::StatusOr<FrameHeader> h = ParseFrameHeader(std::span(buf.data(), static_cast<size_t>(n)));
    if (!h.ok()) return h.status();
    if (h->payload_len != static_cast<size_t>(n) - kFrameHeaderSize ||
        h->fd_count != fds->size()) {
      fds->clear();
      return absl::InvalidArgumentError("queue: record does not match its header");
    }
    const std::byte* payload = buf.data() + kFrameHeaderSize;
    if (h->kind == kInline) {
      bytes->assign(reinterpret_cast<const char*>(payload), h->payload_len);
      return absl::OkStatus();
    }
    if (h->kind != kInMemfd || h->payload_len != sizeof(uint64_t) || fds->empty()) {
      fds->clear();
      return absl::InvalidArgumentError("queue: unknown record kind");
    }
    uint64_t len;
    std::memcpy(&len, payload, sizeof(len));
    absl::StatusOr<Segment> seg = Segment::FromFd(std::move(fds->front()));
    fds->erase(fds->begin());
    if (!seg.ok()) return seg.status();
    MPROC_ASSIGN_OR_RETURN(Mapping m, seg->Map());
    if (len > m.size()) return absl::InvalidArgumentError("queue: item longer than its memfd");
    bytes->assign(static_cast<const char*>(m.data()), len);
    return absl::OkStatus();
  }
}

size_t QueueCore::Qsize() const {
  if (s_ == nullptr) return 0;
  int64_t c = s_->state->count.load(std::memory_order_relaxed);
  return c < 0 ? 0 : static_cast<size_t>(c);
}

bool QueueCore::Empty() const {
  if (s_ == nullptr) return true;
  pollfd p = {s_->rx.get(), POLLIN, 0};
  return RetryEintr([&] { return ::poll(&p, 1, 0); }) == 0;
}

bool QueueCore::Full() const {
  if (s_ == nullptr) return false;
  const QueueState* st = s_->state;
  return st->maxsize > 0 && st->used.load(std::memory_order_relaxed) >= static_cast<int64_t>(st->maxsize);
}

size_t QueueCore::maxsize() const { return s_ ? static_cast<size_t>(s_->state->maxsize) : 0; }

void QueueCore::Close() {
  if (s_ == nullptr || s_->closed.exchange(true)) return;
  uint64_t one = 1;
  (void)!::write(s_->closed_efd.get(), &one, sizeof(one));
  // Wake slot waiters so they notice.
  s_->state->slots_seq.fetch_add(1, std::memory_order_release);
  FutexWake(&s_->state->slots_seq, INT32_MAX);
}

bool QueueCore::closed() const { return s_ == nullptr || s_->closed.load(); }

absl::Status QueueCore::TaskDone() {
  if (s_ == nullptr) return absl::FailedPreconditionError("queue handle is empty");
  QueueState* st = s_->state;
  int64_t u = st->unfinished.load(std::memory_order_acquire);
  do {
    if (u <= 0) return absl::FailedPreconditionError("TaskDone() called too many times");
  } while (!st->unfinished.compare_exchange_weak(u, u - 1, std::memory_order_acq_rel));
  if (u == 1) {
    st->join_seq.fetch_add(1, std::memory_order_release);
    FutexWake(&st->join_seq, INT32_MAX);
  }
  return absl::OkStatus();
}

absl::Status QueueCore::Join(const Deadline& deadline) {
  if (s_ == nullptr) return absl::FailedPreconditionError("queue handle is empty");
  QueueState* st = s_->state;
  for (;;) {
    uint32_t seq = st->join_seq.load(std::memory_order_acquire);
    if (st->unfinished.load(std::memory_order_acquire) <= 0) return absl::OkStatus();
    if (deadline.Expired()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "Join timed out with ", st->unfinished.load(), " unfinished tasks"));
    }
    FutexWait(&st->join_seq, seq, deadline);
  }
}

void QueueCore::EncodeHandle(EncodeBuffer& b) const {
  uint8_t present = s_ != nullptr ? 1 : 0;
  b.Append(&present, 1);
  if (!present) return;
  b.PutVarint(b.AttachFd(s_->rx.get()));
  b.PutVarint(b.AttachFd(s_->tx.get()));
  b.PutVarint(b.AttachFd(s_->segment.fd()));
}

bool QueueCore::DecodeHandle(DecodeReader& r) {
  uint8_t present;
  if (!r.Read(&present, 1)) return false;
  if (present == 0) {
    s_.reset();
    return true;
  }
  if (present != 1) return r.Fail("bad Queue handle tag");
  uint64_t i_rx, i_tx, i_seg;
  UniqueFd rx, tx, segfd;
  if (!r.ReadVarint(&i_rx) || !r.TakeFd(i_rx, &rx) || !r.ReadVarint(&i_tx) ||
      !r.TakeFd(i_tx, &tx) || !r.ReadVarint(&i_seg) || !r.TakeFd(i_seg, &segfd)) {
    return false;
  }
  absl::StatusOr<Segment> seg = Segment::FromFd(std::move(segfd));
  if (!seg.ok()) return r.Fail(std::string(seg.status().message()));
  absl::StatusOr<std::shared_ptr<QueueShared>> s = Attach(std::move(rx), std::move(tx), *std::move(seg));
  if (!s.ok()) return r.Fail(std::string(s.status().message()));
  s_ = *std::move(s);
  return true;
}

}  // namespace ipc_internal
}  // namespace mproc
