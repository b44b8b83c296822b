#include "ipc/internal/queue_rings.h"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/futex.h"
#include "base/owner.h"
#include "base/spin.h"
#include "base/status.h"

namespace mproc {
namespace ipc_internal {

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

namespace {

// Producer ring `ri` of the queue.
Ring RingOf(const QueueShared& s, int ri) {
  return Ring(s.ring_data + static_cast<uint64_t>(ri) * kRingBytes);
}

}  // namespace


namespace {

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

}  // namespace

// Takes shared ring `r`'s put lock: a short spin (the holder copies one item), then a sleep
// that takes the lock over from a holder found dead (base/owner.h). The lock is never held
// across a call that takes it again, so a word holding our own tid is a dead thread's.
absl::Status LockSharedRing(RingHeader& r, const Deadline& deadline) {
  const uint32_t me = CurrentTid();
  if (TakeFreeOwnerWord(&r.put_lock, me) ||
      LockOwnerWord(&r.put_lock, me, deadline, SpinMode::kHandoff, OwnerSelf::kStale) !=
          OwnerAcquire::kTimedOut) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError("queue: Put timed out waiting for its shared producer ring");
}

namespace {

// RingPut for a shared ring: under its put lock, once room and no pending socket item of its
// producers; waits for either without the lock (so a non-blocking Put of another producer is
// never held up by a waiting one), then looks again under it.
absl::Status SharedRingPut(QueueShared& s, int ri, std::span<const std::byte> bytes, bool stamped,
                           const Deadline& deadline, bool block, bool* was_empty)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.put_mu) {
  RingHeader& r = s.state->rings[ri];
  const uint64_t need = RecordBytes(bytes.size(), stamped ? kStampedHeader : kRecordHeader);
  auto ready = [&] {
    const uint64_t used =
        r.tail.load(std::memory_order_acquire) - r.head.load(std::memory_order_acquire);
    return SocketItemsReceived(s, r) && RecordFits(used, need);
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

}  // namespace

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
    s.put_mu.AssertHeld();  // WaitAsOwner calls it with put_mu held
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

namespace {

// The record at a ring's head, as a consumer saw it.
struct Head {
  uint64_t pos = 0;     // the head position it was read at
  uint64_t stamp = 0;   // 0 for an unstamped record
  uint32_t len = 0;
  uint32_t header = 0;  // its header's size
};


// The header of the record at `pos` of a ring whose tail was seen at `t`: its payload's
// length and its header's size. False when the bytes there are not a record that fits before
// `t`: torn (another consumer moved the head past it meanwhile) or corrupt; the caller tells
// which by whether the head moved.
// On every Get's path, so inlined: a first version (out-parameters, an outlined call) made
// mproc.queue.1p1c.same_cpu ~15% slower.
struct RecordHeader {
  bool ok;
  uint32_t len;
  uint64_t header_bytes;
};
[[gnu::always_inline]] inline RecordHeader ReadRecordHeader(const Ring& data, uint64_t pos,
                                                            uint64_t t) {
  uint32_t header[2];
  data.CopyOut(pos, header, sizeof(header));
  // The copy happens before the head is read again (weakly ordered CPUs included).
  std::atomic_thread_fence(std::memory_order_acquire);
  const uint64_t header_bytes = header[1] == kStampedTag ? kStampedHeader : kRecordHeader;
  const bool ok = (header[1] == kRecordTag || header[1] == kStampedTag) &&
                  Ring::Fits(header[0], header_bytes, pos, t);
  return {ok, header[0], header_bytes};
}

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
    const RecordHeader rh = ReadRecordHeader(data, h, t);
    if (!rh.ok) {
      if (r.head.load(std::memory_order_acquire) == h) return Take::kCorrupt;
      continue;  // torn: head moved meanwhile
    }
    const uint64_t header_bytes = rh.header_bytes;
    uint64_t stamp = 0;
    if (header_bytes == kStampedHeader) {
      data.CopyOut(h + kRecordHeader, &stamp, sizeof(stamp));
      std::atomic_thread_fence(std::memory_order_acquire);
      // A stamp read while the head moved on may be torn: use it only if the head stayed.
      if (want_stamp && r.head.load(std::memory_order_acquire) != h) continue;
    }
    *head = {h, stamp, rh.len, static_cast<uint32_t>(header_bytes)};
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

}  // namespace

int TakeRunFromRing(QueueShared& s, size_t max, std::vector<std::byte>* bytes,
                    std::vector<std::pair<uint32_t, uint32_t>>* items, int* bad) {
  const uint32_t active = s.state->active.load(std::memory_order_acquire);
  if (max == 0 || active == 0 || (active & (active - 1)) != 0) return 0;
  const int ri = __builtin_ctz(active);
  RingHeader& r = s.state->rings[ri];
  const Ring data = RingOf(s, ri);
  uint64_t h = r.head.load(std::memory_order_acquire);
  // The producer's tail line only when the cached tail is used up (as PeekRing): reading it
  // on every call pulls it across CPUs while the producer writes it.
  uint64_t t = s.tail_cache[ri].load(std::memory_order_acquire);
  if (h >= t) {
    t = r.tail.load(std::memory_order_acquire);
    s.tail_cache[ri].store(t, std::memory_order_release);
    if (h >= t) return -2;
  }
  // A check that fails while the head stayed put is corruption (the producer never rewrites
  // bytes between head and tail); with the head moved, a race with another consumer.
  auto failed = [&] {
    if (r.head.load(std::memory_order_acquire) != h) return 0;
    *bad = ri;
    return -1;
  };
  if (!Ring::Plausible(h, t)) return failed();
  const size_t bytes_before = bytes->size();
  const size_t items_before = items->size();
  uint64_t pos = h;
  size_t n = 0;
  while (pos < t && n < max) {
    const RecordHeader rh = ReadRecordHeader(data, pos, t);
    if (!rh.ok) {
      if (n > 0) break;  // claim the good records before it; the next take reports it
      return failed();
    }
    if (rh.header_bytes == kStampedHeader) break;  // may have older items elsewhere: one at a time
    const uint32_t len = rh.len;
    const size_t at = (bytes->size() + 15) & ~size_t{15};  // decoders may view items in place
    bytes->resize(at + len);
    data.CopyOut(pos + kRecordHeader, bytes->data() + at, len);
    items->emplace_back(static_cast<uint32_t>(at), len);
    pos += RecordBytes(len, kRecordHeader);
    ++n;
  }
  // The copies above happen before the head moves (weakly ordered CPUs included).
  std::atomic_thread_fence(std::memory_order_acquire);
  if (n == 0 || !r.head.compare_exchange_strong(h, pos, std::memory_order_seq_cst)) {
    bytes->resize(bytes_before);
    items->resize(items_before);
    return 0;
  }
  r.taken.fetch_add(n, std::memory_order_relaxed);
  WakeOwner(r, pos);
  return static_cast<int>(n);
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
    // Another consumer took it first, so another consumer is draining these rings on another
    // CPU: give this CPU to whoever else waits for it (a producer, when there are more
    // processes than CPUs) before looking again. Free when nobody waits. The 2 -> 2 row on 2
    // CPUs went from a median 57.9 to 49.3 ns per item (5 alternated runs).
    YieldCpu();
  }
}


}  // namespace ipc_internal
}  // namespace mproc
