#include "shm/arena.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "base/owner.h"

namespace mproc {
namespace {

constexpr uint64_t kMagic = 0x32455241435250ull;  // "PRCARE2": the journaled layout
constexpr uint64_t kHeaderSize = 256;
constexpr uint64_t kBlockHeader = 16;  // size + (next free | allocated marker)
constexpr uint64_t kMinBlock = kBlockHeader + 16;
constexpr uint64_t kNone = 0;
constexpr uint64_t kAllocated = ~uint64_t{0};
// The most words one Allocate or Free changes (Allocate: a tail block's two, a front block's
// two, the link to it, the allocated block's two).
constexpr uint32_t kMaxUndo = 8;

struct UndoEntry {
  uint64_t off;  // of the word, from the segment's start
  uint64_t old;  // its value before the change
};

struct ArenaHeader {
  uint64_t magic;
  std::atomic<uint32_t> lock;        // an owner word (base/owner.h)
  std::atomic<uint32_t> undo_count;  // entries of the change in progress, 0: none
  uint64_t total;                    // bytes in the segment
  uint64_t free_head;  // offset of the first free block (sorted by offset), 0 = none
  UndoEntry undo[kMaxUndo];
};
static_assert(sizeof(ArenaHeader) <= kHeaderSize);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

// Every block: [size (total, incl. header)][next free offset | kAllocated][payload ...].
struct Block {
  uint64_t size;
  uint64_t next;
};

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

// Whether a block header at `off` could be one this arena wrote: inside the segment, aligned,
// at least the smallest block. What a scribbler left there is refused before it is followed.
// `total` is the bytes this process mapped, not the header's word (shared, so writable by all).
bool Plausible(uint64_t total, uint64_t off, const Block* b) {
  return off >= kHeaderSize && off % 16 == 0 && off < total && b->size >= kMinBlock &&
         b->size % 16 == 0 && b->size <= total - off;
}

absl::Status CorruptError(uint64_t off) {
  return absl::InvalidArgumentError(absl::StrCat(
      "arena: the free list is corrupt at offset ", off,
      " (its shared memory was overwritten); nothing was allocated or freed"));
}

std::atomic<int> kill_at_point{0};

void MaybeKill() {
  if (kill_at_point.load(std::memory_order_relaxed) > 0 &&
      kill_at_point.fetch_sub(1, std::memory_order_relaxed) == 1) {
    ::raise(SIGKILL);
  }
}

// The arena's lock, held for one Allocate or Free. Taking it over from a holder that died
// rolls back what that holder had changed (the journal, newest first), so the free list is
// as it was before the dead call. Each change goes through Set, which logs the word's old
// value before writing it; Commit ends the change. A process is killed between instructions,
// never inside one, and every store it made is visible to whoever takes the lock after its
// death: the journal needs only the compiler to keep the stores in program order (signal
// fences), not CPU fences.
class ArenaLock {
 public:
  // kStale: the lock is never taken again while held, and a holder killed here may stay dead
  // in it for a long time, long enough for its tid to be given to a thread calling us.
  ArenaLock(ArenaHeader* h, char* base, uint64_t total)
      : h_(h), base_(base), total_(total), guard_(&h->lock, OwnerSelf::kStale) {
    if (guard_.owner_died() || h_->undo_count.load(std::memory_order_relaxed) != 0) RollBack();
  }
  ~ArenaLock() { Commit(); }
  ArenaLock(const ArenaLock&) = delete;
  ArenaLock& operator=(const ArenaLock&) = delete;

  void Set(uint64_t* word, uint64_t value) {
    const uint32_t n = h_->undo_count.load(std::memory_order_relaxed);
    h_->undo[n] = {static_cast<uint64_t>(reinterpret_cast<char*>(word) - base_), *word};
    std::atomic_signal_fence(std::memory_order_seq_cst);
    h_->undo_count.store(n + 1, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    MaybeKill();
    *word = value;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    MaybeKill();
  }

  // The change is whole: forget its journal.
  void Commit() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    h_->undo_count.store(0, std::memory_order_relaxed);
  }

 private:
  // Only words a change could have written are restored: the free list's head, and words
  // inside the blocks area. A journal scribbled over is dropped, not followed.
  void RollBack() {
    const uint32_t n = std::min(h_->undo_count.load(std::memory_order_relaxed), kMaxUndo);
    for (uint32_t i = n; i-- > 0;) {
      const UndoEntry e = h_->undo[i];
      const bool head = e.off == offsetof(ArenaHeader, free_head);
      if (!head && (e.off < kHeaderSize || e.off % 8 != 0 || e.off >= total_ ||
                    total_ - e.off < 8)) {
        continue;
      }
      *reinterpret_cast<uint64_t*>(base_ + e.off) = e.old;
    }
    Commit();
  }

  ArenaHeader* h_;
  char* base_;
  uint64_t total_;
  OwnerWordGuard guard_;
};

}  // namespace

void ArenaTesting::KillAtPoint(int n) { kill_at_point.store(n, std::memory_order_relaxed); }

absl::StatusOr<Arena> Arena::Create(size_t size, std::string_view name) {
  if (size < kHeaderSize + kMinBlock) {
    return absl::InvalidArgumentError(absl::StrCat("arena of ", size, " bytes is too small"));
  }
  absl::StatusOr<Segment> seg = Segment::Create(size, name);
  if (!seg.ok()) return seg.status();
  absl::StatusOr<Mapping> map = seg->Map();
  if (!map.ok()) return map.status();
  auto* h = new (map->data()) ArenaHeader{};
  h->magic = kMagic;
  h->total = size & ~uint64_t{15};
  h->free_head = kHeaderSize;
  auto* b = reinterpret_cast<Block*>(static_cast<char*>(map->data()) + kHeaderSize);
  b->size = h->total - kHeaderSize;
  b->next = kNone;
  return Arena(*std::move(seg), *std::move(map));
}

absl::StatusOr<Arena> Arena::Attach(Segment segment) {
  absl::StatusOr<Mapping> map = segment.Map();
  if (!map.ok()) return map.status();
  auto* h = static_cast<ArenaHeader*>(map->data());
  if (map->size() < kHeaderSize + kMinBlock || h->magic != kMagic ||
      h->total < kHeaderSize + kMinBlock || h->total > map->size()) {
    return absl::InvalidArgumentError("segment does not hold an mproc arena");
  }
  return Arena(std::move(segment), *std::move(map));
}

uint64_t Arena::Total() const {
  const auto* h = static_cast<const ArenaHeader*>(mapping_.data());
  return std::min<uint64_t>(h->total & ~uint64_t{15}, mapping_.size());
}

absl::StatusOr<uint64_t> Arena::Allocate(size_t size, size_t align) {
  if (align == 0 || (align & (align - 1)) || align > 4096) {
    return absl::InvalidArgumentError("alignment must be a power of two <= 4096");
  }
  if (align < 16) align = 16;
  auto* h = static_cast<ArenaHeader*>(mapping_.data());
  char* base = static_cast<char*>(mapping_.data());
  const uint64_t total = Total();
  if (size > total) {
    return absl::ResourceExhaustedError(
        absl::StrCat("arena: no free block of ", size, " bytes (aligned ", align, ")"));
  }
  const uint64_t want = AlignUp(size == 0 ? 1 : size, 16);
  ArenaLock lock(h, base, total);
  uint64_t prev = kNone;
  for (uint64_t off = h->free_head; off != kNone;) {
    auto* b = reinterpret_cast<Block*>(base + off);
    // The list is sorted by offset: a link that does not go forward is corrupt (and would
    // otherwise be a cycle).
    if (!Plausible(total, off, b) || off <= prev || (b->next != kNone && b->next <= off)) {
      return CorruptError(off);
    }
    // Payload starts after the header, possibly padded for alignment. Padding is carved
    // off the front as its own free block when it can hold one, so offsets stay exact.
    uint64_t payload = AlignUp(off + kBlockHeader, align);
    uint64_t front = payload - kBlockHeader - off;  // bytes before this block's header
    if (front != 0 && front < kMinBlock) {
      payload = AlignUp(off + 2 * kBlockHeader + 16, align);
      front = payload - kBlockHeader - off;
    }
    const uint64_t need = front + kBlockHeader + want;
    if (b->size >= need) {
      const uint64_t block_off = off + front;
      const uint64_t rest = b->size - need;
      // Unlink b, then put back the front padding and the tail as free blocks.
      uint64_t* link = prev == kNone ? &h->free_head : &reinterpret_cast<Block*>(base + prev)->next;
      uint64_t chain = b->next;
      if (rest >= kMinBlock) {
        const uint64_t tail = block_off + kBlockHeader + want;
        auto* t = reinterpret_cast<Block*>(base + tail);
        lock.Set(&t->size, rest);
        lock.Set(&t->next, chain);
        chain = tail;
      }  // else the tail is too small to split: it stays part of the block
      if (front != 0) {
        lock.Set(&b->size, front);
        lock.Set(&b->next, chain);
        chain = off;
      }
      lock.Set(link, chain);
      auto* nb = reinterpret_cast<Block*>(base + block_off);
      lock.Set(&nb->size, rest >= kMinBlock ? kBlockHeader + want : kBlockHeader + want + rest);
      lock.Set(&nb->next, kAllocated);
      lock.Commit();
      std::memset(base + block_off + kBlockHeader, 0, nb->size - kBlockHeader);
      return block_off + kBlockHeader;
    }
    prev = off;
    off = b->next;
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("arena: no free block of ", size, " bytes (aligned ", align, ")"));
}

absl::Status Arena::Free(uint64_t offset) {
  auto* h = static_cast<ArenaHeader*>(mapping_.data());
  char* base = static_cast<char*>(mapping_.data());
  const uint64_t total = Total();
  const uint64_t off = offset - kBlockHeader;
  auto not_allocated = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "arena: offset ", offset, " is not an allocated block (freed twice, or never allocated)"));
  };
  if (offset < kBlockHeader || offset % 16 != 0 || offset >= total) return not_allocated();
  ArenaLock lock(h, base, total);
  auto* b = reinterpret_cast<Block*>(base + off);
  if (!Plausible(total, off, b) || b->next != kAllocated) return not_allocated();
  // Insert sorted by offset, coalescing with the previous and next free blocks.
  uint64_t prev = kNone, cur = h->free_head;
  while (cur != kNone && cur < off) {
    const auto* c = reinterpret_cast<const Block*>(base + cur);
    if (!Plausible(total, cur, c) || (c->next != kNone && c->next <= cur)) return CorruptError(cur);
    prev = cur;
    cur = c->next;
  }
  if (cur != kNone && !Plausible(total, cur, reinterpret_cast<const Block*>(base + cur))) {
    return CorruptError(cur);
  }
  // A block that overlaps a free neighbour was not allocated (or the list is corrupt).
  auto* p = reinterpret_cast<Block*>(base + prev);
  if (cur == off || (cur != kNone && off + b->size > cur) ||
      (prev != kNone && prev + p->size > off)) {
    return not_allocated();
  }
  // Blocks lie back to back: between two free neighbours every block is allocated. `off` must
  // be where one of them starts, not a look-alike header written as data inside one.
  for (uint64_t at = prev == kNone ? kHeaderSize : prev + p->size; at != off;) {
    const auto* q = reinterpret_cast<const Block*>(base + at);
    if (at > off || !Plausible(total, at, q) || q->next != kAllocated) return not_allocated();
    at += q->size;
  }
  lock.Set(&b->next, cur);
  if (cur != kNone && off + b->size == cur) {
    const auto* c = reinterpret_cast<const Block*>(base + cur);
    lock.Set(&b->size, b->size + c->size);
    lock.Set(&b->next, c->next);
  }
  if (prev == kNone) {
    lock.Set(&h->free_head, off);
  } else if (prev + p->size == off) {
    lock.Set(&p->size, p->size + b->size);
    lock.Set(&p->next, b->next);
  } else {
    lock.Set(&p->next, off);
  }
  return absl::OkStatus();
}

namespace {

// Calls `f(block)` for each free block, in order, up to the first implausible one.
template <typename F>
void ForEachFree(const ArenaHeader* h, const char* base, uint64_t total, F f) {
  for (uint64_t off = h->free_head, prev = kNone; off != kNone && off > prev;) {
    const auto* b = reinterpret_cast<const Block*>(base + off);
    if (!Plausible(total, off, b)) return;
    f(*b);
    prev = off;
    off = b->next;
  }
}

}  // namespace

size_t Arena::FreeBytes() const {
  auto* h = static_cast<ArenaHeader*>(mapping_.data());
  char* base = static_cast<char*>(mapping_.data());
  const uint64_t total = Total();
  ArenaLock lock(h, base, total);
  size_t bytes = 0;
  ForEachFree(h, base, total, [&](const Block& b) { bytes += b.size; });
  return bytes;
}

size_t Arena::LargestFreeBlock() const {
  auto* h = static_cast<ArenaHeader*>(mapping_.data());
  char* base = static_cast<char*>(mapping_.data());
  const uint64_t total = Total();
  ArenaLock lock(h, base, total);
  size_t best = 0;
  ForEachFree(h, base, total, [&](const Block& b) { best = std::max<size_t>(best, b.size); });
  return best;
}

std::vector<std::pair<uint64_t, uint64_t>> ArenaTesting::FreeList(const Arena& a) {
  auto* h = static_cast<ArenaHeader*>(a.mapping_.data());
  char* base = static_cast<char*>(a.mapping_.data());
  const uint64_t total = a.Total();
  ArenaLock lock(h, base, total);
  std::vector<std::pair<uint64_t, uint64_t>> list;
  uint64_t off = h->free_head;
  ForEachFree(h, base, total, [&](const Block& b) {
    list.emplace_back(off, b.size);
    off = b.next;
  });
  return list;
}

}  // namespace mproc
