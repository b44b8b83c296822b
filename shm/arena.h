// shm/arena.h — an offset allocator for placing objects in a shared segment.
//
// Everything inside a mapping is addressed by offset from the segment's start, never by a raw
// pointer (each process maps the segment at its own address). The arena keeps its state — a
// lock word and a free list sorted by offset — in the segment's first 64 bytes, so any process
// that maps the segment can allocate and free in it.
//
//   MPROC_ASSIGN_OR_RETURN(Arena arena, Arena::Create(1 << 20));
//   MPROC_ASSIGN_OR_RETURN(uint64_t off, arena.Allocate(sizeof(Node), alignof(Node)));
//   Node* n = arena.At<Node>(off);   // this process's address for that offset
//   arena.Free(off);
//
// Allocation is first-fit with splitting; Free coalesces with both neighbours, so freeing
// everything returns one block. Memory from Allocate is zero-filled (CPython's Array(code, n)
// is zero-filled even when it reuses freed memory, SHV-4).
//
// Thread- and process-safety: Allocate/Free are serialised by a futex lock in the segment.
// A process killed inside Allocate/Free leaves that lock held (the arena is then unusable);
// both run in microseconds and only when objects are created or destroyed.

#ifndef MPROC_SHM_ARENA_H_
#define MPROC_SHM_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>

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
  // Returns a block to the arena. Freeing an offset Allocate did not return is undefined.
  void Free(uint64_t offset);

  template <typename T>
  T* At(uint64_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(mapping_.data()) + offset);
  }
  void* base() const { return mapping_.data(); }
  const Segment& segment() const { return segment_; }

  // Bytes free in total, and the largest single free block (for tests and diagnostics).
  size_t FreeBytes() const;
  size_t LargestFreeBlock() const;

 private:
  Arena(Segment s, Mapping m) : segment_(std::move(s)), mapping_(std::move(m)) {}
  Segment segment_;
  Mapping mapping_;
};

}  // namespace mproc

#endif  // MPROC_SHM_ARENA_H_
