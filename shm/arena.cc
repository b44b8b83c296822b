#include "shm/arena.h"

#include <algorithm>
#include <atomic>
#include <new>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/futex.h"

namespace mproc {
namespace {

constexpr uint64_t kMagic = 0x414e455241435250ull;  // "PRCARENA"
constexpr uint64_t kHeaderSize = 64;
constexpr uint64_t kBlockHeader = 16;  // size + (next free | allocated marker)
constexpr uint64_t kNone = 0;
constexpr uint64_t kAllocated = ~uint64_t{0};

struct ArenaHeader {
  uint64_t magic;
  std::atomic<uint32_t> lock;  // 0 free, 1 held, 2 held with waiters
  uint32_t pad;
  uint64_t total;      // bytes in the segment
  uint64_t free_head;  // offset of the first free block (sorted by offset), 0 = none
};
static_assert(sizeof(ArenaHeader) <= kHeaderSize);

// Every block: [size (total, incl. header)][next free offset | kAllocated][payload ...].
struct Block {
  uint64_t size;
  uint64_t next;
};

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

}  // namespace

absl::StatusOr<Arena> Arena::Create(size_t size, std::string_view name) {
  if (size < kHeaderSize + 2 * kBlockHeader) {
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
  if (map->size() < kHeaderSize || h->magic != kMagic || h->total > map->size()) {
    return absl::InvalidArgumentError("segment does not hold an mproc arena");
  }
  return Arena(std::move(segment), *std::move(map));
}

absl::StatusOr<uint64_t> Arena::Allocate(size_t size, size_t align) {
  if (align == 0 || (align & (align - 1)) || align > 4096) {
    return absl::InvalidArgumentError("alignment must be a power of two <= 4096");
  }
  if (align < 16) align = 16;
  auto* h = static_cast<ArenaHeader*>(mapping_.data());
  char* base = static_cast<char*>(mapping_.data());
  const uint64_t want = AlignUp(size == 0 ? 1 : size, 16);
  FutexMutexGuard lock(&h->lock);
  uint64_t prev = kNone;
  for (uint64_t off = h->free_head; off != kNone;) {
    auto* b = reinterpret_cast<Block*>(base + off);
    // Payload starts after the header, possibly padded for alignment. Padding is carved
    // off the front as its own free block when it can hold one, so offsets stay exact.
    uint64_t payload = AlignUp(off + kBlockHeader, align);
    uint64_t front = payload - kBlockHeader - off;  // bytes before this block's header
    if (front != 0 && front < kBlockHeader + 16) {
      payload = AlignUp(off + 2 * kBlockHeader + 16, align);
      front = payload - kBlockHeader - off;
    }
    uint64_t need = front + kBlockHeader + want;
    if (b->size >= need) {
      uint64_t next = b->next;
      uint64_t block_off = off + front;
      uint64_t rest = b->size - need;
      // Unlink b, then put back the front padding and the tail as free blocks.
      uint64_t* link = prev == kNone ? &h->free_head : &reinterpret_cast<Block*>(base + prev)->next;
      uint64_t chain = next;
      if (rest >= kBlockHeader + 16) {
        uint64_t tail = block_off + kBlockHeader + want;
        auto* t = reinterpret_cast<Block*>(base + tail);
        t->size = rest;
        t->next = chain;
        chain = tail;
      }  // else the tail is too small to split: it stays part of the block
      if (front != 0) {
        b->size = front;
        b->next = chain;
        chain = off;
      }
      *link = chain;
      auto* nb = reinterpret_cast<Block*>(base + block_off);
      nb->size = rest >= kBlockHeader + 16 ? kBlockHeader + want : kBlockHeader + want + rest;
      nb->next = kAllocated;
      std::memset(base + block_off + kBlockHeader, 0, nb->size - kBlockHeader);
      return block_off + kBlockHeader;
    }
    prev = off;
    off = b->next;
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("arena: no free block of ", size, " bytes (aligned ", align, ")"));
}

void Arena::Free(uint64_t offset) {
  auto* h = static_cast<ArenaHeader*>(mapping_.data());
  char* base = static_cast<char*>(mapping_.data());
  uint64_t off = offset - kBlockHeader;
  FutexMutexGuard lock(&h->lock);
  auto* b = reinterpret_cast<Block*>(base + off);
  // Insert sorted by offset, coalescing with the previous and next free blocks.
  uint64_t prev = kNone, cur = h->free_head;
  while (cur != kNone && cur < off) {
    prev = cur;
    cur = reinterpret_cast<Block*>(base + cur)->next;
  }
  b->next = cur;
  if (cur != kNone && off + b->size == cur) {
    auto* c = reinterpret_cast<Block*>(base + cur);
    b->size += c->size;
    b->next = c->next;
  }
  if (prev == kNone) {
    h->free_head = off;
  } else {
    auto* p = reinterpret_cast<Block*>(base + prev);
    if (prev + p->size == off) {
      p->size += b->size;
      p->next = b->next;
    } else {
      p->next = off;
    }
  }
}

size_t Arena::FreeBytes() const {
  auto* h = static_cast<ArenaHeader*>(mapping_.data());
  const char* base = static_cast<const char*>(mapping_.data());
  FutexMutexGuard lock(&h->lock);
  size_t total = 0;
  for (uint64_t off = h->free_head; off != kNone;) {
    auto* b = reinterpret_cast<const Block*>(base + off);
    total += b->size;
    off = b->next;
  }
  return total;
}

size_t Arena::LargestFreeBlock() const {
  auto* h = static_cast<ArenaHeader*>(mapping_.data());
  const char* base = static_cast<const char*>(mapping_.data());
  FutexMutexGuard lock(&h->lock);
  size_t best = 0;
  for (uint64_t off = h->free_head; off != kNone;) {
    auto* b = reinterpret_cast<const Block*>(base + off);
    best = std::max<size_t>(best, b->size);
    off = b->next;
  }
  return best;
}

}  // namespace mproc
