// sync/internal/shared_state.h — a State placed in a sealed memfd segment, shared by every
// copy of a handle (and by every process the handle reaches).
//
// Objects are carved out of shared arenas: 256 KiB sealed memfd chunks that many objects of
// one process share (an object bigger than a quarter of a chunk gets a region of its own), so
// the number of objects a process can hold is bounded by memory, not by descriptors (CPython's
// multiprocessing.heap does the same for its Values). A chunk is never reused slot by slot:
// objects are bump-allocated and the chunk goes, as a whole, when the last handle into it is
// dropped in every process. The kernel keeps a chunk alive while any process maps it, so an
// object lives as long as some handle to it does, in any process — no cross-process reference
// counting — at the price of a chunk kept by its longest-lived object.
//
// Handles into one chunk travel to another process as one descriptor plus offsets
// (EncodeBuffer::AttachSharedFd), and a process maps each chunk once however many handles
// into it arrive (a registry of mapped chunks by inode).
#ifndef MPROC_SYNC_INTERNAL_SHARED_STATE_H_
#define MPROC_SYNC_INTERNAL_SHARED_STATE_H_

#include <memory>
#include <new>
#include <string_view>
#include <type_traits>

#include "absl/status/statusor.h"
#include "serialize/codec.h"
#include "shm/segment.h"

namespace mproc::sync_internal {

struct Region {
  Segment segment;
  Mapping mapping;
};

// Creates a zeroed region of at least `size` bytes, of its own.
absl::StatusOr<std::shared_ptr<Region>> CreateRegion(size_t size, std::string_view name);

// `size` zeroed bytes, 64-byte aligned, in this process's current arena chunk (or a region of
// their own when big): the region to hold and the address of the bytes.
absl::StatusOr<std::pair<std::shared_ptr<Region>, char*>> AllocateShared(size_t size,
                                                                         std::string_view name);

// Arena chunks this process has mapped (made or received) and still uses.
size_t MappedChunksForTesting();

// Builds a T in shared memory; T must be a standard-layout type valid in shared memory.
template <typename T, typename... Args>
absl::StatusOr<std::pair<std::shared_ptr<Region>, T*>> CreateShared(std::string_view name,
                                                                   Args&&... args) {
  static_assert(std::is_standard_layout_v<T>, "shared state must be standard-layout");
  static_assert(alignof(T) <= 64, "shared state is placed at 64-byte alignment");
  auto r = AllocateShared(sizeof(T), name);
  if (!r.ok()) return r.status();
  T* obj = new (r->second) T(std::forward<Args>(args)...);
  return std::make_pair(std::move(r->first), obj);
}

// Codec support for handles (DESIGN.md, Handles): a handle travels as its region's descriptor
// (an fd attachment) and the offset of its state in the region. Decoding maps the region and
// checks that `need` bytes at the offset fit and are aligned to `align`. An empty handle
// (default-constructed) travels as a single 0 byte and decodes to an empty handle.
void EncodeRegionRef(EncodeBuffer& b, const std::shared_ptr<Region>& region, const void* state);
bool DecodeRegionRef(DecodeReader& r, size_t need, size_t align, std::shared_ptr<Region>* region,
                     char** state);

template <typename H>
struct ValueCodec;  // sync/value.h

// The codec of a handle that is a region plus one State* (`region_` and `s_` members, and a
// (region, state) constructor); the handle befriends it.
template <typename Handle, typename State>
struct SimpleHandleCodec {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const Handle& h) { EncodeRegionRef(b, h.region_, h.s_); }
  static bool Decode(DecodeReader& r, Handle& out) {
    std::shared_ptr<Region> region;
    char* state = nullptr;
    if (!DecodeRegionRef(r, sizeof(State), alignof(State), &region, &state)) return false;
    out = region ? Handle(std::move(region), reinterpret_cast<State*>(state)) : Handle();
    return true;
  }
};

}  // namespace mproc::sync_internal

#endif  // MPROC_SYNC_INTERNAL_SHARED_STATE_H_
