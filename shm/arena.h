// shm/arena.h — an offset allocator for placing objects in a shared segment.
//
// Everything inside a mapping is addressed by offset from the segment's start, never by a raw
// pointer (each process maps the segment at its own address). The arena keeps its state — a
// lock word, a free list sorted by offset and an undo journal — in the segment's first 256
// bytes, so any process that maps the segment can allocate and free in it.
//
//   MPROC_ASSIGN_OR_RETURN(Arena arena, Arena::Create(1 << 20));
//   MPROC_ASSIGN_OR_RETURN(uint64_t off, arena.Allocate(sizeof(Node), alignof(Node)));
//   Node* n = arena.At<Node>(off);   // this process's address for that offset
//   MPROC_RETURN_IF_ERROR(arena.Free(off));
//
// Allocation is first-fit with splitting; Free coalesces with both neighbours, so freeing
// everything returns one block. Memory from Allocate is zero-filled (CPython's Array(code, n)
// is zero-filled even when it reuses freed memory, SHV-4).
//
// Thread- and process-safety: Allocate/Free are serialised by an owner-word lock in the
// segment (base/owner.h), and every word of the free list they change is first written to an
// undo journal beside it. So a process killed inside Allocate or Free does not wedge the arena:
// the next caller takes the lock over from the dead holder and rolls the half-done change
// back, leaving the arena as it was before that call (an Allocate that finished but whose
// caller died before using the offset leaks that block, as any allocation of a dead process
// does). A free list scribbled over by someone (shared memory is writable by every process
// that maps it) is refused with INVALID_ARGUMENT, never followed out of the segment or round a
// cycle.

#ifndef MPROC_SHM_ARENA_H_
#define MPROC_SHM_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "shm/segment.h"

namespace mproc {

class Arena {
 public:
  // A fresh segment of `size` bytes holding an empty arena.
  [[nodiscard]]
  static absl::StatusOr<Arena> Create(size_t size, std::string_view name = "mproc-arena");
  // Maps an existing arena segment (e.g. received from a parent).
  [[nodiscard]] static absl::StatusOr<Arena> Attach(Segment segment);

  Arena() = default;
  Arena(Arena&&) noexcept = default;
  Arena& operator=(Arena&&) noexcept = default;

  // Returns the offset of `size` zeroed bytes aligned to `align` (a power of two <= 4096), or
  // RESOURCE_EXHAUSTED when no free block is large enough.
  [[nodiscard]] absl::StatusOr<uint64_t> Allocate(size_t size, size_t align = 16);
  // Returns a block to the arena: INVALID_ARGUMENT when `offset` is not a block Allocate
  // returned and nobody has freed since (a double free, or a header-like pair of words
  // written as data inside a block, is refused, not corrupting). Walks the free list up to
  // the block, and the allocated blocks between its free neighbours.
  [[nodiscard]] absl::Status Free(uint64_t offset);

  template <typename T>
  T* At(uint64_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(mapping_.data()) + offset);
  }
  void* base() const { return mapping_.data(); }
  const Segment& segment() const { return segment_; }

  // Bytes free in total, and the largest single free block (for tests and diagnostics). A
  // corrupt free list counts up to its first bad entry.
  size_t FreeBytes() const;
  size_t LargestFreeBlock() const;

 private:
  friend struct ArenaTesting;
  Arena(Segment s, Mapping m) : segment_(std::move(s)), mapping_(std::move(m)) {}
  // The bytes the arena may use: its header's count, but never past this process's mapping.
  uint64_t Total() const;
  Segment segment_;
  Mapping mapping_;
};

// For tests: kill this process (SIGKILL) at the `n`-th point inside the next Allocate or Free
// calls, counting two points per journaled word (once its old value is logged, once it is
// written); 0 turns it off. Lets a test kill a holder at every step of a change.
struct ArenaTesting {
  static void KillAtPoint(int n);
  // The free list as (offset, size) pairs, in order (up to its first implausible entry).
  static std::vector<std::pair<uint64_t, uint64_t>> FreeList(const Arena& a);
};

}  // namespace mproc

#endif  // MPROC_SHM_ARENA_H_
