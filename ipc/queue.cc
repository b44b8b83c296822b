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
#include <mutex>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "base/futex.h"
#include "base/io_ring.h"
#include "base/owner.h"
#include "ipc/internal/byte_ring.h"
#include "base/process_id.h"
#include "base/status.h"
#include "base/spin.h"
#include "base/syscall.h"
#include "serialize/frame.h"
#include "shm/segment.h"

namespace mproc {
namespace ipc_internal {
namespace {

// ---- The shared-memory rings (the path of ordinary items) ------------------------------------
//
// Each of the first kOwnRings producer processes owns one ring: a byte ring in the queue's
// segment that only it writes (under a process-local mutex), so publishing is one release
// store of `tail` and a producer killed while writing has published nothing. Producers beyond
// those (an HPC node's 32 or 64) share the kSharedRings rings that follow, spread evenly,
// each writing under the ring's put lock (an owner word, base/owner.h: a producer killed
// holding it is taken over from, and what it half wrote lies past `tail`, unpublished). They
// keep every guarantee of an owned ring; they pay a lock per Put, and contend for it only with
// the producers of their own ring. (Before, they went to the socket: a system call per item at
// both ends, 9-14x slower per item than 16 producers on rings, and outside the order stamps.) Consumers in any process claim the record at
// `head` by copying it out first and then moving `head` past it with a CAS: a consumer killed
// before the CAS took nothing, one killed after it held exactly that item. A losing CAS
// discards the copy (the producer only reuses bytes behind `head`, so a copy that loses the CAS
// may be torn but is never used). Records are a header and the bytes, padded to 8: 8 bytes
// (length, tag) for an unstamped record, 16 (length, stamped tag, order stamp) for a stamped one.
//
// Order across producers (DESIGN.md: Puts ordered by happens-before come out in that order).
// Once a second ring has ever been owned, every record carries an order stamp: a fetch_add on
// one shared counter, taken before the record is published. If Put A happens before Put B,
// A's fetch_add precedes B's in the counter's modification order, so stamp(A) < stamp(B). A
// consumer takes the record with the smallest stamp among the rings' heads, and confirms it:
// it looks again at every ring it found empty, after it saw the candidate published. Any A
// that happens before candidate B was published before B was stamped, so that second look
// finds it (a ring's later records only carry larger stamps, so rings seen non-empty need no
// second look). While one ring is all there has ever been, records carry stamp 0 and no
// counter is touched: a lone producer pays nothing.
constexpr int kOwnRings = kQueueOwnRings;
constexpr int kSharedRings = kQueueSharedRings;
constexpr int kRings = kOwnRings + kSharedRings;
static_assert(kRings <= 32, "`active` has a bit per ring");
constexpr uint64_t kRingBytes = 8 << 20;
// A producer may fill its ring up to this many bytes, except that an empty ring always takes
// one record: the byte budget of an unbounded queue.
constexpr uint64_t kRingBudget = 4 << 20;
constexpr uint64_t kRecordHeader = 8;          // length, tag
constexpr uint64_t kStampedHeader = 16;         // length, stamped tag, order stamp
constexpr uint32_t kStampedTag = 0x4d505253;    // "SRPM"
constexpr uint32_t kRecordTag = 0x4d505251;  // "QRPM"
// Items bigger than this, and items carrying descriptors, travel on the socket.
constexpr uint64_t kRingMaxItem = kRingBytes - 2 * kStampedHeader;

// ---- The socket path (items with descriptors, and items bigger than a ring) ------------------
//
// One SOCK_SEQPACKET pair shared by every handle: each item is one record (the kernel hands a
// whole record to exactly one receiver). The payload starts with the sending producer's ring
// index (or -1), so the receiver can tell that producer its socket item is gone.
constexpr uint8_t kInline = 1;
constexpr uint8_t kInMemfd = 2;
constexpr size_t kSocketInlineMax = 64 << 10;
constexpr size_t kRingTag = sizeof(int32_t);
constexpr size_t kMaxRecord = kFrameHeaderSize + kRingTag + kSocketInlineMax;
constexpr size_t kMaxFds = 253;

// For a shared ring, "the owner" below means each of its producers: they wait for space and
// for their socket items together (and are woken together).
struct alignas(64) RingHeader {
  std::atomic<uint64_t> owner{0};          // the producer (base/owner.h: pid + start time), 0: free
  std::atomic<uint32_t> space_seq{0};      // futex: bumped when head moves and the owner waits
  std::atomic<uint32_t> owner_waiting{0};  // the owner waits for space (or for socket_pending)
  std::atomic<int32_t> socket_pending{0};  // the owner's socket items not yet received
  std::atomic<uint32_t> put_lock{0};       // a shared ring's writers: an owner word (tid)
  std::atomic<uint64_t> wake_head{0};      // a waiting owner wants waking once head reaches it
  alignas(64) std::atomic<uint64_t> head{0};  // consumers' claim position (bytes, monotonic)
  std::atomic<uint64_t> taken{0};             // records claimed (for Qsize)
  alignas(64) std::atomic<uint64_t> tail{0};  // the owner's publish position
  std::atomic<uint64_t> published{0};         // records published (for Qsize)
};

// In the queue's shared segment, followed by kRings rings of kRingBytes.
// Item counts live beside each ring's head and tail (and socket_items), not in one shared
// counter that producer and consumer would bounce between their CPUs on every item.
constexpr uint64_t kQueueMagic = 0x6d70726f632d7175ULL;  // "mproc-qu"
// Bumped whenever the layout below changes: a segment from another build is refused.
constexpr uint32_t kQueueVersion = 4;

struct alignas(64) QueueState {
  uint64_t magic = kQueueMagic;
  uint32_t version = kQueueVersion;
  uint32_t state_bytes = sizeof(QueueState);  // another build's layout shows here too
  std::atomic<int64_t> unfinished{0};  // JoinableQueue: put but not TaskDone'd
  std::atomic<uint32_t> join_seq{0};   // futex: bumped when unfinished reaches 0
  std::atomic<uint32_t> slots_seq{0};  // futex: bumped when a slot frees
  std::atomic<int64_t> used{0};        // maxsize slots taken
  std::atomic<uint32_t> slot_waiters{0};  // producers about to wait on slots_seq
  uint64_t maxsize = 0;
  uint32_t joinable = 0;
  alignas(64) std::atomic<uint32_t> items_seq{0};  // futex: bumped on publish when sleepers
  std::atomic<uint32_t> sleepers{0};               // consumers about to wait on items_seq
  std::atomic<int64_t> socket_items{0};            // records on the socket (approximate)
  std::atomic<uint32_t> doorbell_armed{0};         // someone asked for fileno(): ring it
  // Read by every Put and Get, written when a ring is first owned: a line of its own.
  alignas(64) std::atomic<uint32_t> active{0};     // bit r: ring r was ever owned
  std::atomic<uint32_t> shared_joins{0};           // producers given a shared ring, ever
  // The order stamps' counter (see above); starts at 1, so every stamp beats stamp 0.
  alignas(64) std::atomic<uint64_t> order{1};
  RingHeader rings[kRings];
};

// The layout is shared between processes, so it must not depend on anything but this file:
// lock-free atomics only (a lock inside a std::atomic would be process-private), standard
// layout, nothing to destroy, and the indices producers and consumers write apart.
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free &&
              std::atomic<int64_t>::is_always_lock_free && std::atomic<int32_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<QueueState> && std::is_standard_layout_v<RingHeader>);
static_assert(std::is_trivially_destructible_v<QueueState>);
static_assert(sizeof(RingHeader) == 3 * 64 && alignof(RingHeader) == 64);
static_assert(offsetof(RingHeader, head) == 64 && offsetof(RingHeader, tail) == 128);
static_assert(offsetof(QueueState, items_seq) % 64 == 0 && offsetof(QueueState, rings) % 64 == 0 &&
              offsetof(QueueState, active) % 64 == 0 && offsetof(QueueState, order) % 64 == 0);

constexpr uint64_t kStateBytes = (sizeof(QueueState) + 4095) / 4096 * 4096;
constexpr uint64_t kSegmentBytes = kStateBytes + kRings * kRingBytes;

using Ring = ByteRing<kRingBytes>;

}  // namespace

// One per process per queue: the shared channel and state, and this process's producer ring.
struct QueueShared {
  UniqueFd rx;
  UniqueFd tx;
  UniqueFd doorbell;  // eventfd shared by every handle: readable while items (may) wait
  Segment segment;
  Mapping mapping;
  QueueState* state = nullptr;
  std::byte* ring_data = nullptr;  // kRings * kRingBytes
  std::atomic<bool> closed{false};

  std::mutex put_mu;      // this process's producers, one at a time
  int ring = -1;          // the ring this process puts into (guarded by put_mu)
  pid_t ring_pid = 0;     // ...when chosen by this pid (a fork child chooses its own)
  uint64_t head_cache = 0;   // our ring's head as last read (guarded by put_mu): a lower bound
  // Each ring's tail as last read by a consumer here: a lower bound, so a consumer reads the
  // producer's cache line only when it has caught up.
  std::atomic<uint64_t> tail_cache[kRings] = {};
  // The largest order stamp a consumer here saw at each ring's head: every record the ring
  // holds or will hold has a larger one (TakeFromRings).
  std::atomic<uint64_t> head_floor[kRings] = {};

  // Socket items this process received (claimed: no other consumer can have them) but could
  // not map: out of address space or of mappings. Kept, and returned first by the next Get in
  // this process, so a transient failure loses nothing. A fork child's copy is not its own.
  struct Stashed {
    Segment segment;
    uint64_t len = 0;
    std::vector<UniqueFd> fds;
  };
  std::mutex stash_mu;
  std::deque<Stashed> stash;
  pid_t stash_pid = 0;
  std::atomic<bool> has_stash{false};

  ~QueueShared() {
    if (ring >= 0 && ring < kOwnRings && ring_pid == CurrentPid()) {
      uint64_t me = CurrentProcessOwner();
      state->rings[ring].owner.compare_exchange_strong(me, 0);
    }
  }
};

namespace {

absl::Status ClosedError() { return absl::FailedPreconditionError("queue is closed"); }

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

// Waits go in bounded slices (Deadline::Slice), so a Close in another thread of this process
// is noticed.
constexpr absl::Duration kCloseSlice = absl::Milliseconds(50);

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

bool RingsEmpty(const QueueState* st) {
  const uint32_t active = st->active.load(std::memory_order_acquire);
  for (int i = 0; i < kRings; ++i) {
    if ((active & (1u << i)) == 0) continue;  // never owned: never written
    if (st->rings[i].head.load(std::memory_order_acquire) <
        st->rings[i].tail.load(std::memory_order_acquire)) {
      return false;
    }
  }
  return true;
}

// Whether an item is (probably) waiting in a ring or on the socket.
bool MayHaveItems(const QueueState* st) {
  return !RingsEmpty(st) || st->socket_items.load(std::memory_order_seq_cst) > 0;
}

// The doorbell (for Wait() over fileno()): readable while the queue may have items. Rung by a
// producer whose publish made its ring (or the socket) non-empty; drained by a consumer that
// found the queue empty, which then looks again and re-rings if an item slipped in between.
void RingDoorbell(QueueShared& s) {
  if (s.state->doorbell_armed.load(std::memory_order_relaxed) == 0) return;
  uint64_t one = 1;
  (void)!::write(s.doorbell.get(), &one, sizeof(one));
}

// A consumer found the queue empty: the doorbell goes quiet, unless an item slipped in.
void DrainDoorbell(QueueShared& s) {
  if (s.state->doorbell_armed.load(std::memory_order_relaxed) == 0) return;
  uint64_t v;
  (void)!::read(s.doorbell.get(), &v, sizeof(v));
  if (MayHaveItems(s.state)) RingDoorbell(s);
}

// Wakes a consumer waiting for items. A consumer sleeps only after seeing every ring empty
// (with `sleepers` raised first), so a producer calls this only for a publish that found its
// ring empty (RingPut's `was_empty`), for socket items, and before it waits itself; a woken
// consumer that leaves items behind passes the wake on (Get). So a sleeping consumer costs
// one wake, not one per Put until it runs again.
void WakeConsumer(QueueState* st) {
  if (st->sleepers.load(std::memory_order_seq_cst) == 0) return;
  st->items_seq.fetch_add(1, std::memory_order_seq_cst);
  FutexWake(&st->items_seq, 1);
}

// Wakes the owner of ring `r` if it waits for space or for its socket items: once per wait
// (the owner raises owner_waiting again before each sleep), and for space only once `head`
// (the ring's head after this consumer's take) reached the owner's wake_head, so that a
// producer faster than its consumers sleeps until half its budget is free instead of being
// woken for every item. UINT64_MAX: wake whatever the owner waits for.
void WakeOwner(RingHeader& r, uint64_t head) {
  if (r.owner_waiting.load(std::memory_order_seq_cst) == 0 ||
      head < r.wake_head.load(std::memory_order_relaxed) ||
      r.owner_waiting.exchange(0, std::memory_order_seq_cst) == 0) {
    return;
  }
  r.space_seq.fetch_add(1, std::memory_order_seq_cst);
  FutexWake(&r.space_seq, INT32_MAX);
}

bool IsShared(int ri) { return ri >= kOwnRings; }

// The ring this process produces into, chosen on first use (requires put_mu): a free owned
// ring, else a dead producer's, else a shared one (the next in turn).
int MyRing(QueueShared& s) {
  const pid_t pid = CurrentPid();
  if (s.ring_pid == pid) return s.ring;
  s.ring = -1;  // a fork child: the parent's ring is the parent's
  s.ring_pid = pid;
  const uint64_t me = CurrentProcessOwner();
  QueueState* st = s.state;
  for (int pass = 0; pass < 2 && s.ring < 0; ++pass) {
    for (int i = 0; i < kOwnRings; ++i) {
      uint64_t owner = st->rings[i].owner.load(std::memory_order_acquire);
      // First pass: free rings; second: rings whose owner died, zombies included (their items
      // stay queued ahead of ours, which keeps each producer's order).
      if (pass == 0 ? owner != 0 : ProcessOwnerAlive(owner)) continue;
      if (st->rings[i].owner.compare_exchange_strong(owner, me, std::memory_order_acq_rel)) {
        s.ring = i;
        s.head_cache = st->rings[i].head.load(std::memory_order_acquire);
        st->active.fetch_or(1u << i, std::memory_order_acq_rel);
        break;
      }
    }
  }
  if (s.ring < 0) {
    s.ring = kOwnRings + static_cast<int>(st->shared_joins.fetch_add(1, std::memory_order_relaxed) %
                                          kSharedRings);
    s.head_cache = 0;  // unused: a shared ring's head is read afresh
    st->active.fetch_or(1u << s.ring, std::memory_order_acq_rel);
  }
  return s.ring;
}

// Producer ring `ri` of the queue.
Ring RingOf(const QueueShared& s, int ri) {
  return Ring(s.ring_data + static_cast<uint64_t>(ri) * kRingBytes);
}

// Waits on the owner's space_seq (in slices, minding Close) until `ready()`; OK, or
// RESOURCE_EXHAUSTED (non-blocking), DEADLINE_EXCEEDED, FAILED_PRECONDITION (closed).
// `wake_head`: consumers wake the owner only once the ring's head reaches it (0: at any
// take). ready() may hold before that; slices of 2 ms bound how long the owner then sleeps
// on (consumers that stopped taking short of wake_head), and let it notice a Close.
template <typename Ready>
absl::Status WaitAsOwner(QueueShared& s, RingHeader& r, const Deadline& deadline, bool block,
                         uint64_t wake_head, Ready ready) {
  for (;;) {
    if (ready()) return absl::OkStatus();
    if (!block) return absl::ResourceExhaustedError("queue's byte budget is full");
    if (deadline.Expired()) {
      return absl::DeadlineExceededError("queue's byte budget is full: Put timed out");
    }
    if (s.closed.load(std::memory_order_relaxed)) return ClosedError();
    // Consumers asleep on items this batch published but has not announced yet would never
    // make the space we wait for.
    WakeConsumer(s.state);
    uint32_t seq = r.space_seq.load(std::memory_order_seq_cst);
    r.wake_head.store(wake_head, std::memory_order_relaxed);
    r.owner_waiting.store(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the consumer's CAS
    if (!ready()) FutexWait(&r.space_seq, seq, deadline.Slice(absl::Milliseconds(2)));
    r.owner_waiting.store(0, std::memory_order_relaxed);
  }
}

// Writes one record at `t` (where ring `ri`'s tail is) and publishes it; the caller has made
// sure it fits and, for a shared ring, holds its put lock.
void Publish(QueueShared& s, int ri, uint64_t t, std::span<const std::byte> bytes, bool stamped,
             bool* was_empty) {
  RingHeader& r = s.state->rings[ri];
  const Ring data = RingOf(s, ri);
  const uint64_t header_bytes = stamped ? kStampedHeader : kRecordHeader;
  // The order stamp, taken after any wait (a Put that happens before this one has published
  // by now) and before publishing; in a shared ring, under its lock, so its stamps grow.
  if (stamped) {
    const uint32_t h[2] = {static_cast<uint32_t>(bytes.size()), kStampedTag};
    const uint64_t stamp = s.state->order.fetch_add(1, std::memory_order_seq_cst);
    data.CopyIn(t, h, sizeof(h));
    data.CopyIn(t + sizeof(h), &stamp, sizeof(stamp));
  } else {
    const uint32_t h[2] = {static_cast<uint32_t>(bytes.size()), kRecordTag};
    data.CopyIn(t, h, sizeof(h));
  }
  data.CopyIn(t + header_bytes, bytes.data(), bytes.size());
  r.published.store(r.published.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  r.tail.store(t + RecordBytes(bytes.size(), header_bytes), std::memory_order_seq_cst);
  // Dekker with a consumer going to sleep: it raises `sleepers`, then finds every ring empty.
  // The consumers' head is read only when someone sleeps or watches fileno(): it is their
  // line, and reading it on every Put would pull it across CPUs.
  const bool watched = s.state->sleepers.load(std::memory_order_seq_cst) != 0 ||
                       s.state->doorbell_armed.load(std::memory_order_relaxed) != 0;
  *was_empty = watched && r.head.load(std::memory_order_seq_cst) == t;
  if (*was_empty) RingDoorbell(s);
}

// Whether ring `ri`'s owner (every producer of a shared ring) has no socket item pending, so
// a ring item may follow them. A consumer killed between receiving one and saying so leaves
// the count high: an empty socket means nothing is pending.
bool SocketItemsReceived(QueueShared& s, RingHeader& r) {
  if (r.socket_pending.load(std::memory_order_acquire) <= 0) return true;
  pollfd p = {s.rx.get(), POLLIN, 0};
  if (::poll(&p, 1, 0) != 0) return false;
  r.socket_pending.store(0, std::memory_order_release);
  return true;
}

// Whether a record of `need` bytes fits a ring with `used` bytes unconsumed.
bool RecordFits(uint64_t used, uint64_t need) {
  return used == 0 ? need <= kRingBytes : used + need <= kRingBudget;
}

// Takes shared ring `r`'s put lock: a short spin (the holder copies one item), then a sleep
// that takes the lock over from a holder found dead (base/owner.h). The lock is never held
// across a call that takes it again, so a word holding our own tid is a dead thread's.
absl::Status LockSharedRing(RingHeader& r, const Deadline& deadline) {
  const uint32_t me = CurrentTid();
  if (TakeFreeOwnerWord(&r.put_lock, me)) return absl::OkStatus();
  if (SpinUntil([&] {
        return r.put_lock.load(std::memory_order_relaxed) == 0 && TakeFreeOwnerWord(&r.put_lock, me);
      }, deadline, SpinMode::kHandoff)) {
    return absl::OkStatus();
  }
  if (AcquireOwnerWord(&r.put_lock, me, deadline, OwnerSelf::kStale) != OwnerAcquire::kTimedOut) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError("queue: Put timed out waiting for its shared producer ring");
}

// RingPut for a shared ring: under its put lock, once room and no pending socket item of its
// producers; waits for either without the lock (so a non-blocking Put of another producer is
// never held up by a waiting one), then looks again under it.
absl::Status SharedRingPut(QueueShared& s, int ri, std::span<const std::byte> bytes, bool stamped,
                           const Deadline& deadline, bool block, bool* was_empty) {
  RingHeader& r = s.state->rings[ri];
  const uint64_t need = RecordBytes(bytes.size(), stamped ? kStampedHeader : kRecordHeader);
  auto ready = [&] {
    return SocketItemsReceived(s, r) &&
           RecordFits(r.tail.load(std::memory_order_acquire) - r.head.load(std::memory_order_acquire),
                      need);
  };
  for (;;) {
    MPROC_RETURN_IF_ERROR(LockSharedRing(r, block ? deadline : Deadline::Infinite()));
    if (ready()) {
      Publish(s, ri, r.tail.load(std::memory_order_relaxed), bytes, stamped, was_empty);
      ReleaseOwnerWord(&r.put_lock);
      return absl::OkStatus();
    }
    ReleaseOwnerWord(&r.put_lock);
    // Woken at any take (wake_head 0): the ring's producers wait together.
    MPROC_RETURN_IF_ERROR(WaitAsOwner(s, r, deadline, block, 0, ready));
  }
}

// Publishes one ordinary item into ring `ri` (requires put_mu). Waits while the owner's
// socket items are unreceived (so they stay ahead of this one) and for space.
// `*was_empty`: the ring held nothing else once the item was published (a consumer may be
// asleep on it; see WakeConsumer).
absl::Status RingPut(QueueShared& s, int ri, std::span<const std::byte> bytes,
                     const Deadline& deadline, bool block, bool* was_empty) {
  RingHeader& r = s.state->rings[ri];
  // Stamped once another ring has ever been owned (see the top of this file). Decided when the
  // Put starts: a Put that happens before this one and used another ring shows its bit by now.
  const bool stamped =
      (s.state->active.load(std::memory_order_seq_cst) & ~(1u << ri)) != 0;
  if (IsShared(ri)) return SharedRingPut(s, ri, bytes, stamped, deadline, block, was_empty);
  const uint64_t header_bytes = stamped ? kStampedHeader : kRecordHeader;
  const uint64_t need = RecordBytes(bytes.size(), header_bytes);
  const uint64_t t = r.tail.load(std::memory_order_relaxed);
  // If it must wait for room: until half the budget is free (or, for a big item, until it
  // fits; for one bigger than the budget, until the ring is empty).
  uint64_t wake_head = t;
  if (need <= kRingBudget / 2) {
    wake_head = t > kRingBudget / 2 ? t - kRingBudget / 2 : 0;
  } else if (need <= kRingBudget) {
    wake_head = t + need > kRingBudget ? t + need - kRingBudget : 0;
  }
  MPROC_RETURN_IF_ERROR(WaitAsOwner(s, r, deadline, block, wake_head, [&] {
    if (!SocketItemsReceived(s, r)) return false;
    // The cached head over-estimates what is used: if the item fits by it, it fits. Only
    // otherwise read the consumers' cache line.
    if (RecordFits(t - s.head_cache, need)) return true;
    s.head_cache = r.head.load(std::memory_order_acquire);
    return RecordFits(t - s.head_cache, need);
  }));
  Publish(s, ri, t, bytes, stamped, was_empty);
  return absl::OkStatus();
}

// Where a Get copies an item: grows without initialising, keeps its capacity.
struct TakeBuffer {
  std::unique_ptr<std::byte[]> data;
  size_t cap = 0;
  size_t size = 0;
  std::byte* Resize(size_t n) {
    if (n > cap) {
      data.reset(new std::byte[n]);
      cap = n;
    }
    size = n;
    return data.get();
  }
};

enum class Take { kNone, kTaken, kCorrupt };

// The record at a ring's head, as a consumer saw it.
struct Head {
  uint64_t pos = 0;     // the head position it was read at
  uint64_t stamp = 0;   // 0 for an unstamped record
  uint32_t len = 0;
  uint32_t header = 0;  // its header's size
};

// Looks at ring `ri`'s head record without taking it: kTaken (meaning "found") with `*head`,
// kNone when the ring is empty, kCorrupt when its bytes are not records (shared memory
// scribbled on by someone: a header that fails its checks while the head stays where it was
// cannot be a race with another consumer, since the producer never rewrites bytes between
// head and tail).
// `want_stamp`: the caller compares stamps (several rings), so a stamp read while the head
// moved on (possibly torn) must not be used.
Take PeekRing(QueueShared& s, int ri, Head* head, bool want_stamp) {
  RingHeader& r = s.state->rings[ri];
  const Ring data = RingOf(s, ri);
  for (;;) {
    uint64_t h = r.head.load(std::memory_order_acquire);
    uint64_t t = s.tail_cache[ri].load(std::memory_order_acquire);
    if (h >= t) {
      t = r.tail.load(std::memory_order_acquire);
      s.tail_cache[ri].store(t, std::memory_order_release);
      if (h >= t) return Take::kNone;
    }
    if (!Ring::Plausible(h, t)) {  // head moved on since we read it, or the indices are garbage
      if (r.head.load(std::memory_order_acquire) == h) return Take::kCorrupt;
      continue;
    }
    uint32_t header[2];
    data.CopyOut(h, header, sizeof(header));
    // The copies above happen before the head is read again (weakly ordered CPUs included).
    std::atomic_thread_fence(std::memory_order_acquire);
    const uint64_t header_bytes = header[1] == kStampedTag ? kStampedHeader : kRecordHeader;
    if ((header[1] != kRecordTag && header[1] != kStampedTag) ||
        !Ring::Fits(header[0], header_bytes, h, t)) {
      if (r.head.load(std::memory_order_acquire) == h) return Take::kCorrupt;
      continue;  // torn: head moved meanwhile
    }
    uint64_t stamp = 0;
    if (header_bytes == kStampedHeader) {
      data.CopyOut(h + sizeof(header), &stamp, sizeof(stamp));
      std::atomic_thread_fence(std::memory_order_acquire);
      // A stamp read while the head moved on may be torn: use it only if the head stayed.
      if (want_stamp && r.head.load(std::memory_order_acquire) != h) continue;
    }
    *head = {h, stamp, header[0], static_cast<uint32_t>(header_bytes)};
    return Take::kTaken;
  }
}

// Claims the record `head` saw, copying it into `out` first. False when another consumer
// took it meanwhile (the copy, possibly torn, is dropped).
bool ClaimRing(QueueShared& s, int ri, const Head& head, TakeBuffer* out) {
  RingHeader& r = s.state->rings[ri];
  const Ring data = RingOf(s, ri);
  data.CopyOut(head.pos + head.header, out->Resize(head.len), head.len);
  uint64_t h = head.pos;
  const uint64_t next = h + RecordBytes(head.len, head.header);
  if (!r.head.compare_exchange_strong(h, next, std::memory_order_seq_cst)) return false;
  r.taken.fetch_add(1, std::memory_order_relaxed);
  WakeOwner(r, next);
  return true;
}

absl::Status CorruptRing(int ri) {
  return absl::InvalidArgumentError(absl::StrCat(
      "queue: producer ring ", ri, " holds bytes that are not records (its shared memory was "
      "overwritten); its items cannot be read"));
}

// Claims one item from any ring.
//
// One ring ever owned: its head, in FIFO order. A consumer never looks further.
//
// More: the head with the smallest order stamp (see the top of this file). A ring's stamps
// only grow, so the stamp once seen at a ring's head bounds every record that ring will ever
// hold from below (QueueShared::head_floor): a ring whose floor is above the candidate's stamp
// cannot hold an older record and is not looked at. So a consumer streams from one ring while
// its records are older than what the others showed last, reading the others' lines only
// when they may hold something older. Rings found empty are looked at once more after the
// candidate was seen (the confirmation that makes happens-before hold), unless their floor
// rules them out. kCorrupt names the ring in `*bad`.
Take TakeFromRings(QueueShared& s, TakeBuffer* out, int* bad) {
  const uint32_t first_active = s.state->active.load(std::memory_order_acquire);
  if (first_active == 0) return Take::kNone;
  if ((first_active & (first_active - 1)) == 0) {  // one ring, as far as we saw
    const int i = __builtin_ctz(first_active);
    for (;;) {
      Head h;
      const Take t = PeekRing(s, i, &h, /*want_stamp=*/false);
      if (t == Take::kCorrupt) *bad = i;
      if (t != Take::kTaken) return t;
      // A stamped record: its producer saw another ring, which may hold something older that
      // appeared after we read `active`. Take the way that looks at every ring.
      if (h.header == kStampedHeader) break;
      if (ClaimRing(s, i, h, out)) return Take::kTaken;
    }
  }
  thread_local int preferred = 0;  // the ring this thread took from last
  auto floor_above = [&](int i, uint64_t stamp) {
    return s.head_floor[i].load(std::memory_order_relaxed) > stamp;
  };
  auto raise_floor = [&](int i, uint64_t stamp) {
    uint64_t f = s.head_floor[i].load(std::memory_order_relaxed);
    while (f < stamp && !s.head_floor[i].compare_exchange_weak(f, stamp, std::memory_order_relaxed)) {
    }
  };
  for (;;) {
    const uint32_t active = s.state->active.load(std::memory_order_acquire);
    int best = -1;
    Head best_head;
    uint32_t empty = 0;
    auto consider = [&](int i) -> bool {
      if (best >= 0 && floor_above(i, best_head.stamp)) return true;  // nothing older there
      Head h;
      const Take t = PeekRing(s, i, &h, /*want_stamp=*/true);
      if (t == Take::kCorrupt) {
        *bad = i;
        return false;
      }
      if (t == Take::kNone) {
        empty |= 1u << i;
        return true;
      }
      raise_floor(i, h.stamp);
      if (best < 0 || h.stamp < best_head.stamp) {
        best = i;
        best_head = h;
      }
      return true;
    };
    // The preferred ring first: its head usually wins, and its lines are in this cache.
    const int start = (active >> preferred) & 1 ? preferred : __builtin_ctz(active);
    if (!consider(start)) return Take::kCorrupt;
    for (uint32_t rest = active & ~(1u << start); rest != 0; rest &= rest - 1) {
      if (!consider(__builtin_ctz(rest))) return Take::kCorrupt;
    }
    if (best < 0) return Take::kNone;
    // The second look: an item that happens before the candidate, in a ring that was empty
    // when we passed it, or in a ring first owned after we read `active`, is visible now.
    const uint32_t again =
        empty | (s.state->active.load(std::memory_order_acquire) & ~active);
    for (uint32_t rest = again; rest != 0; rest &= rest - 1) {
      if (!consider(__builtin_ctz(rest))) return Take::kCorrupt;
    }
    if (ClaimRing(s, best, best_head, out)) {
      preferred = best;
      return Take::kTaken;
    }
    // Another consumer took it first: look again.
  }
}


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
    std::lock_guard<std::mutex> lock(s.stash_mu);
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
  std::lock_guard<std::mutex> lock(s.stash_mu);
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
  // The producer lock is held across a run of items, not taken per item.
  std::unique_lock<std::mutex> lock(s.put_mu, std::defer_lock);
  while (done < items.size()) {
    if (s.closed.load(std::memory_order_relaxed)) {
      status = ClosedError();
      break;
    }
    // A maxsize slot per item, taken outside the producer lock (it may block: announce what
    // this batch published first, or the consumers who would free slots may sleep on).
    if (st->maxsize > 0) {
      if (lock.owns_lock()) lock.unlock();
      if (wake_due) {
        WakeConsumer(st);
        wake_due = false;
      }
      status = AcquireSlot(s, deadline, block);
      if (!status.ok()) break;
    }
    if (!lock.owns_lock()) lock.lock();
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
      if (!sent.ok()) {
        status = sent.status();
        break;
      }
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
  }
  if (lock.owns_lock()) lock.unlock();
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
  // producers pauses 64 CpuRelax (~1.6 us here) before looking again — a delay, not a spin
  // wait (base/spin.h): it does not look meanwhile, since looking pulls the producer's tail
  // line across CPUs for every item it publishes, which made a 1 -> 1 stream 2-3x slower than
  // letting a few items gather. A consumer that had to wait last time looks at once (a
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
      for (int i = 0; i < 64; ++i) CpuRelax();
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

int QueueTesting::ProducerRing(const QueueCore& q) {
  if (q.s_ == nullptr) return -1;
  std::lock_guard<std::mutex> lock(q.s_->put_mu);
  return q.s_->ring_pid == CurrentPid() ? q.s_->ring : -1;
}

absl::Status QueueTesting::UseSharedRing(QueueCore& q, int k) {
  if (q.s_ == nullptr || k < 0 || k >= kSharedRings) {
    return absl::InvalidArgumentError("no such shared ring");
  }
  QueueShared& s = *q.s_;
  std::lock_guard<std::mutex> lock(s.put_mu);
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
  std::lock_guard<std::mutex> lock(s.put_mu);
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
