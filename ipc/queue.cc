// ipc/queue.cc — QueueCore: creating and attaching a queue, maxsize slots, and Put/Get over
// the two paths (ipc/internal/queue_rings.h: shared-memory rings; ipc/internal/queue_socket.h:
// the socket), whose layout and rules are in ipc/internal/queue_state.h.
#include "ipc/queue.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <deque>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "base/futex.h"
#include "base/io_ring.h"
#include "base/owner.h"
#include "base/process_id.h"
#include "base/spin.h"
#include "base/status.h"
#include "base/syscall.h"
#include "ipc/internal/queue_rings.h"
#include "ipc/internal/queue_socket.h"
#include "ipc/internal/queue_state.h"
#include "serialize/frame.h"
#include "shm/segment.h"

namespace mproc {
namespace ipc_internal {
namespace {

absl::StatusOr<std::shared_ptr<QueueShared>> Attach(UniqueFd rx, UniqueFd tx, UniqueFd doorbell,
                                                    Segment seg) {
  auto s = std::make_shared<QueueShared>();
  s->doorbell = std::move(doorbell);
  MPROC_ASSIGN_OR_RETURN(Mapping m, seg.Map());
  if (m.size() < kSegmentBytes) return absl::InvalidArgumentError("queue segment too small");
  const auto* st = static_cast<const QueueState*>(m.data());
  if (st->magic != kQueueMagic || st->version != kQueueVersion ||
      st->state_bytes != sizeof(QueueState)) {
    return absl::InvalidArgumentError(
        "not an mproc queue segment (or one of another mproc version): bad magic or layout");
  }
  s->rx = std::move(rx);
  s->tx = std::move(tx);
  s->segment = std::move(seg);
  s->mapping = std::move(m);
  s->state = static_cast<QueueState*>(s->mapping.data());
  s->ring_data = static_cast<std::byte*>(s->mapping.data()) + kStateBytes;
  // Non-blocking channel ends: several processes receive from them, and a receive that loses
  // the race for a record must not block.
  if (SetNonBlocking(s->rx.get(), true) < 0 || SetNonBlocking(s->tx.get(), true) < 0 ||
      SetNonBlocking(s->doorbell.get(), true) < 0) {
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
    // Dekker with ReleaseSlot: announce the wait, then look at the count once more.
    st->slot_waiters.fetch_add(1, std::memory_order_seq_cst);
    if (st->used.load(std::memory_order_seq_cst) < static_cast<int64_t>(st->maxsize)) {
      st->slot_waiters.fetch_sub(1, std::memory_order_relaxed);
      continue;
    }
    int r = -EOPNOTSUPP;
    if (CanWaitFutexWithFds()) {
      // io_uring with futex opcodes: the slot word in one completion wait, no slices (Close
      // bumps the word).
      bool woken;
      r = WaitEventsOrFutex({}, &st->slots_seq, seq, deadline, &woken);
    }
    if (r == -EOPNOTSUPP) FutexWait(&st->slots_seq, seq, deadline.Slice(kCloseSlice));
    st->slot_waiters.fetch_sub(1, std::memory_order_relaxed);
    if (r < 0 && r != -EOPNOTSUPP) return ErrnoToStatus(-r, "wait(queue slot)");
  }
}

// Frees a maxsize slot; a system call only when a producer waits for one.
void ReleaseSlot(QueueState* st) {
  if (st->maxsize == 0) return;
  st->used.fetch_sub(1, std::memory_order_seq_cst);
  if (st->slot_waiters.load(std::memory_order_seq_cst) == 0) return;
  st->slots_seq.fetch_add(1, std::memory_order_release);
  FutexWake(&st->slots_seq, 1);
}

// Counted before the item becomes visible, so a TaskDone that races ahead never drives the
// count negative.
void CountPut(QueueState* st, int64_t k) {
  if (st->joinable) st->unfinished.fetch_add(k, std::memory_order_acq_rel);
}

// Undoes CountPut and the slots of `k` items that were not put.
void UndoPut(QueueState* st, int64_t k) {
  if (k == 0) return;
  if (st->joinable) st->unfinished.fetch_sub(k, std::memory_order_acq_rel);
  for (int64_t i = 0; st->maxsize > 0 && i < k; ++i) ReleaseSlot(st);
}

}  // namespace

absl::StatusOr<QueueCore> QueueCore::Create(size_t maxsize, bool joinable) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoToStatus(errno, "socketpair(queue)");
  }
  UniqueFd rx(sv[0]);
  UniqueFd tx(sv[1]);
  UniqueFd doorbell(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!doorbell.ok()) return ErrnoToStatus(errno, "eventfd(queue doorbell)");
  // The rings' pages are allocated as they are first written (a lazy memfd): an idle queue
  // costs one page of state.
  MPROC_ASSIGN_OR_RETURN(Segment seg, Segment::Create(kSegmentBytes, "mproc-queue"));
  {
    MPROC_ASSIGN_OR_RETURN(Mapping m, seg.Map());
    auto* st = new (m.data()) QueueState();
    st->maxsize = maxsize;
    st->joinable = joinable ? 1 : 0;
  }
  QueueCore q;
  MPROC_ASSIGN_OR_RETURN(q.s_, Attach(std::move(rx), std::move(tx), std::move(doorbell),
                                      std::move(seg)));
  return q;
}

absl::Status QueueCore::Put(const EncodeBuffer& item, const Deadline& deadline, bool block) {
  size_t put = 0;
  return PutMany(std::span<const EncodeBuffer>(&item, 1), deadline, block, &put);
}

absl::Status QueueCore::PutMany(std::span<const EncodeBuffer> items, const Deadline& deadline,
                                bool block, size_t* put) {
  *put = 0;
  if (s_ == nullptr) return absl::FailedPreconditionError("queue handle is empty");
  QueueShared& s = *s_;
  QueueState* st = s.state;
  for (const EncodeBuffer& item : items) {
    if (item.fds().size() + 1 > kMaxFds) {
      return absl::InvalidArgumentError(absl::StrCat("an item may carry at most ", kMaxFds - 1,
                                                     " descriptors"));
    }
  }
  size_t done = 0;
  absl::Status status;
  bool wake_due = false;  // an item of this call went into an empty ring, not yet announced
  // The producer lock is held across a run of items, not taken per item; a bounded queue
  // leaves it to take each item's slot (which may block).
  while (done < items.size() && status.ok()) {
    if (s.closed.load(std::memory_order_relaxed)) {
      status = ClosedError();
      break;
    }
    // A maxsize slot per item, taken outside the producer lock (it may block: announce what
    // this batch published first, or the consumers who would free slots may sleep on).
    if (st->maxsize > 0) {
      if (wake_due) {
        WakeConsumer(st);
        wake_due = false;
      }
      status = AcquireSlot(s, deadline, block);
      if (!status.ok()) break;
    }
    MutexLock lock(&s.put_mu);
    do {
      if (s.closed.load(std::memory_order_relaxed)) {
        status = ClosedError();
        break;
      }
      const int ri = MyRing(s);
      if (UsesSocket(items[done], s)) {
        // A run of socket items goes out in one system call where it can.
        size_t k = 1;
        while (done + k < items.size() && k < 32 && UsesSocket(items[done + k], s) &&
               (st->maxsize == 0 || AcquireSlot(s, deadline, false).ok())) {
          ++k;
        }
        CountPut(st, static_cast<int64_t>(k));
        absl::StatusOr<size_t> sent = SocketPut(s, ri, items.subspan(done, k), deadline, block);
        const size_t n = sent.ok() ? *sent : 0;
        UndoPut(st, static_cast<int64_t>(k - n));
        done += n;
        if (!sent.ok()) status = sent.status();
        continue;
      }
      CountPut(st, 1);
      bool was_empty = false;
      status = RingPut(s, ri, items[done].bytes(), deadline, block, &was_empty);
      if (!status.ok()) {
        UndoPut(st, 1);
        break;
      }
      ++done;
      wake_due |= was_empty;
      // Batches wake consumers at most once per 32 items and at the end, not per item.
      if (wake_due && done % 32 == 0) {
        WakeConsumer(st);
        wake_due = false;
      }
    } while (status.ok() && done < items.size() && st->maxsize == 0);
  }
  if (wake_due) WakeConsumer(st);
  *put = done;
  return status;
}

absl::Status QueueCore::Get(const Deadline& deadline, bool block,
                            std::span<const std::byte>* item, std::vector<UniqueFd>* fds) {
  // Items are copied out into this thread's buffer, which keeps its capacity from one Get to
  // the next (up to 8 MiB: a bigger item's buffer is not kept).
  TakeBuffer& buffer = ThreadScratch<TakeBuffer, struct GetScratch>();
  if (buffer.cap > (8u << 20)) buffer = TakeBuffer();
  TakeBuffer* bytes = &buffer;
  *item = {};
  if (s_ == nullptr) return absl::FailedPreconditionError("queue handle is empty");
  QueueShared& s = *s_;
  QueueState* st = s.state;
  bool counted = false;
  auto take = [&](bool force) -> absl::Status {
    int bad = -1;
    switch (TakeFromRings(s, bytes, &bad)) {
      case Take::kTaken:
        counted = true;
        fds->clear();
        return absl::OkStatus();
      case Take::kCorrupt:
        counted = false;
        return CorruptRing(bad);
      case Take::kNone:
        break;
    }
    return TakeFromSocket(s, force, bytes, fds, &counted);
  };
  auto taken = [&](const absl::Status& t) {
    if (absl::IsUnavailable(t)) return false;
    if (counted) ReleaseSlot(st);
    if (t.ok()) *item = std::span<const std::byte>(bytes->data.get(), bytes->size);
    return true;
  };
  // A consumer that took an item while others sleep wakes one of them if items remain: a
  // publish wakes a sleeper only when it found its ring empty (WakeConsumer).
  auto pass_on = [&] {
    if (st->sleepers.load(std::memory_order_seq_cst) > 0 && MayHaveItems(st)) WakeConsumer(st);
  };
  // A consumer streaming items (its last Get found one waiting) that catches up with the
  // producers pauses (PauseToGather, base/spin.h: ~1.6 us here) before looking again: looking
  // at once made a 1 -> 1 stream 2-3x slower than letting a few items gather. A consumer that had to wait last time looks at once (a
  // ping-pong over queues pays nothing).
  thread_local bool streaming = false;
  bool first = true;
  bool spun = false;
  for (;;) {
    if (s.closed.load(std::memory_order_relaxed)) return ClosedError();
    if (s.has_stash.load(std::memory_order_acquire)) [[unlikely]] {
      // An item this process already received comes before anything still queued.
      absl::Status t = TakeStashed(s, bytes, fds);
      if (t.ok()) *item = std::span<const std::byte>(bytes->data.get(), bytes->size);
      if (!absl::IsUnavailable(t)) return t;
    }
    absl::Status t = take(/*force=*/false);
    bool got = taken(t);  // (taken() frees the item's slot: once per item)
    if (!got && first && streaming && block) {
      PauseToGather();
      t = take(/*force=*/false);
      got = taken(t);
    }
    if (got) {
      if (t.ok()) pass_on();
      streaming = first && t.ok();
      return t;
    }
    first = false;
    streaming = false;
    if (!block) {
      DrainDoorbell(s);
      return t;
    }
    if (!spun) {
      // An item usually follows within microseconds: look briefly before sleeping.
      spun = true;
      if (SpinUntil([&] { return MayHaveItems(st); }, deadline)) continue;
    }
    if (deadline.Expired()) return absl::DeadlineExceededError("queue is empty: Get timed out");
    const uint32_t seq = st->items_seq.load(std::memory_order_seq_cst);
    st->sleepers.fetch_add(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the publish's tail store
    t = take(/*force=*/true);
    if (taken(t)) {
      st->sleepers.fetch_sub(1, std::memory_order_seq_cst);
      if (t.ok()) pass_on();
      return t;
    }
    DrainDoorbell(s);
    FutexWait(&st->items_seq, seq, deadline);
    st->sleepers.fetch_sub(1, std::memory_order_seq_cst);
  }
}

absl::StatusOr<size_t> QueueCore::TakeRun(size_t max, std::vector<std::byte>* bytes,
                                           std::vector<std::pair<uint32_t, uint32_t>>* items,
                                           bool* empty) {
  *empty = false;
  if (s_ == nullptr) return absl::FailedPreconditionError("queue handle is empty");
  QueueShared& s = *s_;
  if (s.closed.load(std::memory_order_relaxed)) return ClosedError();
  // An item this process already received comes first: Get takes it.
  if (s.has_stash.load(std::memory_order_acquire)) return 0;
  int bad = -1;
  const int n = TakeRunFromRing(s, max, bytes, items, &bad);
  if (n == -2) {
    // The one active ring is empty; so is the queue unless an item waits on the socket. Drain
    // the doorbell as a Get that finds nothing does, or fileno() would stay readable.
    *empty = s.state->socket_items.load(std::memory_order_seq_cst) <= 0;
    if (*empty) DrainDoorbell(s);
    return 0;
  }
  if (n < 0) return CorruptRing(bad);
  QueueState* st = s.state;
  for (int i = 0; i < n; ++i) ReleaseSlot(st);
  // As Get's pass_on: a consumer that took items while others sleep wakes one if more remain.
  if (n > 0 && st->sleepers.load(std::memory_order_seq_cst) > 0 && MayHaveItems(st)) {
    WakeConsumer(st);
  }
  return static_cast<size_t>(n);
}

int QueueTesting::ProducerRing(const QueueCore& q) {
  if (q.s_ == nullptr) return -1;
  MutexLock lock(&q.s_->put_mu);
  return q.s_->ring_pid == CurrentPid() ? q.s_->ring : -1;
}

absl::Status QueueTesting::UseSharedRing(QueueCore& q, int k) {
  if (q.s_ == nullptr || k < 0 || k >= kSharedRings) {
    return absl::InvalidArgumentError("no such shared ring");
  }
  QueueShared& s = *q.s_;
  MutexLock lock(&s.put_mu);
  if (s.ring >= 0 && s.ring < kOwnRings && s.ring_pid == CurrentPid()) {
    uint64_t me = CurrentProcessOwner();
    s.state->rings[s.ring].owner.compare_exchange_strong(me, 0);
  }
  s.ring = kOwnRings + k;
  s.ring_pid = CurrentPid();
  s.state->active.fetch_or(1u << s.ring, std::memory_order_acq_rel);
  return absl::OkStatus();
}

absl::Status QueueTesting::HoldSharedRingLock(QueueCore& q) {
  if (q.s_ == nullptr) return absl::FailedPreconditionError("queue handle is empty");
  QueueShared& s = *q.s_;
  MutexLock lock(&s.put_mu);
  if (s.ring_pid != CurrentPid() || !IsShared(s.ring)) {
    return absl::FailedPreconditionError("this process does not put into a shared ring");
  }
  return LockSharedRing(s.state->rings[s.ring], Deadline::Infinite());
}

size_t QueueCore::Qsize() const {
  if (s_ == nullptr) return 0;
  const QueueState* st = s_->state;
  int64_t c = st->socket_items.load(std::memory_order_relaxed);
  if (c < 0) c = 0;
  for (const RingHeader& r : st->rings) {
    const uint64_t taken = r.taken.load(std::memory_order_relaxed);
    const uint64_t published = r.published.load(std::memory_order_relaxed);
    if (published > taken) c += static_cast<int64_t>(published - taken);
  }
  return static_cast<size_t>(c);
}

bool QueueCore::Empty() const {
  if (s_ == nullptr) return true;
  if (!RingsEmpty(s_->state)) return false;
  pollfd p = {s_->rx.get(), POLLIN, 0};
  return RetryEintr([&] { return ::poll(&p, 1, 0); }) == 0;
}

int QueueCore::fileno() const {
  if (s_ == nullptr) return -1;
  QueueShared& s = *s_;
  if (s.state->doorbell_armed.exchange(1, std::memory_order_seq_cst) == 0 &&
      MayHaveItems(s.state)) {
    RingDoorbell(s);  // items queued before anyone asked
  }
  return s.doorbell.get();
}

bool QueueCore::Full() const {
  if (s_ == nullptr) return false;
  const QueueState* st = s_->state;
  return st->maxsize > 0 && st->used.load(std::memory_order_relaxed) >= static_cast<int64_t>(st->maxsize);
}

size_t QueueCore::maxsize() const { return s_ ? static_cast<size_t>(s_->state->maxsize) : 0; }

void QueueCore::Close() {
  if (s_ == nullptr || s_->closed.exchange(true)) return;
  QueueState* st = s_->state;
  // Wake this process's waiters (and, harmlessly, other processes'; they wait again).
  st->items_seq.fetch_add(1, std::memory_order_seq_cst);
  FutexWake(&st->items_seq, INT32_MAX);
  st->slots_seq.fetch_add(1, std::memory_order_release);
  FutexWake(&st->slots_seq, INT32_MAX);
  for (RingHeader& r : st->rings) {
    r.space_seq.fetch_add(1, std::memory_order_seq_cst);
    FutexWake(&r.space_seq, INT32_MAX);
  }
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
  b.PutVarint(b.AttachFd(s_->doorbell.get()));
}

bool QueueCore::DecodeHandle(DecodeReader& r) {
  uint8_t present;
  if (!r.Read(&present, 1)) return false;
  if (present == 0) {
    s_.reset();
    return true;
  }
  if (present != 1) return r.Fail("bad Queue handle tag");
  uint64_t i_rx, i_tx, i_seg, i_bell;
  UniqueFd rx, tx, segfd, bell;
  if (!r.ReadVarint(&i_rx) || !r.TakeFd(i_rx, &rx) || !r.ReadVarint(&i_tx) ||
      !r.TakeFd(i_tx, &tx) || !r.ReadVarint(&i_seg) || !r.TakeFd(i_seg, &segfd) ||
      !r.ReadVarint(&i_bell) || !r.TakeFd(i_bell, &bell)) {
    return false;
  }
  absl::StatusOr<Segment> seg = Segment::FromFd(std::move(segfd));
  if (!seg.ok()) return r.Fail(std::string(seg.status().message()));
  absl::StatusOr<std::shared_ptr<QueueShared>> s = Attach(std::move(rx), std::move(tx), std::move(bell), *std::move(seg));
  if (!s.ok()) return r.Fail(std::string(s.status().message()));
  s_ = *std::move(s);
  return true;
}

}  // namespace ipc_internal
}  // namespace mproc

